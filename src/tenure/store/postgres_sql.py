"""The SQL text of PostgreSQL's store: column lists and the statements of
`PostgresTx` that are built once, at import, from `tenure.store.rows`."""

from __future__ import annotations

from collections.abc import Sequence

from tenure.store import rows

BOARDS = rows.columns(rows.BOARD_COLUMNS)
AGENTS = rows.columns(rows.AGENT_COLUMNS)
TASKS = rows.columns(rows.TASK_COLUMNS)
LEASES = rows.columns(rows.LEASE_COLUMNS)


def marks(count: int) -> str:
    return rows.placeholders(count, "%s")


def assignments(names: Sequence[str]) -> str:
    return ", ".join(f"{name} = %s" for name in names)


# The claim order of migrations/postgres/0001_initial.sql's tasks_claim_order
# index, repeated verbatim so the planner can walk that index.
CLAIM_ORDER = (
    "(CASE WHEN recovery_count > 0 AND handoff IS NOT NULL THEN 0 ELSE 1 END), "
    "(CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END), "
    "created_at, id"
)

SQL_INSERT_BOARD = (
    f"INSERT INTO boards ({BOARDS}) VALUES ({marks(len(rows.BOARD_COLUMNS))}) "
    "ON CONFLICT DO NOTHING"
)
SQL_UPDATE_BOARD = f"UPDATE boards SET {assignments(rows.BOARD_COLUMNS[1:])} WHERE id = %s"
SQL_INSERT_AGENT = (
    f"INSERT INTO agents ({AGENTS}) SELECT {marks(len(rows.AGENT_COLUMNS))} "
    "WHERE EXISTS (SELECT 1 FROM boards WHERE id = %s) ON CONFLICT DO NOTHING"
)
SQL_UPDATE_AGENT = (
    f"UPDATE agents SET {assignments(rows.AGENT_UPDATED)} WHERE board_id = %s AND id = %s"
)
SQL_INSERT_TASK = (
    f"INSERT INTO tasks ({TASKS}) SELECT {marks(len(rows.TASK_COLUMNS))} "
    "WHERE EXISTS (SELECT 1 FROM boards WHERE id = %s) ON CONFLICT DO NOTHING"
)
SQL_UPDATE_TASK = (
    f"UPDATE tasks SET {assignments(rows.TASK_COLUMNS[2:])} WHERE board_id = %s AND id = %s"
)
SQL_INSERT_LEASE = (
    f"INSERT INTO leases ({LEASES}) SELECT {marks(len(rows.LEASE_COLUMNS))} "
    "WHERE EXISTS (SELECT 1 FROM tasks WHERE board_id = %s AND id = %s) "
    "ON CONFLICT DO NOTHING"
)
LEASE_KEYS = len(rows.LEASE_KEY_COLUMNS)
SQL_UPDATE_LEASE = (
    f"UPDATE leases SET {assignments(rows.LEASE_COLUMNS[LEASE_KEYS:])} "
    "WHERE board_id = %s AND task_id = %s AND epoch = %s AND version = %s"
)
# A write that must change exactly one row, checked on the server (0005).
SQL_EXPECT_ONE = (
    "WITH changed AS ({write} RETURNING 1) SELECT tenure_expect_one(count(*), %s, %s) FROM changed"
)
SQL_CLAIM = (
    f"SELECT {TASKS} FROM tasks WHERE board_id = %s AND status = 'todo' "
    f"ORDER BY {CLAIM_ORDER} LIMIT %s FOR UPDATE SKIP LOCKED"
)

# An agent and its leases (live, and ended since its last call), in ONE
# statement so both come from one snapshot: the agent's row, then one row per
# lease (its columns after the agent's; NULL when it holds none). Sent with
# BEGIN when a unit names its agent (`tenure.store.base.Reads`), in its
# pipeline: a call's two reads cost no round trip.
_ENDED_SINCE = "coalesce(a.last_seen_at, a.created_at)"
_AGENT_COLUMNS = ", ".join(f"a.{name}" for name in rows.AGENT_COLUMNS)
_LEASE_COLUMNS = ", ".join(f"l.{name}" for name in rows.LEASE_COLUMNS)
SQL_AGENT_AND_LEASES = (
    f"SELECT {_AGENT_COLUMNS}, {_LEASE_COLUMNS} FROM agents AS a LEFT JOIN LATERAL ("
    f"SELECT 0 AS part, assigned_at AS at, {LEASES} FROM leases "
    "WHERE board_id = a.board_id AND agent_id = a.id AND ended_at IS NULL "
    f"UNION ALL SELECT 1, ended_at, {LEASES} FROM leases "
    f"WHERE board_id = a.board_id AND agent_id = a.id AND ended_at >= {_ENDED_SINCE}"
    ") AS l ON true WHERE a.board_id = %s AND a.id = %s ORDER BY l.part, l.at, l.task_id"
)

# What an agent's call reads after its agent and leases, sent with BEGIN like
# them (`tenure.store.base.Reads`): the task it acts on, locked; or, for a
# claim, the first candidate in claim order, locked, read only while the
# agent holds fewer live leases than the third value. An empty answer is
# therefore no proof that nothing is waiting; the claim then reads again.
SQL_TASK_LOCKED = f"SELECT {TASKS} FROM tasks WHERE board_id = %s AND id = %s FOR UPDATE"
SQL_FIRST_CANDIDATE = (
    f"SELECT {TASKS} FROM tasks WHERE board_id = %s AND status = 'todo' AND %s::bigint > ("
    "SELECT count(*) FROM leases WHERE board_id = %s AND agent_id = %s AND ended_at IS NULL"
    f") ORDER BY {CLAIM_ORDER} LIMIT 1 FOR UPDATE SKIP LOCKED"
)
