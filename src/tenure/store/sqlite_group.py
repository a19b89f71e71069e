"""Group commit on SQLite: several units of work in one transaction, one COMMIT.

A COMMIT writes every page the transaction changed to the WAL, one frame per
page, each checksummed and written with its own system calls: about 5 us a
page here, some 50 us for a renewal, a third of its cost. Concurrent units
touch the same pages (the tail of the events table and of its indexes, the
lease indexes), so committing them together writes each page once.

Each unit after a group's first runs inside a savepoint: one that raises is
rolled back to it and gets its error at once, and the others go on. A unit's
answer waits for the group's COMMIT; if that fails, every unit of the group
gets the error, and nothing of any of them was kept.

- `run_group`: on the writer thread, the units queued while it was busy.
- `LoopGroup`: on the event loop's thread, the quick units that come in
  during one pass of the loop (see `tenure.store.sqlite.SqliteStore.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from tenure.clock import Clock
from tenure.core.errors import TenureError
from tenure.store.sqlite_errors import translate_error
from tenure.store.sqlite_tx import SqliteTx

T = TypeVar("T")

#: Units of work committed together at most.
GROUP_MAX = 64

#: What a unit hands its caller: (ok, (result, last event id) or the exception).
Outcome = tuple[bool, Any]


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; never mask the error being raised."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _error(exc: BaseException) -> BaseException:
    return translate_error(exc) if isinstance(exc, sqlite3.Error) else exc


def _nested(conn: sqlite3.Connection, clock: Clock, fn: Callable[[SqliteTx], T]) -> Outcome:
    """Run `fn` inside a savepoint of the open transaction; a unit that raises
    is rolled back to it. A failure of the savepoint itself (the transaction
    is gone) propagates as `sqlite3.Error`."""
    conn.execute("SAVEPOINT unit")
    tx = SqliteTx(conn, clock.now())
    try:
        result = fn(tx)
    except BaseException as exc:
        conn.execute("ROLLBACK TO unit")
        conn.execute("RELEASE unit")
        return (False, _error(exc))
    conn.execute("RELEASE unit")
    return (True, (result, tx.last_event_id))


def run_group(
    conn: sqlite3.Connection, clock: Clock, fns: list[Callable[[SqliteTx], Any]]
) -> list[Outcome]:
    """Run `fns` in one transaction (BEGIN IMMEDIATE already taken), each in a
    savepoint, then COMMIT; their outcomes, in order."""
    outcomes: list[Outcome] = []
    try:
        for fn in fns:
            outcomes.append(_nested(conn, clock, fn))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        # The transaction itself failed (SQLite may have rolled it back):
        # nothing of the group is kept, and every unit says so.
        rollback(conn)
        error = translate_error(exc)
        return [(False, error) for _ in fns]
    return outcomes


#: A first unit waits for company at least once in this many groups.
PROBE_EVERY = 32
#: Groups in a row with no company after which first units stop waiting.
SOLO_STREAK = 8


class Pacer:
    """Whether a loop group's first unit should wait one pass of the loop for others.

    Waiting costs its caller a pass of the loop, some 10 us here: a renewal
    by a lone caller got 5 % slower. It pays only when other quick units
    come in meanwhile, to share the COMMIT. So first units wait while recent
    groups had company, and otherwise one group in PROBE_EVERY waits, to
    notice when they would have.
    """

    __slots__ = ("_opened", "_solo", "waiting")

    def __init__(self) -> None:
        #: Whether first units wait (the mode the last groups called for).
        self.waiting = False
        self._opened = 0
        self._solo = 0

    def wait_for_company(self) -> bool:
        """Asked as a group opens: should its first unit wait?"""
        if self.waiting:
            return True
        self._opened += 1
        return self._opened % PROBE_EVERY == 0

    def waited(self, units: int) -> None:
        """A group whose first unit waited committed `units` units."""
        if units > 1:
            self.waiting = True
            self._solo = 0
            return
        self._solo += 1
        if self._solo >= SOLO_STREAK:
            self.waiting = False
            self._solo = 0


class LoopGroup:
    """A write transaction held by the event loop's thread for one pass of the loop.

    The first quick unit finding the writer idle opens it (BEGIN IMMEDIATE
    already taken by the store) and runs at once. Its caller then commits
    at once, or, when the `Pacer` says company is likely, yields for one
    pass of the loop first: the quick units that run in that pass join the
    transaction and run at once too, each in a savepoint. (The group also
    commits as soon as GROUP_MAX units have joined.) Every caller has a
    future from `add`, settled at the COMMIT.
    """

    __slots__ = ("_clock", "_conn", "_done", "_last_event_id", "_on_close", "_waiting", "units")

    def __init__(
        self,
        conn: sqlite3.Connection,
        clock: Clock,
        on_close: Callable[[LoopGroup, int], None],
    ) -> None:
        self._conn = conn
        self._clock = clock
        self._on_close = on_close
        self._waiting: list[tuple[asyncio.Future[Any], Any]] = []
        self._last_event_id = 0
        self._done = False
        #: Units run in this transaction so far (kept or not).
        self.units = 0

    def add(self, fn: Callable[[SqliteTx], T]) -> asyncio.Future[T]:
        """Run `fn` in this transaction now; a future of its result, settled
        at the COMMIT. A unit that raises raises here (nothing of it is kept)."""
        conn = self._conn
        self.units += 1
        if not self._waiting:
            # The first unit needs no savepoint: if it raises, the whole
            # transaction (its own and nobody else's) is rolled back.
            tx = SqliteTx(conn, self._clock.now())
            try:
                result = fn(tx)
            except BaseException as exc:
                rollback(conn)
                self._close()
                if isinstance(exc, sqlite3.Error):
                    raise translate_error(exc) from exc
                raise
            last_event_id = tx.last_event_id
        else:
            try:
                ok, value = _nested(conn, self._clock, fn)
            except sqlite3.Error as exc:
                error = translate_error(exc)
                self._fail(error)
                raise error from exc
            if not ok:
                raise value
            result, last_event_id = value
        self._last_event_id = max(self._last_event_id, last_event_id)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((future, result))
        if len(self._waiting) >= GROUP_MAX:
            self.commit()
        return future

    def commit(self) -> None:
        """COMMIT and settle every caller's future (a no-op once closed)."""
        if self._done:
            return
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._fail(translate_error(exc))
            return
        waiting = self._close()
        for future, result in waiting:
            if not future.cancelled():
                future.set_result(result)

    def _fail(self, error: TenureError) -> None:
        """The transaction failed: roll it back; every unit gets `error`."""
        rollback(self._conn)
        self._last_event_id = 0
        for future, _ in self._close():
            if not future.cancelled():
                future.set_exception(error)

    def _close(self) -> list[tuple[asyncio.Future[Any], Any]]:
        self._done = True
        waiting, self._waiting = self._waiting, []
        self._on_close(self, self._last_event_id)
        return waiting
