-- Which server holds how many of an agent's open MCP sessions. An agent's
-- open_sessions is the sum of its rows; a server that stops without closing
-- its sessions (a crash) leaves rows another server can find and count
-- out. One server owns a SQLite file, so here the rows are
-- the running server's own, and those of earlier runs are forgotten at start.
CREATE TABLE agent_sessions (
    board_id  TEXT NOT NULL,
    agent_id  TEXT NOT NULL,
    server_id INTEGER NOT NULL,
    sessions  INTEGER NOT NULL CHECK (sessions > 0),
    PRIMARY KEY (board_id, agent_id, server_id),
    FOREIGN KEY (board_id, agent_id) REFERENCES agents (board_id, id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
CREATE INDEX agent_sessions_by_server ON agent_sessions (server_id);
-- Counts kept before this table cannot say whose sessions they were, and
-- would never come down: they start over.
UPDATE agents SET open_sessions = 0;
