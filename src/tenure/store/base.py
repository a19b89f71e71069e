"""The Store protocol: Tenure's one source of truth, behind one interface.

A unit of work is a plain synchronous function of a `Tx`. The store runs it
in one database transaction on a thread of its own (`await store.run(fn)`),
so the same body serves SQLite (its one writer thread) and PostgreSQL (a
connection from the pool), and nothing blocks the event loop. `tx.now` is
read once when the transaction opens, from the store's clock: the
database's on PostgreSQL unless a clock was injected, the injected clock
(SystemClock or FakeClock) on SQLite. Every lease update is conditional on
the version the unit of work loaded; a lost race is a `False`, never a driver
exception. If the function raises, the transaction rolls back and nothing of
it is kept.

Events, comments, counters and outbox rows written through a `Tx` commit or
vanish together with the rest of the unit of work.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from tenure.core.errors import Conflict
from tenure.core.model import (
    Agent,
    Board,
    Comment,
    Event,
    Lease,
    StoredEvent,
    Task,
    TaskStatus,
)
from tenure.core.stats import LeaseSummary

T = TypeVar("T")


class TransientFailure(Conflict):
    """The database aborted the transaction to break a deadlock (or a
    serialisation failure): nothing was kept, and running the unit of work
    again may well succeed. The Coordinator retries it like a lost race."""


@dataclass(frozen=True, slots=True)
class Reads:
    """What a unit of work reads first, so that a store may read it with BEGIN.

    An agent's call starts by reading the agent (`get_agent`), then its
    leases (`leases_of_agent` since its last call); then, for an act on a
    task, that task locked (`get_task(for_update=True)`); for a claim, the
    first claim candidate (`claim_candidates` with limit 1); for an act that
    may be followed by a claim in the same unit, both. PostgreSQL sends
    these reads with BEGIN, in one round trip; each result answers the unit's
    first read that asks for exactly it. SQLite reads rows in process and
    ignores this.
    """

    board_id: str
    agent_id: str
    #: A task of the board the unit reads next, locked.
    task_id: str | None = None
    #: Read the first claim candidate, locked, when the agent holds fewer
    #: live leases than this (a claim it may make); None: do not.
    claim_below: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A hook delivery waiting in the outbox."""

    id: int
    kind: str
    board_id: str
    payload: dict[str, Any]
    idempotency_key: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimFilter:
    """What `claim_candidates` may return for one agent."""

    board_id: str
    agent_skills: tuple[str, ...] = ()
    limit: int = 16


def new_server_id() -> int:
    """A fresh id for this server process among those on one database: drawn
    at random from 1 to 2**31 - 1 (PostgreSQL keys its advisory lock on it)."""
    return secrets.randbelow(2**31 - 1) + 1


class Tx(Protocol):
    """One open transaction. Every method is synchronous and runs inside it."""

    @property
    def now(self) -> datetime:
        """The transaction's one moment (aware UTC), read once at BEGIN."""

    # boards ---------------------------------------------------------------
    def insert_board(self, board: Board) -> None:
        """Add a board; `Conflict` if its id exists."""

    def get_board(self, board_id: str) -> Board | None: ...

    def list_boards(self) -> list[Board]: ...

    def update_board(self, board: Board) -> None: ...

    def board_by_key_hash(self, key_hash: str) -> Board | None:
        """The board whose enrolment key (or viewer token) hashes to `key_hash`."""

    # agents ---------------------------------------------------------------
    def insert_agent(self, agent: Agent) -> None:
        """Add an agent; `Conflict` if (board, id) exists."""

    def update_agent(self, agent: Agent) -> None:
        """Write the agent's fields, all but `open_sessions` and `last_seen_at`
        (only the session methods below and `mark_seen` move them); `NotFound`
        if there is no such agent."""

    def mark_seen(self, board_id: str, agent_id: str, at: datetime) -> None:
        """Set the agent's `last_seen_at` alone (an agent deleted meanwhile: nothing)."""

    def get_agent(self, board_id: str, agent_id: str) -> Agent | None: ...

    def agent_by_token_hash(self, token_hash: str) -> Agent | None: ...

    def list_agents(self, board_id: str) -> list[Agent]: ...

    def delete_agent(self, board_id: str, agent_id: str) -> bool: ...

    # open MCP sessions, by server (see tenure.store.session_rows) ------------
    def open_session(self, board_id: str, agent_id: str, server_id: int) -> int:
        """Count one more open session of the agent on `server_id` (and in its
        `open_sessions`); how many it has open now."""

    def close_session(self, board_id: str, agent_id: str, server_id: int) -> int:
        """Count one fewer (none if `server_id` held none); how many it has open now."""

    def session_servers(self) -> list[int]:
        """The servers holding any open session."""

    def take_sessions(self, server_id: int) -> list[tuple[str, str, int]]:
        """Count out every session of `server_id`; (board, agent, sessions) of each."""

    def forget_sessions(self) -> int:
        """Count out every session of every server; how many agents had some."""

    # tasks ----------------------------------------------------------------
    def insert_task(self, task: Task) -> None:
        """Add a task; `Conflict` if (board, id) exists."""

    def update_task(self, task: Task) -> None:
        """Write every field of `task` (the caller loaded it in this transaction)."""

    def get_task(self, board_id: str, task_id: str, *, for_update: bool = False) -> Task | None:
        """One task; `for_update` locks its row on PostgreSQL."""

    def lock_tasks(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Task]:
        """The tasks named by (board id, task id), locked until the transaction
        ends (PostgreSQL: FOR UPDATE, taken in key order); missing ones are left out."""

    def list_tasks(
        self,
        board_id: str,
        status: TaskStatus | None = None,
        limit: int | None = None,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[Task]:
        """The board's tasks (of one status), oldest first, then by id; with
        `after` (a creation moment and a task id), only those listed after
        that place: the next page of a listing."""

    def recently_done(self, board_id: str, limit: int) -> list[Task]:
        """The board's `limit` done tasks completed last, newest first."""

    def task_counts(self, board_id: str) -> dict[TaskStatus, int]:
        """How many tasks of the board have each status (absent: none)."""

    def delete_task(self, board_id: str, task_id: str) -> bool: ...

    def claim_candidates(self, flt: ClaimFilter) -> list[Task]:
        """`todo` tasks of the board, locked for this transaction (SKIP LOCKED on
        PostgreSQL), in claim order: recovered first (recovery_count > 0 with a
        handoff), then priority (urgent first), then oldest. Dependencies and
        skills are judged by the caller; the store may pre-filter."""

    def task_statuses(self, board_id: str, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        """The status of each named task that exists."""

    # leases ---------------------------------------------------------------
    def insert_lease(self, lease: Lease) -> None:
        """Add a new live lease; `Conflict` if the task already has a live one."""

    def update_lease(self, lease: Lease, expected_version: int) -> bool:
        """Write `lease` if the stored one (same board, task, epoch) still has
        `expected_version`; False if it moved on (a lost race)."""

    def write_together(self) -> None:
        """Let this unit's task and lease updates wait for its next read or its
        commit and go together (PostgreSQL: one round trip for a monitor
        batch's). Each stays conditional: `update_lease` then answers True, and
        a lease found moved on when they are sent raises `Conflict`, rolling
        the unit back whole. SQLite writes at once anyway."""

    def live_lease(self, board_id: str, task_id: str) -> Lease | None: ...

    def last_lease_of(self, board_id: str, task_id: str, agent_id: str) -> Lease | None:
        """The agent's most recent lease on the task, live or ended."""

    def live_leases_of_agent(self, board_id: str, agent_id: str) -> list[Lease]: ...

    def live_leases(self, board_id: str | None = None) -> list[Lease]: ...

    def lease_summary(self, board_id: str | None, now: datetime, soon: datetime) -> LeaseSummary:
        """The live leases (of one board, or all) counted by state at `now` and
        by flag, as `tenure.core.stats.summarize` counts them; `soon` is
        `expiring_soon_before(now)`."""
        ...

    def live_leases_of_tasks(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Lease]:
        """The live lease of each task named by (board id, task id) that has one."""

    def due_leases(self, now: datetime, limit: int) -> list[Lease]:
        """Live leases whose recover_after <= now, oldest first, through the index."""

    def lease_history(self, board_id: str, task_id: str) -> list[Lease]: ...

    def leases_of_agent(
        self, board_id: str, agent_id: str, ended_since: datetime
    ) -> tuple[list[Lease], list[Lease]]:
        """The agent's live leases (as `live_leases_of_agent`) and those that
        ended at or after `ended_since`, oldest end first (for "you lost a
        lease" notices), in one statement, each half on its own index: an
        agent's call reads both at its start."""

    # events, comments, counters, outbox -------------------------------------
    def append_event(self, event: Event) -> int:
        """Append to the log; returns the event's id."""

    def queue_event(self, event: Event) -> None:
        """Append `event` at the end of the transaction, when its id is not needed.

        PostgreSQL takes the event log's ordering lock only then, so writers
        queue behind each other for the commit alone; SQLite appends at once."""

    def add_comment(self, comment: Comment) -> int: ...

    def queue_comment(self, comment: Comment) -> None:
        """`add_comment` when the id is not needed (PostgreSQL sends it with the
        next round trip)."""

    def comments(self, board_id: str, task_id: str) -> list[Comment]: ...

    def bump(self, board_id: str, counter: str, by: int = 1) -> None: ...

    def counters(self, board_id: str | None = None) -> dict[str, int]: ...

    def enqueue_hook(
        self, kind: str, board_id: str, payload: dict[str, Any], idempotency_key: str
    ) -> int: ...

    def queue_hook(
        self, kind: str, board_id: str, payload: dict[str, Any], idempotency_key: str
    ) -> None:
        """`enqueue_hook` when the row id is not needed."""

    def due_hooks(self, now: datetime, limit: int) -> list[OutboxRow]:
        """Undelivered rows whose next attempt is due, locked (SKIP LOCKED)."""

    def mark_hook(
        self,
        row_id: int,
        *,
        delivered: bool,
        next_attempt_at: datetime | None = None,
        error: str | None = None,
    ) -> None: ...

    # upkeep: retention and importing a board's history -----------------------
    def prune_events(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` of the oldest events older than `before` whose task
        is `done`, no longer exists, or that name no task; returns how many went.
        The history of a task not yet done is never pruned."""

    def prune_comments(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` of the oldest comments older than `before` on
        `done` tasks; returns how many went."""

    def insert_events(self, events: Sequence[Event]) -> int:
        """Append `events` in their order with their own times (an import): new
        ids, the same order. Returns how many."""

    def insert_comments(self, comments: Sequence[Comment]) -> int:
        """Add `comments` in their order with their own times (an import)."""

    # meta -------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...


class Store(Protocol):
    """An open store. Async outside, synchronous units of work inside."""

    dialect: str

    async def run(
        self, fn: Callable[[Tx], T], *, quick: bool = False, reads: Reads | None = None
    ) -> T:
        """Run `fn` in one transaction; commit if it returns, roll back if it raises.

        `quick` says `fn` is a few statements on indexed rows (an agent's
        call): SQLite may then run it on the calling thread when its writer
        is idle, sparing two thread hops. `reads` says what `fn` reads first
        (see `Reads`): PostgreSQL reads it with BEGIN, sparing round trips.
        A database that cannot be reached raises `StoreUnavailable`.
        """

    async def read(self, fn: Callable[[Tx], T], *, quick: bool = False) -> T:
        """Run a read-only `fn` (SQLite: on a reader connection, apart from the writer).

        `quick` says `fn` looks up a few indexed rows and nothing more (a
        token's owner): no writes, no clock (`tx.now`), no snapshot shared
        by its statements. SQLite may run it on the calling thread;
        PostgreSQL sends each statement alone, one round trip each.
        """

    async def sole_server(self) -> bool:
        """Whether this is the only server running on the database; a server
        asks at its start (PostgreSQL: it then counts as running until the
        store closes; SQLite: one server process owns the file)."""

    #: This process's id among the servers on the database (`new_server_id`).
    server_id: int

    async def running_servers(self) -> set[int] | None:
        """The ids of the servers running on the database, this one's included
        (it counts as running from then on until the store closes); None
        when that cannot be told now."""

    async def events_after(
        self,
        after_id: int,
        *,
        board_id: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
        since: datetime | None = None,
        limit: int = 500,
    ) -> list[StoredEvent]: ...

    async def wait_for_events(self, after_id: int, timeout: float) -> None:
        """Return when an event with id > after_id may exist (NOTIFY on
        PostgreSQL; an in-process signal or a short poll on SQLite), or after
        `timeout` seconds."""

    async def close(self) -> None: ...
