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
from tenure.store.sqlite_tx import SqliteTx, translate_error

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


class LoopGroup:
    """A write transaction held by the event loop's thread for one pass of the loop.

    The first quick unit finding the writer idle opens it (BEGIN IMMEDIATE
    already taken by the store) and runs at once; its caller then yields
    for one pass of the loop, and the quick units that run in that pass join
    the transaction and run at once too, each in a savepoint. The first
    caller commits when it resumes (or the group commits as soon as
    GROUP_MAX units have joined). Every caller has a future from `add`,
    settled at the COMMIT.
    """

    __slots__ = ("_clock", "_conn", "_done", "_last_event_id", "_on_close", "_waiting")

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

    def add(self, fn: Callable[[SqliteTx], T]) -> asyncio.Future[T]:
        """Run `fn` in this transaction now; a future of its result, settled
        at the COMMIT. A unit that raises raises here (nothing of it is kept)."""
        conn = self._conn
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
