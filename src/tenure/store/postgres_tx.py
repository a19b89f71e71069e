"""One PostgreSQL transaction as a `Tx`: the SQL of every store operation.

`PostgresTx` is what a unit of work receives from `PostgresStore.run`. It
holds one pooled connection (autocommit mode: the store sends BEGIN and
COMMIT itself, so BEGIN travels with the reads that come first) and a
cursor for the statements that do not go through libpq directly. Rows go
through `tenure.store.rows`, the mapping shared with SQLite; only times
differ (timestamptz takes aware datetimes, see `rows.keep_time`).

Each operation is one statement. An agent's call reads what it names with
BEGIN (`prefetched`, see `tenure.store.base.Reads`) and keeps its writes
for the COMMIT (`tenure.store.postgres_kept`): two round trips, both
through libpq's pipeline (`tenure.store.postgres_pipe`), as does a quick
read's lookup (`tenure.store.postgres_lookup`). Other reads go through a
psycopg cursor, which prepares a statement on the server after a few
executions (`prepare_threshold`).

A statement that fails leaves the PostgreSQL transaction aborted, so the
first failure is remembered (`failure`): the store refuses to commit a unit of
work that swallowed it. Duplicates are detected with `ON CONFLICT DO
NOTHING` instead, so a `Conflict` from an insert leaves the transaction
usable, as it is on SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

import psycopg

from tenure.core.errors import Conflict, NotFound, TenureError
from tenure.core.model import Agent, Board, Event, Lease, Task, TaskStatus
from tenure.core.stats import LeaseSummary
from tenure.store import postgres_sql as pgsql
from tenure.store import rows
from tenure.store.base import ClaimFilter, Reads
from tenure.store.lease_summary import summary_of, summary_params, summary_sql
from tenure.store.postgres_errors import translate
from tenure.store.postgres_kept import KeptWrites
from tenure.store.postgres_log import (
    COUNTER_SHARDS,
    EVENT_SELECT,
    EVENTS_CHANNEL,
    EVENTS_LOCK_KEY,
    PostgresLog,
    stored_event,
)
from tenure.store.postgres_pipe import Prepared
from tenure.store.postgres_upkeep import PostgresUpkeep
from tenure.store.session_rows import SessionRows

#: Rows as a statement gave them.
Rows = list[tuple[Any, ...]]

T = TypeVar("T")

__all__ = [
    "COUNTER_SHARDS",
    "EVENTS_CHANNEL",
    "EVENTS_LOCK_KEY",
    "EVENT_SELECT",
    "PostgresTx",
    "stored_event",
    "translate",
]

#: How far past a transaction's start a write time read from a row may move
#: its `now` (see `PostgresTx.now`): a race lasts moments, not minutes.
CAUSAL_REACH = timedelta(seconds=30)


class PostgresTx(KeptWrites, PostgresLog, PostgresUpkeep, SessionRows):
    """One open transaction on one pooled connection (see the module doc)."""

    _MARK = "%s"

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        now: datetime,
        shard: int,
        *,
        causal: bool = False,
        statements: Prepared | None = None,
    ) -> None:
        self._conn = conn
        # Which of `postgres_pipe`'s statements the connection holds.
        self._statements = statements if statements is not None else Prepared()
        self._cur = conn.cursor()
        self._now = now
        # With the database's clock: the latest write time seen in rows read
        # (see `now`); None until one is later than the transaction's start.
        self._causal = causal
        self._seen_after: datetime | None = None
        self._shard = shard
        self._locked_events = False
        self._pending_counts: dict[tuple[str, str], int] = {}
        self._pending_events: list[Event] = []
        # Writes nothing waits for, sent together at the end (see `_later`).
        self._deferred: list[tuple[str, Sequence[Any]]] = []
        # Under `write_together`: task and lease writes join `_deferred`, each
        # checked on the server; a read first sends them (`_writes_kept`).
        self._together = False
        self._writes_kept = False
        # An agent, its leases, and a task or the first claim candidate, read
        # with BEGIN (see `prefetched`), each handed out once, to the first
        # read that asks for exactly it.
        self._agent_read: tuple[tuple[str, str], Agent | None] | None = None
        self._leases_read: tuple[tuple[str, str, datetime], list[Lease]] | None = None
        self._task_read: tuple[tuple[str, str], Task | None] | None = None
        self._candidate_read: tuple[str, Task] | None = None
        #: The first statement failure (the PostgreSQL transaction is aborted).
        self.failure: TenureError | None = None
        #: The highest event id appended (0: none).
        self.last_event_id = 0

    @property
    def now(self) -> datetime:
        """The transaction's moment: its start on the database's clock, or
        the latest write time in the rows it has read, if that is later.

        Under READ COMMITTED a statement sees what committed before it ran,
        so a unit may read a row written by a transaction that began after
        its own BEGIN (it waited on a lock meanwhile, or was slow): a claim
        of a task recovered an instant later, a recovery of a lease renewed
        an instant later. Its times must not come before what it acts on,
        or a new epoch would begin before the last one ended.
        """
        if self._seen_after is not None and self._seen_after > self._now:
            return self._seen_after
        return self._now

    def _saw(self, *moments: datetime | None) -> None:
        """Note write times in rows just read (only with the database's clock).

        Only times Tenure stamps with a transaction's own moment count, and
        only up to CAUSAL_REACH past this one's start: anything further is a
        clock problem, not a race, and must not drag every lease along.
        """
        if not self._causal:
            return
        start = self._now
        for moment in moments:
            if (
                moment is not None
                and moment > start
                and moment - start <= CAUSAL_REACH
                and (self._seen_after is None or moment > self._seen_after)
            ):
                self._seen_after = moment

    def _task(self, row: Sequence[Any]) -> Task:
        task = rows.task_from_row(row)
        self._saw(task.updated_at)
        return task

    def prefetched(self, reads: Reads, found: Rows, *then: Rows) -> None:
        """Take the rows read with BEGIN for `reads`: `found` from
        `pgsql.SQL_AGENT_AND_LEASES`, then those of its task read and of its
        claim read, each when `reads` names it (in that order).

        The unit's first `get_agent` of that agent, its first `leases_of_agent`
        since that agent's last call, its first `get_task` of that task, and
        its first one-candidate `claim_candidates` on that board are answered
        from them. An empty claim read answers nothing: it may only mean that
        the agent held too many leases for it to run.
        """
        key = (reads.board_id, reads.agent_id)
        results = iter(then)
        if reads.task_id is not None and (task_rows := next(results, None)) is not None:
            task = self._task(task_rows[0]) if task_rows else None
            self._task_read = ((reads.board_id, reads.task_id), task)
        if reads.claim_below is not None and (candidates := next(results, None)):
            self._candidate_read = (reads.board_id, self._task(candidates[0]))
        if not found:
            self._agent_read = (key, None)
            return
        split = len(rows.AGENT_COLUMNS)
        agent = rows.agent_from_row(found[0][:split])
        leases = [self._lease(row[split:]) for row in found if row[split] is not None]
        self._agent_read = (key, agent)
        self._leases_read = ((*key, agent.last_seen_at or agent.created_at), leases)

    def _forget_reads(self) -> None:
        """A write of an agent or a lease: what BEGIN read of them may be stale."""
        self._agent_read = self._leases_read = None

    def _forget_task_reads(self, written: Task | None = None) -> None:
        """A write of a task (`written`, when it is an update): what BEGIN read
        of tasks may be stale. The first claim candidate stays good when the
        task written is another and is not `todo` afterwards: then the board's
        `todo` tasks and their order are what BEGIN saw (an act that finishes
        its task, then claims, in one unit)."""
        self._task_read = None
        candidate = self._candidate_read
        if (
            written is None
            or candidate is None
            or candidate[1].id == written.id
            or written.status is TaskStatus.TODO
        ):
            self._candidate_read = None

    def _lease(self, row: Sequence[Any]) -> Lease:
        lease = rows.lease_from_row(row)
        self._saw(lease.assigned_at, lease.last_renewed_at, lease.ended_at)
        return lease

    # plumbing --------------------------------------------------------------

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        if self.failure is not None:
            # PostgreSQL ignores everything after a failure; say why at once.
            raise self.failure
        if self._writes_kept:
            self._send_kept()  # a read after kept-back writes sees them
        try:
            return self._cur.execute(sql, params)
        except psycopg.Error as exc:
            self._fail(exc)

    def _fetch(self, fetch: Callable[[], T]) -> T:
        try:
            return fetch()
        except psycopg.Error as exc:
            self._fail(exc)

    def _fail(self, exc: psycopg.Error) -> NoReturn:
        err = translate(exc)
        if err is None:
            self.failure = TenureError(f"database error: {exc}")
            raise
        self.failure = err
        raise err from exc

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._fetch(self._exec(sql, params).fetchone)
        return row

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        result: list[tuple[Any, ...]] = self._fetch(self._exec(sql, params).fetchall)
        return result

    # boards ----------------------------------------------------------------

    def insert_board(self, board: Board) -> None:
        """Add a board; `Conflict` if its id (or enrolment key) exists."""
        cur = self._exec(pgsql.SQL_INSERT_BOARD, rows.board_to_row(board, rows.keep_time))
        if cur.rowcount == 0:
            raise Conflict(f"board {board.id!r} already exists", details={"board": board.id})

    def get_board(self, board_id: str) -> Board | None:
        row = self._one(f"SELECT {pgsql.BOARDS} FROM boards WHERE id = %s", (board_id,))
        return None if row is None else rows.board_from_row(row)

    def list_boards(self) -> list[Board]:
        found = self._all(f"SELECT {pgsql.BOARDS} FROM boards ORDER BY id")
        return [rows.board_from_row(row) for row in found]

    def update_board(self, board: Board) -> None:
        values = rows.board_to_row(board, rows.keep_time)
        cur = self._exec(pgsql.SQL_UPDATE_BOARD, (*values[1:], board.id))
        _require_row(cur, f"board {board.id!r}")

    def board_by_key_hash(self, key_hash: str) -> Board | None:
        """The board whose enrolment key (or viewer token) hashes to `key_hash`."""
        row = self._one(
            f"SELECT {pgsql.BOARDS} FROM boards WHERE enrolment_key_hash = %s "
            f"UNION ALL SELECT {pgsql.BOARDS} FROM boards WHERE viewer_token_hash = %s LIMIT 1",
            (key_hash, key_hash),
        )
        return None if row is None else rows.board_from_row(row)

    # agents ----------------------------------------------------------------

    def insert_agent(self, agent: Agent) -> None:
        """Add an agent; `Conflict` if (board, id) or its token exists."""
        self._forget_reads()
        values = rows.agent_to_row(agent, rows.keep_time)
        cur = self._exec(pgsql.SQL_INSERT_AGENT, (*values, agent.board_id))
        if cur.rowcount == 0:
            if self.get_board(agent.board_id) is None:
                raise _missing_parent(f"agent {agent.id!r}", agent.board_id)
            raise Conflict(f"agent {agent.id!r} already exists", details={"agent": agent.id})

    def update_agent(self, agent: Agent) -> None:
        self._forget_reads()
        values = rows.agent_to_row(agent, rows.keep_time)
        cur = self._exec(
            pgsql.SQL_UPDATE_AGENT, (*rows.agent_update_values(values), agent.board_id, agent.id)
        )
        _require_row(cur, f"agent {agent.id!r} of board {agent.board_id!r}")

    def mark_seen(self, board_id: str, agent_id: str, at: datetime) -> None:
        """Record the agent's latest call (an agent deleted meanwhile: nothing to mark)."""
        self._forget_reads()
        self._later(
            "UPDATE agents SET last_seen_at = %s WHERE board_id = %s AND id = %s",
            (at, board_id, agent_id),
        )

    def get_agent(self, board_id: str, agent_id: str) -> Agent | None:
        if self._agent_read is not None and self._agent_read[0] == (board_id, agent_id):
            agent = self._agent_read[1]
            self._agent_read = None
            return agent
        row = self._one(
            f"SELECT {pgsql.AGENTS} FROM agents WHERE board_id = %s AND id = %s",
            (board_id, agent_id),
        )
        return None if row is None else rows.agent_from_row(row)

    def agent_by_token_hash(self, token_hash: str) -> Agent | None:
        row = self._one(f"SELECT {pgsql.AGENTS} FROM agents WHERE token_hash = %s", (token_hash,))
        return None if row is None else rows.agent_from_row(row)

    def list_agents(self, board_id: str) -> list[Agent]:
        found = self._all(
            f"SELECT {pgsql.AGENTS} FROM agents WHERE board_id = %s ORDER BY id", (board_id,)
        )
        return [rows.agent_from_row(row) for row in found]

    def delete_agent(self, board_id: str, agent_id: str) -> bool:
        self._forget_reads()
        cur = self._exec("DELETE FROM agents WHERE board_id = %s AND id = %s", (board_id, agent_id))
        return cur.rowcount > 0

    # tasks -----------------------------------------------------------------

    def insert_task(self, task: Task) -> None:
        """Add a task; `Conflict` if (board, id) exists, `NotFound` without the board."""
        self._forget_task_reads()
        values = rows.task_to_row(task, rows.keep_time)
        cur = self._exec(pgsql.SQL_INSERT_TASK, (*values, task.board_id))
        if cur.rowcount == 0:
            if self.get_board(task.board_id) is None:
                raise _missing_parent(f"task {task.id!r}", task.board_id)
            raise Conflict(f"task {task.id!r} already exists", details={"task": task.id})

    def update_task(self, task: Task) -> None:
        """Write every field of `task`."""
        self._forget_task_reads(task)
        values = rows.task_to_row(task, rows.keep_time)
        params = (*values[2:], task.board_id, task.id)
        what = f"task {task.id!r} of board {task.board_id!r}"
        if self._together:
            missing = f"{what} does not exist"
            self._checked_later(pgsql.SQL_UPDATE_TASK, params, missing, missing=True)
            return
        _require_row(self._exec(pgsql.SQL_UPDATE_TASK, params), what)

    def get_task(self, board_id: str, task_id: str, *, for_update: bool = False) -> Task | None:
        """One task; `for_update` locks its row until the transaction ends."""
        if self._task_read is not None and self._task_read[0] == (board_id, task_id):
            # Read (and locked) with BEGIN.
            task = self._task_read[1]
            self._task_read = None
            return task
        lock = " FOR UPDATE" if for_update else ""
        row = self._one(
            f"SELECT {pgsql.TASKS} FROM tasks WHERE board_id = %s AND id = %s{lock}",
            (board_id, task_id),
        )
        return None if row is None else self._task(row)

    def lock_tasks(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Task]:
        if not keys:
            return {}
        found = self._all(
            f"SELECT {pgsql.TASKS} FROM tasks WHERE (board_id, id) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[])) ORDER BY board_id, id FOR UPDATE",
            ([board for board, _ in keys], [task for _, task in keys]),
        )
        tasks = (self._task(row) for row in found)
        return {(task.board_id, task.id): task for task in tasks}

    def list_tasks(
        self,
        board_id: str,
        status: TaskStatus | None = None,
        limit: int | None = None,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[Task]:
        sql = f"SELECT {pgsql.TASKS} FROM tasks WHERE board_id = %s"
        params: list[Any] = [board_id]
        if status is not None:
            sql += " AND status = %s"
            params.append(str(status))
        if after is not None:
            sql += " AND (created_at, id) > (%s, %s)"
            params += [after[0], after[1]]
        sql += " ORDER BY created_at, id"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        return [self._task(row) for row in self._all(sql, params)]

    def recently_done(self, board_id: str, limit: int) -> list[Task]:
        rows = self._all(
            f"SELECT {pgsql.TASKS} FROM tasks WHERE board_id = %s AND status = 'done' "
            "ORDER BY completed_at DESC, id DESC LIMIT %s",
            (board_id, limit),
        )
        return [self._task(row) for row in rows]

    def task_counts(self, board_id: str) -> dict[TaskStatus, int]:
        rows = self._all(
            "SELECT status, count(*) FROM tasks WHERE board_id = %s GROUP BY status", (board_id,)
        )
        return {TaskStatus(status): count for status, count in rows}

    def delete_task(self, board_id: str, task_id: str) -> bool:
        self._forget_task_reads()
        cur = self._exec("DELETE FROM tasks WHERE board_id = %s AND id = %s", (board_id, task_id))
        return cur.rowcount > 0

    def claim_candidates(self, flt: ClaimFilter) -> list[Task]:
        """`todo` tasks in claim order, locked; rows other claimers hold are skipped."""
        first = self._candidate_read
        if first is not None and flt.limit == 1 and first[0] == flt.board_id:
            # Read (and locked) with BEGIN.
            self._candidate_read = None
            return [first[1]]
        found = self._all(pgsql.SQL_CLAIM, (flt.board_id, flt.limit))
        return [self._task(row) for row in found]

    def task_statuses(self, board_id: str, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        """The status of each named task that exists."""
        if not task_ids:
            return {}
        found = self._all(
            "SELECT id, status FROM tasks WHERE board_id = %s AND id = ANY(%s)",
            (board_id, list(task_ids)),
        )
        return {task_id: TaskStatus(status) for task_id, status in found}

    # leases ----------------------------------------------------------------

    def insert_lease(self, lease: Lease) -> None:
        """Add a live lease; `Conflict` if the task has one (or this epoch exists)."""
        self._forget_reads()
        values = rows.lease_to_row(lease, rows.keep_time)
        params = (*values, lease.board_id, lease.task_id)
        if self._together:
            what = f"lease of task {lease.task_id!r} (epoch {lease.epoch}): not added"
            self._checked_later(pgsql.SQL_INSERT_LEASE, params, what)
            return
        cur = self._exec(pgsql.SQL_INSERT_LEASE, params)
        if cur.rowcount == 0:
            if (
                self._one(
                    "SELECT 1 FROM tasks WHERE board_id = %s AND id = %s",
                    (lease.board_id, lease.task_id),
                )
                is None
            ):
                raise _missing_parent(f"lease of task {lease.task_id!r}", lease.board_id)
            raise Conflict(
                f"lease of task {lease.task_id!r} (epoch {lease.epoch}): "
                "the task already has a live lease",
                details={"task": lease.task_id, "epoch": lease.epoch},
            )

    def update_lease(self, lease: Lease, expected_version: int) -> bool:
        """Write `lease` if the stored one still has `expected_version`."""
        self._forget_reads()
        values = rows.lease_to_row(lease, rows.keep_time)
        params = (*values[pgsql.LEASE_KEYS :], *values[: pgsql.LEASE_KEYS], expected_version)
        if self._together:
            what = f"lease of task {lease.task_id!r} (epoch {lease.epoch}) moved on"
            self._checked_later(pgsql.SQL_UPDATE_LEASE, params, what)
            return True
        return self._exec(pgsql.SQL_UPDATE_LEASE, params).rowcount == 1

    def _leases(self, where: str, params: Sequence[Any], tail: str = "") -> list[Lease]:
        found = self._all(f"SELECT {pgsql.LEASES} FROM leases WHERE {where} {tail}", params)
        return [self._lease(row) for row in found]

    def live_lease(self, board_id: str, task_id: str) -> Lease | None:
        found = self._leases(
            "board_id = %s AND task_id = %s AND ended_at IS NULL", (board_id, task_id)
        )
        return found[0] if found else None

    def last_lease_of(self, board_id: str, task_id: str, agent_id: str) -> Lease | None:
        """The agent's most recent lease on the task, live or ended."""
        found = self._leases(
            "board_id = %s AND task_id = %s AND agent_id = %s",
            (board_id, task_id, agent_id),
            "ORDER BY epoch DESC LIMIT 1",
        )
        return found[0] if found else None

    def live_leases_of_agent(self, board_id: str, agent_id: str) -> list[Lease]:
        return self._leases(
            "board_id = %s AND agent_id = %s AND ended_at IS NULL",
            (board_id, agent_id),
            "ORDER BY assigned_at, task_id",
        )

    def leases_of_agent(
        self, board_id: str, agent_id: str, ended_since: datetime
    ) -> tuple[list[Lease], list[Lease]]:
        read = self._leases_read
        if read is not None and read[0] == (board_id, agent_id, ended_since):
            self._leases_read = None
            return [x for x in read[1] if x.live], [x for x in read[1] if not x.live]
        found = self._all(
            f"(SELECT {pgsql.LEASES} FROM leases WHERE board_id = %s AND agent_id = %s "
            "AND ended_at IS NULL ORDER BY assigned_at, task_id) UNION ALL "
            f"(SELECT {pgsql.LEASES} FROM leases WHERE board_id = %s AND agent_id = %s "
            "AND ended_at >= %s ORDER BY ended_at, task_id)",
            (board_id, agent_id, board_id, agent_id, ended_since),
        )
        leases = [self._lease(row) for row in found]
        return [x for x in leases if x.live], [x for x in leases if not x.live]

    def live_leases(self, board_id: str | None = None) -> list[Lease]:
        if board_id is None:
            return self._leases("ended_at IS NULL", (), "ORDER BY board_id, task_id")
        return self._leases("board_id = %s AND ended_at IS NULL", (board_id,), "ORDER BY task_id")

    def lease_summary(self, board_id: str | None, now: datetime, soon: datetime) -> LeaseSummary:
        sql = summary_sql("%s", scoped=board_id is not None)
        return summary_of(self._all(sql, summary_params(now, soon, board_id)), list)

    def live_leases_of_tasks(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Lease]:
        if not keys:
            return {}
        found = self._leases(
            "ended_at IS NULL AND (board_id, task_id) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([board for board, _ in keys], [task for _, task in keys]),
        )
        return {(lease.board_id, lease.task_id): lease for lease in found}

    def due_leases(self, now: datetime, limit: int) -> list[Lease]:
        """Live leases whose recover_after <= now, oldest first, through the index."""
        return self._leases(
            "ended_at IS NULL AND recover_after <= %s",
            (now, limit),
            "ORDER BY recover_after LIMIT %s",
        )

    def lease_history(self, board_id: str, task_id: str) -> list[Lease]:
        return self._leases("board_id = %s AND task_id = %s", (board_id, task_id), "ORDER BY epoch")

    # meta ------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = %s", (key,))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._exec(
            "INSERT INTO meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _require_row(cur: psycopg.Cursor[Any], what: str) -> None:
    """An update of a row that does not exist is an error, not a silent no-op."""
    if cur.rowcount == 0:
        raise NotFound(f"{what} does not exist")


def _missing_parent(what: str, board_id: str) -> Conflict:
    # The same answer as SQLite's foreign-key failure, so both stores agree.
    return Conflict(
        f"{what} refers to a board or task that does not exist", details={"board": board_id}
    )
