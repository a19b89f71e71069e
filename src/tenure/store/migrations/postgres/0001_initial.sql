-- Tenure's first PostgreSQL schema: the same tables, columns and indexes as
-- migrations/sqlite/0001_initial.sql, in PostgreSQL's own types.
--
-- Times are timestamptz (the store hands aware UTC datetimes to the driver).
-- Tuples, flags, the handoff, the progress stamps, event data and hook
-- payloads are jsonb: tenure.store.rows writes JSON text, which PostgreSQL
-- parses on the way in, and the driver decodes jsonb on the way out.
--
-- Two deliberate differences from SQLite, both for several writers at once:
-- * counters have a `shard` column in their key: each pooled connection bumps
--   its own row, so concurrent renewals on one board never queue on one hot
--   counter row; reads add the shards up.
-- * event ids come from an identity column; the store appends events under a
--   transaction-scoped advisory lock so ids become visible in commit order,
--   and a follower reading "id > last seen" never skips a late-committing
--   lower id (see tenure.store.postgres).

CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE boards (
    id                 text PRIMARY KEY,
    name               text NOT NULL,
    project_root       text,
    enrolment_key_hash text UNIQUE,
    viewer_token_hash  text,
    created_at         timestamptz NOT NULL
);

CREATE INDEX boards_viewer_token ON boards (viewer_token_hash)
    WHERE viewer_token_hash IS NOT NULL;

CREATE TABLE agents (
    board_id      text NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    id            text NOT NULL,
    name          text NOT NULL,
    token_hash    text NOT NULL UNIQUE,
    role          text NOT NULL DEFAULT '',
    skills        jsonb NOT NULL DEFAULT '[]',
    worktree      text,
    revoked       integer NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    open_sessions integer NOT NULL DEFAULT 0,
    last_seen_at  timestamptz,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (board_id, id)
);

CREATE TABLE tasks (
    board_id        text NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    id              text NOT NULL,
    title           text NOT NULL,
    description     text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'todo'
                    CHECK (status IN ('todo', 'in_progress', 'blocked', 'done')),
    priority        text NOT NULL DEFAULT 'medium'
                    CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    labels          jsonb NOT NULL DEFAULT '[]',
    required_skills jsonb NOT NULL DEFAULT '[]',
    estimated_hours double precision,
    dependencies    jsonb NOT NULL DEFAULT '[]',
    assignee        text,
    epoch           integer NOT NULL DEFAULT 0,
    handoff         jsonb,
    recovery_count  integer NOT NULL DEFAULT 0,
    flags           jsonb NOT NULL DEFAULT '[]',
    blocked_reason  text,
    completed_at    timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (board_id, id)
);

-- Claim order (SPEC, Claiming): recovered tasks first, then priority, then
-- oldest. The claim query repeats these expressions verbatim so the planner
-- walks this index instead of sorting every todo task.
CREATE INDEX tasks_claim_order ON tasks (
    board_id,
    (CASE WHEN recovery_count > 0 AND handoff IS NOT NULL THEN 0 ELSE 1 END),
    (CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END),
    created_at,
    id
) WHERE status = 'todo';

CREATE INDEX tasks_by_status ON tasks (board_id, status, created_at);

CREATE TABLE leases (
    board_id                  text NOT NULL,
    task_id                   text NOT NULL,
    epoch                     integer NOT NULL,
    agent_id                  text NOT NULL,
    version                   integer NOT NULL,
    assigned_at               timestamptz NOT NULL,
    expires_at                timestamptz NOT NULL,
    grace_s                   double precision NOT NULL,
    recover_after             timestamptz NOT NULL,
    last_renewed_at           timestamptz NOT NULL,
    last_signal_at            timestamptz NOT NULL,
    renewal_count             integer NOT NULL DEFAULT 0,
    progress                  integer NOT NULL DEFAULT 0,
    message                   text NOT NULL DEFAULT '',
    progress_stamps           jsonb NOT NULL DEFAULT '[]',
    conflict_extensions       integer NOT NULL DEFAULT 0,
    flags                     jsonb NOT NULL DEFAULT '[]',
    branch                    text,
    head_sha                  text,
    suspect_since             timestamptz,
    progress_changed_at       timestamptz,
    renewals_without_progress integer NOT NULL DEFAULT 0,
    max_progress              integer NOT NULL DEFAULT 0,
    ended_at                  timestamptz,
    end_reason                text,
    PRIMARY KEY (board_id, task_id, epoch),
    FOREIGN KEY (board_id, task_id) REFERENCES tasks (board_id, id) ON DELETE CASCADE
);

-- One live lease per task: the database itself refuses a second.
CREATE UNIQUE INDEX leases_one_live_per_task ON leases (board_id, task_id)
    WHERE ended_at IS NULL;
-- The monitor's query: what is due costs what is due, not what is live.
CREATE INDEX leases_live_by_recover_after ON leases (recover_after)
    WHERE ended_at IS NULL;
CREATE INDEX leases_live_by_agent ON leases (board_id, agent_id)
    WHERE ended_at IS NULL;

CREATE TABLE events (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type     text NOT NULL,
    board_id text NOT NULL,
    task_id  text,
    agent_id text,
    epoch    integer,
    at       timestamptz NOT NULL,
    data     jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX events_by_board ON events (board_id, id);
CREATE INDEX events_by_task ON events (task_id, id) WHERE task_id IS NOT NULL;
CREATE INDEX events_by_agent ON events (agent_id, id) WHERE agent_id IS NOT NULL;
CREATE INDEX events_by_at ON events (at);

CREATE TABLE comments (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    board_id text NOT NULL,
    task_id  text NOT NULL,
    at       timestamptz NOT NULL,
    author   text NOT NULL,
    body     text NOT NULL,
    FOREIGN KEY (board_id, task_id) REFERENCES tasks (board_id, id) ON DELETE CASCADE
);

CREATE INDEX comments_by_task ON comments (board_id, task_id, id);

CREATE TABLE counters (
    board_id text NOT NULL,
    name     text NOT NULL,
    shard    smallint NOT NULL DEFAULT 0,
    value    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (board_id, name, shard)
);

CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL,
    board_id        text NOT NULL,
    payload         jsonb NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    delivered_at    timestamptz,
    last_error      text
);

CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
