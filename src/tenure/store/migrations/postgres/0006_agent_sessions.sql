-- Which server holds how many of an agent's open MCP sessions. An agent's
-- open_sessions is the sum of its rows. A running server holds an advisory
-- lock keyed by its server_id (tenure.store.postgres_presence); rows of a
-- server whose lock is gone (it crashed, or stopped without closing its
-- sessions) are counted out by the others, marking nothing suspect.
CREATE TABLE agent_sessions (
    board_id  text NOT NULL,
    agent_id  text NOT NULL,
    server_id integer NOT NULL,
    sessions  integer NOT NULL CHECK (sessions > 0),
    PRIMARY KEY (board_id, agent_id, server_id),
    FOREIGN KEY (board_id, agent_id) REFERENCES agents (board_id, id) ON DELETE CASCADE
);
CREATE INDEX agent_sessions_by_server ON agent_sessions (server_id);
-- Counts kept before this table cannot say whose sessions they were, and
-- would never come down: they start over.
UPDATE agents SET open_sessions = 0;
