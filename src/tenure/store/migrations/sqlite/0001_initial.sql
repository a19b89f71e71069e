-- Tenure's first SQLite schema: boards, agents, tasks, leases, the event log,
-- comments, counters, the hook outbox and meta.
--
-- Times are ISO-8601 text in UTC with microseconds and a fixed "+00:00"
-- suffix (see tenure.store.rows.encode_time): fixed width, so text order is
-- time order and the indexes on times work. Tuples, flags, the handoff and
-- the progress stamps are JSON text. Tables keyed by (board_id, id) are
-- WITHOUT ROWID: the primary key is the table, one lookup per read.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE boards (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    project_root       TEXT,
    enrolment_key_hash TEXT UNIQUE,
    viewer_token_hash  TEXT,
    created_at         TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX boards_viewer_token ON boards (viewer_token_hash)
    WHERE viewer_token_hash IS NOT NULL;

CREATE TABLE agents (
    board_id      TEXT NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL DEFAULT '',
    skills        TEXT NOT NULL DEFAULT '[]',
    worktree      TEXT,
    revoked       INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    open_sessions INTEGER NOT NULL DEFAULT 0,
    last_seen_at  TEXT,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (board_id, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE tasks (
    board_id        TEXT NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    title           TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL DEFAULT 'todo'
                    CHECK (status IN ('todo', 'in_progress', 'blocked', 'done')),
    priority        TEXT NOT NULL DEFAULT 'medium'
                    CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    labels          TEXT NOT NULL DEFAULT '[]',
    required_skills TEXT NOT NULL DEFAULT '[]',
    estimated_hours REAL,
    dependencies    TEXT NOT NULL DEFAULT '[]',
    assignee        TEXT,
    epoch           INTEGER NOT NULL DEFAULT 0,
    handoff         TEXT,
    recovery_count  INTEGER NOT NULL DEFAULT 0,
    flags           TEXT NOT NULL DEFAULT '[]',
    blocked_reason  TEXT,
    completed_at    TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (board_id, id)
) STRICT, WITHOUT ROWID;

-- Claim order (SPEC, Claiming): recovered tasks first, then priority, then
-- oldest. The expressions here are repeated verbatim by the claim query so
-- SQLite walks this index instead of sorting every todo task.
CREATE INDEX tasks_claim_order ON tasks (
    board_id,
    (CASE WHEN recovery_count > 0 AND handoff IS NOT NULL THEN 0 ELSE 1 END),
    (CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END),
    created_at,
    id
) WHERE status = 'todo';

CREATE INDEX tasks_by_status ON tasks (board_id, status, created_at);

CREATE TABLE leases (
    board_id                  TEXT NOT NULL,
    task_id                   TEXT NOT NULL,
    epoch                     INTEGER NOT NULL,
    agent_id                  TEXT NOT NULL,
    version                   INTEGER NOT NULL,
    assigned_at               TEXT NOT NULL,
    expires_at                TEXT NOT NULL,
    grace_s                   REAL NOT NULL,
    recover_after             TEXT NOT NULL,
    last_renewed_at           TEXT NOT NULL,
    last_signal_at            TEXT NOT NULL,
    renewal_count             INTEGER NOT NULL DEFAULT 0,
    progress                  INTEGER NOT NULL DEFAULT 0,
    message                   TEXT NOT NULL DEFAULT '',
    progress_stamps           TEXT NOT NULL DEFAULT '[]',
    conflict_extensions       INTEGER NOT NULL DEFAULT 0,
    flags                     TEXT NOT NULL DEFAULT '[]',
    branch                    TEXT,
    head_sha                  TEXT,
    suspect_since             TEXT,
    progress_changed_at       TEXT,
    renewals_without_progress INTEGER NOT NULL DEFAULT 0,
    max_progress              INTEGER NOT NULL DEFAULT 0,
    ended_at                  TEXT,
    end_reason                TEXT,
    PRIMARY KEY (board_id, task_id, epoch),
    FOREIGN KEY (board_id, task_id) REFERENCES tasks (board_id, id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- One live lease per task: the database itself refuses a second.
CREATE UNIQUE INDEX leases_one_live_per_task ON leases (board_id, task_id)
    WHERE ended_at IS NULL;
-- The monitor's query: what is due costs what is due, not what is live.
CREATE INDEX leases_live_by_recover_after ON leases (recover_after)
    WHERE ended_at IS NULL;
CREATE INDEX leases_live_by_agent ON leases (board_id, agent_id)
    WHERE ended_at IS NULL;
-- "You lost a lease" notices: an agent's leases ended since it last called.
CREATE INDEX leases_ended_by_agent ON leases (board_id, agent_id, ended_at)
    WHERE ended_at IS NOT NULL;

CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    type     TEXT NOT NULL,
    board_id TEXT NOT NULL,
    task_id  TEXT,
    agent_id TEXT,
    epoch    INTEGER,
    at       TEXT NOT NULL,
    data     TEXT NOT NULL DEFAULT '{}'
) STRICT;

CREATE INDEX events_by_board ON events (board_id, id);
CREATE INDEX events_by_task ON events (task_id, id) WHERE task_id IS NOT NULL;
CREATE INDEX events_by_agent ON events (agent_id, id) WHERE agent_id IS NOT NULL;
CREATE INDEX events_by_at ON events (at);

CREATE TABLE comments (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    board_id TEXT NOT NULL,
    task_id  TEXT NOT NULL,
    at       TEXT NOT NULL,
    author   TEXT NOT NULL,
    body     TEXT NOT NULL,
    FOREIGN KEY (board_id, task_id) REFERENCES tasks (board_id, id) ON DELETE CASCADE
) STRICT;

CREATE INDEX comments_by_task ON comments (board_id, task_id, id);

CREATE TABLE counters (
    board_id TEXT NOT NULL,
    name     TEXT NOT NULL,
    value    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (board_id, name)
) STRICT, WITHOUT ROWID;

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,
    board_id        TEXT NOT NULL,
    payload         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    delivered_at    TEXT,
    last_error      TEXT
) STRICT;

CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
