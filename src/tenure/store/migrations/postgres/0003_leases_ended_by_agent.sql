-- "You lost a lease" notices read an agent's leases ended since it last
-- called, on every call of every agent. Without this index PostgreSQL found
-- them by scanning every lease of the board (live and ended), a cost that
-- grew with the fleet; SQLite has had the same index since its first schema.
CREATE INDEX leases_ended_by_agent ON leases (board_id, agent_id, ended_at)
    WHERE ended_at IS NOT NULL;
