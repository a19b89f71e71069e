"""The embedded SQLite store, Tenure's default: one file, one writer thread.

Layout of the work:
- ONE writer connection. Every unit of work runs on it inside `BEGIN
  IMMEDIATE` ... `COMMIT` (ROLLBACK if it raises), one at a time, so a claim
  can never interleave with another write. It runs on the writer's own
  thread (a single-thread executor), except an agent's quick units finding
  the writer idle, which run at once on the event loop's thread, committed
  at once or, while callers come in together, after one pass of the loop
  that lets others join the transaction (see `SqliteStore.run` and
  `tenure.store.sqlite_group`); the `_draining` flag says who holds the
  connection.
- Readers (`Store.read`, `events_after`) use their own connections on their
  own threads; under WAL they read the last committed state while the
  writer writes.
- `tx.now` is the injected clock's time, read once, right after BEGIN
  IMMEDIATE took the write lock, so transaction times follow commit order.

The SQL and the Tx methods live in `tenure.store.sqlite_tx`; this module
holds the connections, threads, migrations and the event wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tenure.clock import Clock, SystemClock
from tenure.core.errors import StoreUnavailable
from tenure.core.model import StoredEvent
from tenure.store.base import Reads, new_server_id
from tenure.store.rows import EVENT_COLUMNS, columns, encode_time, event_from_row
from tenure.store.sqlite_checkpoints import WRITER_CHECKPOINT_PAGES, Checkpointer
from tenure.store.sqlite_errors import translate_error
from tenure.store.sqlite_group import (
    GROUP_MAX,
    LoopGroup,
    Outcome,
    Pacer,
    rollback,
    run_group,
)
from tenure.store.sqlite_schema import (
    DEFAULT_PATH,
    DIALECT,
    _connect,
    _current_version,
    _migrate_connection,
    migrate_file,
    schema_version_of,
)
from tenure.store.sqlite_tx import SqliteTx

T = TypeVar("T")


#: How often `wait_for_events` looks at the file for events written by
#: another process (in-process commits wake it at once).
DEFAULT_POLL_INTERVAL = 0.25

_SELECT_EVENTS = f"SELECT {columns(EVENT_COLUMNS)} FROM events"


class SqliteStore:
    """A `Store` on one SQLite file. Make one with `await SqliteStore.open(path)`."""

    dialect = DIALECT

    def __init__(
        self,
        path: str,
        clock: Clock,
        *,
        busy_timeout_ms: int,
        synchronous: str,
        readers: int,
        poll_interval: float,
    ) -> None:
        """Use `open`; this only prepares the threads (no connection yet)."""
        self.path = path
        self.clock = clock
        self._busy_timeout_ms = busy_timeout_ms
        self._synchronous = synchronous
        self._poll_interval = poll_interval
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="tenure-sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(readers, thread_name_prefix="tenure-sqlite-reader")
        self._writer: sqlite3.Connection | None = None
        self._writer_busy_ms = busy_timeout_ms
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        #: This server's id (its MCP sessions' rows carry it).
        self.server_id = new_server_id()
        # Group commit: units waiting for the writer thread, and whether a
        # drain of them is already scheduled there.
        self._pending: list[tuple[Callable[[SqliteTx], Any], asyncio.Future[Any]]] = []
        self._pending_lock = threading.Lock()
        self._draining = False
        # Quick units' transaction on the event loop's thread, while open.
        self._loop_group: LoopGroup | None = None
        self._pacer = Pacer()
        self._checkpointer: Checkpointer | None = None
        self._last_event_id = 0
        self._event_signal = asyncio.Event()

    @classmethod
    async def open(
        cls,
        path: str | Path = DEFAULT_PATH,
        clock: Clock | None = None,
        *,
        migrate: bool = True,
        busy_timeout_ms: int = 5000,
        synchronous: str = "NORMAL",
        readers: int = 2,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> SqliteStore:
        """Open (creating if needed) the file at `path` and check its schema.

        With `migrate` the missing migrations are applied; without it a
        database that needs them is refused (`SchemaOutdated`). A database
        newer than this code is always refused (`SchemaTooNew`).
        """
        if synchronous.upper() not in {"NORMAL", "FULL", "EXTRA"}:
            raise ValueError("synchronous must be NORMAL, FULL or EXTRA")
        store = cls(
            str(path),
            clock or SystemClock(),
            busy_timeout_ms=busy_timeout_ms,
            synchronous=synchronous.upper(),
            readers=readers,
            poll_interval=poll_interval,
        )
        try:
            await store._on_writer(lambda: store._open_writer(migrate))
        except BaseException:
            await store.close()
            raise
        return store

    # threads ----------------------------------------------------------------

    async def _on_writer(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer_pool, fn)

    def _open_writer(self, migrate: bool) -> None:
        try:
            conn = _connect(
                self.path,
                busy_timeout_ms=self._busy_timeout_ms,
                synchronous=self._synchronous,
                reader=False,
            )
        except sqlite3.Error as exc:
            raise translate_error(exc) from exc
        try:
            _migrate_connection(conn, apply=migrate)
            row = conn.execute("SELECT MAX(id) FROM events").fetchone()
        except BaseException:
            conn.close()
            raise
        self._last_event_id = row[0] or 0
        # Checkpoints (copying the WAL into the file, with its fsync) leave the
        # path of commits: see `tenure.store.sqlite_checkpoints`.
        conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")
        self._writer = conn
        self._checkpointer = Checkpointer(self.path)
        self._checkpointer.start()

    def _reader(self, *, inline: bool = False) -> sqlite3.Connection:
        """This thread's reader connection; `inline`: the one for reads run on
        the event loop's thread, which never waits for a lock (busy timeout 0)."""
        name = "inline" if inline else "conn"
        conn: sqlite3.Connection | None = getattr(self._local, name, None)
        if conn is None:
            try:
                conn = _connect(
                    self.path,
                    busy_timeout_ms=0 if inline else self._busy_timeout_ms,
                    synchronous=self._synchronous,
                    reader=True,
                )
            except sqlite3.Error as exc:
                raise translate_error(exc) from exc
            setattr(self._local, name, conn)
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the SQLite store is closed")

    # units of work --------------------------------------------------------------

    def _run_sync(self, fn: Callable[[SqliteTx], T]) -> tuple[T, int]:
        conn = self._writer
        if conn is None:
            raise StoreUnavailable("the SQLite store is closed")
        self._wait_for_lock(conn, True)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise translate_error(exc) from exc
        tx = SqliteTx(conn, self.clock.now())
        try:
            result = fn(tx)
            conn.execute("COMMIT")
        except BaseException as exc:
            rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise translate_error(exc) from exc
            raise
        return result, tx.last_event_id

    async def run(
        self,
        fn: Callable[[SqliteTx], T],
        *,
        quick: bool = False,
        reads: Reads | None = None,
    ) -> T:
        """Run `fn` in one write transaction on the writer connection.

        `reads` is ignored: reading a row costs no round trip here.

        Units are committed in groups (`tenure.store.sqlite_group`): one
        COMMIT serves every unit that came in together, and each caller's
        answer waits for it.
        - A `quick` unit (see `Store.run`) finding the writer idle runs at
          once on the calling thread, the event loop's (the two thread hops
          it saves cost more than the unit itself). While quick units come
          in together, its transaction is held for one pass of the loop, and
          the quick units ready to run in that pass join it (`Pacer`). It
          never waits for the file's write lock there: if another
          process holds it, the unit goes to the writer thread.
        - Other units, and quick ones finding the writer busy, wait in a
          queue that the writer thread runs, up to GROUP_MAX at a time, in
          one transaction.

        If the caller is cancelled while `fn` runs, the unit of work still
        finishes (committed or rolled back).
        """
        self._check_open()
        if quick:
            if self._loop_group is not None:
                return await self._loop_group.add(fn)
            group = self._open_loop_group()
            if group is not None:
                answer = group.add(fn)
                if not self._pacer.wait_for_company():
                    group.commit()
                    return answer.result()
                try:
                    # One pass of the loop: the quick units ready to run in
                    # it join this transaction before it commits.
                    await asyncio.sleep(0)
                except BaseException:
                    # Cancelled meanwhile: the group still commits, and a
                    # failed COMMIT's error, which this caller will never
                    # read, is read here rather than reported as lost.
                    group.commit()
                    self._pacer.waited(group.units)
                    if answer.done():
                        answer.exception()
                    raise
                group.commit()
                self._pacer.waited(group.units)
                return answer.result()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[T, int]] = loop.create_future()
        with self._pending_lock:
            self._pending.append((fn, future))
            start = not self._draining
            self._draining = True
        if start:
            self._writer_pool.submit(self._drain, loop)
        result, last_event_id = await future
        if last_event_id:
            self._events_committed(last_event_id)
        return result

    def _open_loop_group(self) -> LoopGroup | None:
        """A transaction for quick units on this thread, if the writer is idle;
        None if it is not (busy with other units, or the file locked by
        another process)."""
        with self._pending_lock:
            if self._draining or self._pending or self._writer is None:
                return None
            self._draining = True  # the writer connection is ours meanwhile
        conn = self._writer
        try:
            self._wait_for_lock(conn, False)
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._release_writer()
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                return None
            raise translate_error(exc) from exc
        self._loop_group = LoopGroup(conn, self.clock, self._loop_group_closed)
        return self._loop_group

    def _loop_group_closed(self, group: LoopGroup, last_event_id: int) -> None:
        if self._loop_group is group:
            self._loop_group = None
        self._release_writer()
        if last_event_id:
            self._events_committed(last_event_id)

    def _release_writer(self) -> None:
        """The loop's thread is done with the writer: start the queued units."""
        with self._pending_lock:
            self._draining = False
            start = bool(self._pending)
            if start:
                self._draining = True
        if start:
            self._writer_pool.submit(self._drain, asyncio.get_running_loop())

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the writer thread: run the queued units, a group at a time."""
        try:
            self._drain_groups(loop)
        except BaseException:
            # Never leave the queue marked as drained by a thread that stopped.
            with self._pending_lock:
                self._draining = False
            raise

    def _drain_groups(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with self._pending_lock:
                group = self._pending[:GROUP_MAX]
                del self._pending[:GROUP_MAX]
                if not group:
                    self._draining = False
                    return
            group = [(fn, future) for fn, future in group if not future.cancelled()]
            outcomes: list[Outcome] = []
            if len(group) == 1:
                try:
                    outcomes.append((True, self._run_sync(group[0][0])))
                except BaseException as exc:
                    outcomes.append((False, exc))
            elif group:
                outcomes = self._run_group(group)
            with self._pending_lock:
                idle = not self._pending
                if idle:
                    # Free before its callers wake: a quick unit one of them
                    # sends next finds the writer idle and runs at once.
                    self._draining = False
            for (_, future), outcome in zip(group, outcomes, strict=True):
                _deliver(loop, future, outcome)
            if idle:
                return

    def _wait_for_lock(self, conn: sqlite3.Connection, wait: bool) -> None:
        """Let BEGIN IMMEDIATE wait for another process's write lock (up to
        the busy timeout), or fail at once when the event loop is running it."""
        timeout = self._busy_timeout_ms if wait else 0
        if timeout != self._writer_busy_ms:
            conn.execute(f"PRAGMA busy_timeout = {timeout}")
            self._writer_busy_ms = timeout

    def _run_group(
        self, group: list[tuple[Callable[[SqliteTx], Any], asyncio.Future[Any]]]
    ) -> list[Outcome]:
        """Several units in one transaction, each in a savepoint; their outcomes."""
        conn = self._writer
        if conn is None:
            return [(False, StoreUnavailable("the SQLite store is closed")) for _ in group]
        try:
            self._wait_for_lock(conn, True)
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(False, translate_error(exc)) for _ in group]
        return run_group(conn, self.clock, [fn for fn, _ in group])

    def _read_sync(self, fn: Callable[[SqliteTx], T], *, inline: bool = False) -> T:
        conn = self._reader(inline=inline)
        try:
            conn.execute("BEGIN")
            tx = SqliteTx(conn, self.clock.now())
            try:
                return fn(tx)
            finally:
                rollback(conn)
        except sqlite3.Error as exc:
            raise translate_error(exc) from exc

    async def read(self, fn: Callable[[SqliteTx], T], *, quick: bool = False) -> T:
        """Run a read-only `fn` on a reader connection (a consistent snapshot).

        A `quick` read (a few indexed rows: a token's owner) runs at once on
        the calling thread, the event loop's, sparing two thread hops. It never
        waits there: if SQLite answers busy (a WAL reset in progress), `fn`
        runs again on a reader thread, so it must have no side effects.
        """
        self._check_open()
        if quick:
            try:
                return self._read_sync(fn, inline=True)
            except StoreUnavailable as err:
                cause = err.__cause__
                code = getattr(cause, "sqlite_errorcode", 0)
                if not isinstance(cause, sqlite3.Error) or code & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
        return await asyncio.get_running_loop().run_in_executor(
            self._reader_pool, self._read_sync, fn
        )

    async def sole_server(self) -> bool:
        """Always: one server process owns a SQLite file."""
        return True

    async def running_servers(self) -> set[int]:
        """This server alone: one server process owns a SQLite file."""
        return {self.server_id}

    # the event log ----------------------------------------------------------------

    def _events_committed(self, last_event_id: int) -> None:
        if last_event_id > self._last_event_id:
            self._last_event_id = last_event_id
        # Each waiter holds the Event of its generation; set it and start a new one.
        signal, self._event_signal = self._event_signal, asyncio.Event()
        signal.set()

    async def events_after(
        self,
        after_id: int,
        *,
        board_id: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
        since: datetime | None = None,
        limit: int = 500,
    ) -> list[StoredEvent]:
        """Events with id > `after_id`, oldest first, filtered as asked."""
        where = ["id > ?"]
        params: list[Any] = [after_id]
        for column, value in (("board_id", board_id), ("task_id", task_id), ("agent_id", agent_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("at >= ?")
            params.append(encode_time(since))
        params.append(limit)
        sql = f"{_SELECT_EVENTS} WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"

        def query(tx: SqliteTx) -> list[StoredEvent]:
            return [event_from_row(row) for row in tx.conn.execute(sql, params)]

        return await self.read(query)

    async def _max_event_id(self) -> int:
        def query(tx: SqliteTx) -> int:
            row = tx.conn.execute("SELECT MAX(id) FROM events").fetchone()
            return int(row[0] or 0)

        return await self.read(query)

    async def wait_for_events(self, after_id: int, timeout: float) -> None:
        """Return once an event with id > `after_id` exists, or after `timeout` s.

        Commits of this store wake waiters at once; the file is looked at every
        `poll_interval` s as well, for events written by other processes.
        """
        deadline = time.monotonic() + timeout
        while True:
            # Take this generation's signal before looking, so a commit that
            # lands after the look still wakes us.
            signal = self._event_signal
            if self._last_event_id > after_id:
                return
            newest = await self._max_event_id()
            if newest > after_id:
                self._last_event_id = max(self._last_event_id, newest)
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), min(self._poll_interval, remaining))

    # lifecycle ----------------------------------------------------------------

    async def schema_version(self) -> int:
        """The schema version of the open database."""
        return await self.read(lambda tx: _current_version(tx.conn))

    async def close(self) -> None:
        """Close every connection and stop the threads; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._loop_group is not None:
            self._loop_group.commit()
        if self._checkpointer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.stop)
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await loop.run_in_executor(self._writer_pool, _close_writer, writer)
        await loop.run_in_executor(None, self._writer_pool.shutdown)
        await loop.run_in_executor(None, self._reader_pool.shutdown)
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _close_writer(conn: sqlite3.Connection) -> None:
    """Refresh the planner's statistics where they drifted (cheap), then close."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA optimize")
    conn.close()


def _deliver(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], outcome: tuple[bool, Any]
) -> None:
    """Hand a unit's outcome (ok, value or exception) to its caller's loop."""

    def settle() -> None:
        if future.cancelled():
            return
        ok, value = outcome
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    with contextlib.suppress(RuntimeError):  # the caller's loop has closed
        loop.call_soon_threadsafe(settle)


async def open_sqlite(
    path: str | Path = DEFAULT_PATH, clock: Clock | None = None, **options: Any
) -> SqliteStore:
    """Open a `SqliteStore` (see `SqliteStore.open` for the options)."""
    return await SqliteStore.open(path, clock, **options)


if TYPE_CHECKING:
    from tenure.store.base import Store, Tx

    def _conforms(store: SqliteStore, tx: SqliteTx) -> tuple[Store, Tx]:
        """Never called: mypy proves here that these satisfy the protocols."""
        a: Store = store
        b: Tx = tx
        return a, b


__all__ = [
    "DEFAULT_PATH",
    "SqliteStore",
    "migrate_file",
    "open_sqlite",
    "schema_version_of",
]
