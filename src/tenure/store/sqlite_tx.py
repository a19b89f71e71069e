"""SQLite's `Tx`: every store operation as one cached SQL statement.

`SqliteTx` wraps a connection that `SqliteStore` has already put inside a
transaction, with the transaction's `now`. Each method runs one statement
(the sqlite3 module caches it prepared, keyed by its text, so the SQL lives
in module constants) and turns driver errors into Tenure's
(`tenure.store.sqlite_errors`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tenure.core.errors import NotFound
from tenure.core.model import Agent, Board, Comment, Event, Lease, Task, TaskStatus
from tenure.core.stats import LeaseSummary
from tenure.store.base import ClaimFilter, OutboxRow
from tenure.store.lease_summary import summary_of, summary_params, summary_sql
from tenure.store.memo import Memo, lease_round_trips
from tenure.store.rows import (
    AGENT_COLUMNS,
    AGENT_UPDATED,
    BOARD_COLUMNS,
    COMMENT_COLUMNS,
    LEASE_COLUMNS,
    OUTBOX_COLUMNS,
    TASK_COLUMNS,
    agent_from_row,
    agent_to_row,
    agent_update_values,
    board_from_row,
    board_to_row,
    columns,
    comment_from_row,
    dump_json,
    dump_strings,
    encode_time,
    lease_from_row,
    lease_to_row,
    load_strings,
    outbox_from_row,
    placeholders,
    task_from_row,
    task_to_row,
)
from tenure.store.session_rows import SessionRows
from tenure.store.sqlite_errors import translate_error
from tenure.store.sqlite_upkeep import SqliteUpkeep

# SQL -------------------------------------------------------------------------------

_BOARD_SELECT = f"SELECT {columns(BOARD_COLUMNS)} FROM boards"
_BOARD_INSERT = (
    f"INSERT INTO boards ({columns(BOARD_COLUMNS)}) VALUES ({placeholders(len(BOARD_COLUMNS))})"
)
_BOARD_UPDATE = (
    "UPDATE boards SET " + ", ".join(f"{name} = ?" for name in BOARD_COLUMNS[1:]) + " WHERE id = ?"
)

_AGENT_SELECT = f"SELECT {columns(AGENT_COLUMNS)} FROM agents"
_AGENT_INSERT = (
    f"INSERT INTO agents ({columns(AGENT_COLUMNS)}) VALUES ({placeholders(len(AGENT_COLUMNS))})"
)
_AGENT_UPDATE = (
    "UPDATE agents SET "
    + ", ".join(f"{name} = ?" for name in AGENT_UPDATED)
    + " WHERE board_id = ? AND id = ?"
)

_TASK_SELECT = f"SELECT {columns(TASK_COLUMNS)} FROM tasks"
_TASK_INSERT = (
    f"INSERT INTO tasks ({columns(TASK_COLUMNS)}) VALUES ({placeholders(len(TASK_COLUMNS))})"
)
_TASK_UPDATE = (
    "UPDATE tasks SET "
    + ", ".join(f"{name} = ?" for name in TASK_COLUMNS[2:])
    + " WHERE board_id = ? AND id = ?"
)
# The ORDER BY repeats the expressions of the index tasks_claim_order verbatim,
# and the index is named: statistics taken while a board had no todo task
# (PRAGMA optimize at close) made SQLite sort every todo task by tasks_by_status
# at each claim instead, a cost that grew with the backlog (claims 3-5x slower
# on a board analysed with 10 tasks in progress that then got 2,000 todo).
_CLAIM_CANDIDATES = (
    f"{_TASK_SELECT} INDEXED BY tasks_claim_order WHERE board_id = ? AND status = 'todo' "
    "ORDER BY "
    "(CASE WHEN recovery_count > 0 AND handoff IS NOT NULL THEN 0 ELSE 1 END), "
    "(CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END), "
    "created_at, id LIMIT ?"
)

_LEASE_SELECT = f"SELECT {columns(LEASE_COLUMNS)} FROM leases"
#: Live leases through their index, never a scan of the whole lease history.
_LIVE_INDEX = "INDEXED BY leases_one_live_per_task "
_LEASE_INSERT = (
    f"INSERT INTO leases ({columns(LEASE_COLUMNS)}) VALUES ({placeholders(len(LEASE_COLUMNS))})"
)
# Binds lease_to_row(lease)[3:] + key + (expected_version,).
_LEASE_UPDATE = (
    "UPDATE leases SET "
    + ", ".join(f"{name} = ?" for name in LEASE_COLUMNS[3:])
    + " WHERE board_id = ? AND task_id = ? AND epoch = ? AND version = ?"
)
# A live lease written as still live (a renewal, a touch, a revival...)
# nearly always keeps its holder, its start and its missing end. Leaving those
# columns out of SET spares SQLite the upkeep of the indexes built on them
# (one live per task, live by agent, ended by agent), so such a write changes
# the lease row and the recover-after index only. The WHERE checks that they
# are indeed unchanged; when it matches nothing, the full UPDATE runs, so the
# outcome is always that of the full UPDATE.
_LEASE_FIXED_WHILE_LIVE = frozenset({"agent_id", "assigned_at", "ended_at", "end_reason"})
_LEASE_LIVE_POSITIONS = tuple(
    n for n, name in enumerate(LEASE_COLUMNS) if n >= 3 and name not in _LEASE_FIXED_WHILE_LIVE
)
_ASSIGNED_AT = LEASE_COLUMNS.index("assigned_at")
_LEASE_UPDATE_LIVE = (
    "UPDATE leases SET "
    + ", ".join(f"{LEASE_COLUMNS[n]} = ?" for n in _LEASE_LIVE_POSITIONS)
    + " WHERE board_id = ? AND task_id = ? AND epoch = ? AND version = ?"
    " AND agent_id = ? AND assigned_at = ? AND ended_at IS NULL"
)

# The statements of every agent call, written once: built inside the call,
# each would be a new string, formatted and hashed again to find its
# prepared statement in the connection's cache.
_AGENT_BY_KEY = f"{_AGENT_SELECT} WHERE board_id = ? AND id = ?"
_TASK_BY_KEY = f"{_TASK_SELECT} WHERE board_id = ? AND id = ?"
_LEASES_OF_AGENT = (
    f"SELECT * FROM ({_LEASE_SELECT} INDEXED BY leases_live_by_agent "
    "WHERE board_id = ? AND agent_id = ? AND ended_at IS NULL "
    "ORDER BY assigned_at, task_id) UNION ALL "
    f"SELECT * FROM ({_LEASE_SELECT} INDEXED BY leases_ended_by_agent "
    "WHERE board_id = ? AND agent_id = ? AND ended_at >= ? ORDER BY ended_at, task_id)"
)

_COMMENT_SELECT = f"SELECT {columns(COMMENT_COLUMNS)} FROM comments"
_OUTBOX_SELECT = f"SELECT {columns(OUTBOX_COLUMNS)} FROM outbox"


# Some queries name their index (INDEXED BY): without statistics SQLite may
# prefer a primary-key prefix that scans every lease of a board, a cost that
# grows with the live leases; naming the partial index keeps each of these
# queries proportional to what it returns (and fails loudly if it is dropped).


#: Leases and tasks decoded from rows, kept by the row (see `tenure.store.memo`).
_LEASES: Memo[tuple[Any, ...], Lease] = Memo(lease_from_row)
_TASKS: Memo[tuple[Any, ...], Task] = Memo(task_from_row)


def _remember(row: tuple[Any, ...], lease: Lease) -> None:
    """Keep a just-written lease as what its row decodes to, when it would."""
    if lease_round_trips(lease):
        _LEASES.remember(row, lease)


class SqliteTx(SqliteUpkeep, SessionRows):
    """One open SQLite transaction (see `tenure.store.base.Tx`)."""

    __slots__ = ("_now", "conn", "last_event_id")
    _MARK = "?"

    def __init__(self, conn: sqlite3.Connection, now: datetime) -> None:
        self.conn = conn
        self._now = now
        #: The id of the last event this transaction appended (0: none).
        self.last_event_id = 0

    @property
    def now(self) -> datetime:
        """The transaction's one moment, read once when it began."""
        return self._now

    def _exec(
        self, sql: str, params: Sequence[Any] = (), what: str | None = None
    ) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise translate_error(exc, what) from exc

    def _one(self, sql: str, params: Sequence[Any]) -> Any:
        return self._exec(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._exec(sql, params).fetchall()

    # boards -----------------------------------------------------------------

    def insert_board(self, board: Board) -> None:
        self._exec(_BOARD_INSERT, board_to_row(board), f"board {board.id!r}")

    def get_board(self, board_id: str) -> Board | None:
        row = self._one(f"{_BOARD_SELECT} WHERE id = ?", (board_id,))
        return None if row is None else board_from_row(row)

    def list_boards(self) -> list[Board]:
        return [board_from_row(row) for row in self._all(f"{_BOARD_SELECT} ORDER BY id")]

    def update_board(self, board: Board) -> None:
        row = board_to_row(board)
        cursor = self._exec(_BOARD_UPDATE, (*row[1:], row[0]), f"board {board.id!r}")
        _require_row(cursor, f"board {board.id!r}")

    def board_by_key_hash(self, key_hash: str) -> Board | None:
        row = self._one(
            f"{_BOARD_SELECT} WHERE enrolment_key_hash = ? "
            "UNION ALL "
            f"{_BOARD_SELECT} WHERE viewer_token_hash = ? LIMIT 1",
            (key_hash, key_hash),
        )
        return None if row is None else board_from_row(row)

    # agents -----------------------------------------------------------------

    def insert_agent(self, agent: Agent) -> None:
        what = f"agent {agent.id!r} of board {agent.board_id!r}"
        self._exec(_AGENT_INSERT, agent_to_row(agent), what)

    def update_agent(self, agent: Agent) -> None:
        what = f"agent {agent.id!r} of board {agent.board_id!r}"
        row = agent_to_row(agent)
        cursor = self._exec(_AGENT_UPDATE, (*agent_update_values(row), row[0], row[1]), what)
        _require_row(cursor, what)

    def mark_seen(self, board_id: str, agent_id: str, at: datetime) -> None:
        self._exec(
            "UPDATE agents SET last_seen_at = ? WHERE board_id = ? AND id = ?",
            (encode_time(at), board_id, agent_id),
            f"agent {agent_id!r} of board {board_id!r}",
        )

    def get_agent(self, board_id: str, agent_id: str) -> Agent | None:
        row = self._one(_AGENT_BY_KEY, (board_id, agent_id))
        return None if row is None else agent_from_row(row)

    def agent_by_token_hash(self, token_hash: str) -> Agent | None:
        row = self._one(f"{_AGENT_SELECT} WHERE token_hash = ?", (token_hash,))
        return None if row is None else agent_from_row(row)

    def list_agents(self, board_id: str) -> list[Agent]:
        rows = self._all(f"{_AGENT_SELECT} WHERE board_id = ? ORDER BY id", (board_id,))
        return [agent_from_row(row) for row in rows]

    def delete_agent(self, board_id: str, agent_id: str) -> bool:
        cursor = self._exec(
            "DELETE FROM agents WHERE board_id = ? AND id = ?", (board_id, agent_id)
        )
        return cursor.rowcount > 0

    # tasks ----------------------------------------------------------------------

    def insert_task(self, task: Task) -> None:
        what = f"task {task.id!r} of board {task.board_id!r}"
        self._exec(_TASK_INSERT, task_to_row(task), what)

    def update_task(self, task: Task) -> None:
        what = f"task {task.id!r} of board {task.board_id!r}"
        row = task_to_row(task)
        cursor = self._exec(_TASK_UPDATE, (*row[2:], row[0], row[1]), what)
        _require_row(cursor, what)

    def get_task(self, board_id: str, task_id: str, *, for_update: bool = False) -> Task | None:
        # for_update needs nothing here: BEGIN IMMEDIATE already holds the write lock.
        row = self._one(_TASK_BY_KEY, (board_id, task_id))
        return None if row is None else _TASKS.of(row)

    def lock_tasks(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Task]:
        # One indexed lookup each: statements cost no round trip here, and the
        # write lock is held already.
        found = {key: self.get_task(*key) for key in keys}
        return {key: task for key, task in found.items() if task is not None}

    def list_tasks(
        self,
        board_id: str,
        status: TaskStatus | None = None,
        limit: int | None = None,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[Task]:
        sql = f"{_TASK_SELECT} WHERE board_id = ?"
        params: list[Any] = [board_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(str(status))
        if after is not None:
            sql += " AND (created_at, id) > (?, ?)"
            params += [encode_time(after[0]), after[1]]
        sql += " ORDER BY created_at, id LIMIT ?"
        params.append(-1 if limit is None else limit)
        return [_TASKS.of(row) for row in self._all(sql, params)]

    def recently_done(self, board_id: str, limit: int) -> list[Task]:
        rows = self._all(
            f"{_TASK_SELECT} WHERE board_id = ? AND status = 'done' "
            "ORDER BY completed_at DESC, id DESC LIMIT ?",
            (board_id, limit),
        )
        return [_TASKS.of(row) for row in rows]

    def task_counts(self, board_id: str) -> dict[TaskStatus, int]:
        rows = self._all(
            "SELECT status, count(*) FROM tasks WHERE board_id = ? GROUP BY status", (board_id,)
        )
        return {TaskStatus(status): count for status, count in rows}

    def delete_task(self, board_id: str, task_id: str) -> bool:
        cursor = self._exec("DELETE FROM tasks WHERE board_id = ? AND id = ?", (board_id, task_id))
        return cursor.rowcount > 0

    def claim_candidates(self, flt: ClaimFilter) -> list[Task]:
        # Skills are judged by the caller (the store does not pre-filter on SQLite).
        rows = self._all(_CLAIM_CANDIDATES, (flt.board_id, flt.limit))
        return [_TASKS.of(row) for row in rows]

    def task_statuses(self, board_id: str, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        if not task_ids:
            return {}
        rows = self._all(
            "SELECT id, status FROM tasks WHERE board_id = ? "
            "AND id IN (SELECT value FROM json_each(?))",
            (board_id, dump_strings(task_ids)),
        )
        return {row[0]: TaskStatus(row[1]) for row in rows}

    # leases -------------------------------------------------------------------

    def insert_lease(self, lease: Lease) -> None:
        what = f"lease of task {lease.task_id!r} (epoch {lease.epoch})"
        row = lease_to_row(lease)
        self._exec(_LEASE_INSERT, row, what)
        _remember(row, lease)

    def write_together(self) -> None:
        """Nothing to do: a statement here is a call, not a round trip."""

    def update_lease(self, lease: Lease, expected_version: int) -> bool:
        row = lease_to_row(lease)
        what = f"lease of task {lease.task_id!r} (epoch {lease.epoch})"
        if lease.ended_at is None:
            values = [row[n] for n in _LEASE_LIVE_POSITIONS]
            fixed = (lease.agent_id, row[_ASSIGNED_AT])
            key = (*row[:3], expected_version)
            cursor = self._exec(_LEASE_UPDATE_LIVE, (*values, *key, *fixed), what)
            if cursor.rowcount == 1:
                # The columns left out of SET matched `fixed` and a live end:
                # the stored row is now `row`, column for column.
                _remember(row, lease)
                return True
        cursor = self._exec(_LEASE_UPDATE, (*row[3:], *row[:3], expected_version), what)
        if cursor.rowcount != 1:
            return False
        _remember(row, lease)
        return True

    def live_lease(self, board_id: str, task_id: str) -> Lease | None:
        row = self._one(
            f"{_LEASE_SELECT} WHERE board_id = ? AND task_id = ? AND ended_at IS NULL",
            (board_id, task_id),
        )
        return None if row is None else _LEASES.of(row)

    def last_lease_of(self, board_id: str, task_id: str, agent_id: str) -> Lease | None:
        row = self._one(
            f"{_LEASE_SELECT} WHERE board_id = ? AND task_id = ? AND agent_id = ? "
            "ORDER BY epoch DESC LIMIT 1",
            (board_id, task_id, agent_id),
        )
        return None if row is None else _LEASES.of(row)

    def live_leases_of_agent(self, board_id: str, agent_id: str) -> list[Lease]:
        rows = self._all(
            f"{_LEASE_SELECT} INDEXED BY leases_live_by_agent "
            "WHERE board_id = ? AND agent_id = ? AND ended_at IS NULL "
            "ORDER BY assigned_at, task_id",
            (board_id, agent_id),
        )
        return [_LEASES.of(row) for row in rows]

    def live_leases_of_tasks(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Lease]:
        found = {key: self.live_lease(*key) for key in keys}
        return {key: lease for key, lease in found.items() if lease is not None}

    def live_leases(self, board_id: str | None = None) -> list[Lease]:
        if board_id is None:
            rows = self._all(
                f"{_LEASE_SELECT} {_LIVE_INDEX}WHERE ended_at IS NULL ORDER BY board_id, task_id"
            )
        else:
            rows = self._all(
                f"{_LEASE_SELECT} {_LIVE_INDEX}WHERE board_id = ? AND ended_at IS NULL "
                "ORDER BY task_id",
                (board_id,),
            )
        return [_LEASES.of(row) for row in rows]

    def lease_summary(self, board_id: str | None, now: datetime, soon: datetime) -> LeaseSummary:
        sql = summary_sql("?", scoped=board_id is not None, index_hint=_LIVE_INDEX)
        params = summary_params(encode_time(now), encode_time(soon), board_id)
        return summary_of(self._all(sql, params), load_strings)

    def due_leases(self, now: datetime, limit: int) -> list[Lease]:
        rows = self._all(
            f"{_LEASE_SELECT} INDEXED BY leases_live_by_recover_after "
            "WHERE ended_at IS NULL AND recover_after <= ? ORDER BY recover_after LIMIT ?",
            (encode_time(now), limit),
        )
        return [_LEASES.of(row) for row in rows]

    def lease_history(self, board_id: str, task_id: str) -> list[Lease]:
        rows = self._all(
            f"{_LEASE_SELECT} WHERE board_id = ? AND task_id = ? ORDER BY epoch",
            (board_id, task_id),
        )
        return [_LEASES.of(row) for row in rows]

    def leases_of_agent(
        self, board_id: str, agent_id: str, ended_since: datetime
    ) -> tuple[list[Lease], list[Lease]]:
        rows = self._all(
            _LEASES_OF_AGENT, (board_id, agent_id, board_id, agent_id, encode_time(ended_since))
        )
        leases = [_LEASES.of(row) for row in rows]
        return [x for x in leases if x.live], [x for x in leases if not x.live]

    # events, comments, counters, outbox ---------------------------------------------

    def queue_event(self, event: Event) -> None:
        # One writer holds the whole file: appending now costs nothing extra.
        self.append_event(event)

    def append_event(self, event: Event) -> int:
        cursor = self._exec(
            "INSERT INTO events (type, board_id, task_id, agent_id, epoch, at, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                str(event.type),
                event.board_id,
                event.task_id,
                event.agent_id,
                event.epoch,
                encode_time(event.at),
                dump_json(event.data),
            ),
            f"event {event.type}",
        )
        event_id = int(cursor.lastrowid or 0)
        self.last_event_id = event_id
        return event_id

    def add_comment(self, comment: Comment) -> int:
        cursor = self._exec(
            "INSERT INTO comments (board_id, task_id, at, author, body) VALUES (?, ?, ?, ?, ?)",
            (
                comment.board_id,
                comment.task_id,
                encode_time(comment.at),
                comment.author,
                comment.body,
            ),
            f"comment on task {comment.task_id!r}",
        )
        return int(cursor.lastrowid or 0)

    def comments(self, board_id: str, task_id: str) -> list[Comment]:
        rows = self._all(
            f"{_COMMENT_SELECT} WHERE board_id = ? AND task_id = ? ORDER BY id",
            (board_id, task_id),
        )
        return [comment_from_row(row) for row in rows]

    def bump(self, board_id: str, counter: str, by: int = 1) -> None:
        self._exec(
            "INSERT INTO counters (board_id, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT (board_id, name) DO UPDATE SET value = value + excluded.value",
            (board_id, str(counter), by),
        )

    def counters(self, board_id: str | None = None) -> dict[str, int]:
        if board_id is None:
            rows = self._all("SELECT name, SUM(value) FROM counters GROUP BY name ORDER BY name")
        else:
            rows = self._all(
                "SELECT name, value FROM counters WHERE board_id = ? ORDER BY name", (board_id,)
            )
        return {row[0]: int(row[1]) for row in rows}

    def queue_comment(self, comment: Comment) -> None:
        self.add_comment(comment)

    def queue_hook(
        self, kind: str, board_id: str, payload: dict[str, Any], idempotency_key: str
    ) -> None:
        self.enqueue_hook(kind, board_id, payload, idempotency_key)

    def enqueue_hook(
        self, kind: str, board_id: str, payload: dict[str, Any], idempotency_key: str
    ) -> int:
        # The key names one happening: enqueueing it again adds no second
        # delivery and returns the first row's id.
        now = encode_time(self._now)
        row = self._one(
            "INSERT INTO outbox (kind, board_id, payload, idempotency_key, attempts, "
            "next_attempt_at, created_at) VALUES (?, ?, ?, ?, 0, ?, ?) "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            (kind, board_id, dump_json(payload), idempotency_key, now, now),
        )
        if row is None:
            row = self._one("SELECT id FROM outbox WHERE idempotency_key = ?", (idempotency_key,))
        return int(row[0])

    def due_hooks(self, now: datetime, limit: int) -> list[OutboxRow]:
        rows = self._all(
            f"{_OUTBOX_SELECT} WHERE delivered_at IS NULL AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at, id LIMIT ?",
            (encode_time(now), limit),
        )
        return [outbox_from_row(row) for row in rows]

    def mark_hook(
        self,
        row_id: int,
        *,
        delivered: bool,
        next_attempt_at: datetime | None = None,
        error: str | None = None,
    ) -> None:
        if delivered:
            self._exec(
                "UPDATE outbox SET attempts = attempts + 1, delivered_at = ?, last_error = ? "
                "WHERE id = ?",
                (encode_time(self._now), error, row_id),
            )
        else:
            self._exec(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = COALESCE(?, next_attempt_at) WHERE id = ?",
                (error, encode_time(next_attempt_at), row_id),
            )

    # meta -----------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._exec(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _require_row(cursor: sqlite3.Cursor, what: str) -> None:
    """An update of a row that does not exist is an error, not a silent no-op."""
    if cursor.rowcount == 0:
        raise NotFound(f"{what} does not exist")
