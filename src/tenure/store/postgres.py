"""The PostgreSQL store: several Tenure servers on one database.

`open_postgres(dsn)` gives a `PostgresStore`. Units of work are synchronous
functions of a `Tx` (see `tenure.store.base`); the store runs each one on a
worker thread (a `ThreadPoolExecutor` as large as the connection pool) with
a connection from a psycopg 3 `ConnectionPool`, inside one transaction.

Why READ COMMITTED is enough. Every lease write is `UPDATE ... WHERE
version = expected`: when another transaction committed a write first,
PostgreSQL re-checks the WHERE against the newest row and updates nothing,
which the store reports as a lost race (`False`). A task changed by a unit
of work is first read with `get_task(for_update=True)` (`SELECT ... FOR
UPDATE`), so writers of one task queue behind each other. Claims lock their
candidates with `FOR UPDATE SKIP LOCKED`, and PostgreSQL re-checks
`status = 'todo'` on the locked row, so no task goes to two claimers, and
the partial unique index on live leases refuses a second live lease whatever
happens. SERIALIZABLE would protect nothing more here and would add
serialisation failures to retry.

The clock. With no clock given, `tx.now` is the database's
`transaction_timestamp()`, read with BEGIN in the same round trip, so
servers whose own clocks disagree still judge expiry identically. A clock
passed in (a `FakeClock` in tests and the lab) replaces it. `process_clock`
is the server's own clock, used only to measure and report its skew against
the database (`clock_skew_s`), never to judge a lease.

Events and followers. Events are appended under a transaction-scoped
advisory lock (ids become visible in id order) and each append does
`pg_notify('tenure_events', '<id>')`, delivered at commit. `wait_for_events`
waits on one dedicated LISTEN connection per store, served by a background
thread (`tenure.store.postgres_follow`), so a follower on any replica wakes
when any replica appends.

Failures. A connection that cannot be had or breaks (psycopg's
`OperationalError`, a pool timeout) is `StoreUnavailable`; a pooled
connection found dead at BEGIN is replaced before the unit of work starts,
so a database restart costs callers nothing once it is back. Unique
violations are `Conflict`. A deadlock (PostgreSQL aborts one of two
transactions that wait on each other) is `TransientFailure`, a `Conflict`
that is safe to retry: the store never re-runs a unit of work itself,
because the caller may keep state beside it (the service's `Effects`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from tenure.clock import Clock, SystemClock
from tenure.core.errors import StoreUnavailable, TenureError
from tenure.core.model import StoredEvent
from tenure.store import postgres_pipe
from tenure.store import postgres_sql as pgsql
from tenure.store.base import Reads, Tx, new_server_id
from tenure.store.base import TransientFailure as TransientFailure
from tenure.store.postgres_follow import Follower
from tenure.store.postgres_lookup import LookupTx
from tenure.store.postgres_pipe import Prepared, Step
from tenure.store.postgres_presence import Presence, holders, running
from tenure.store.postgres_schema import (
    DIALECT,
    connect,
    connect_kwargs,
    migrate_on,
    migrate_postgres,
    postgres_schema_version,
    schema_version_on,
)
from tenure.store.postgres_tx import (
    COUNTER_SHARDS,
    EVENT_SELECT,
    PostgresTx,
    stored_event,
    translate,
)
from tenure.store.rows import decode_time

__all__ = [
    "PostgresStore",
    "TransientFailure",
    "migrate_postgres",
    "open_postgres",
    "postgres_schema_version",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Skew between a server's clock and the database's worth a warning, seconds.
_SKEW_WARNING_S = 2.0

_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"
_NOW = "SELECT transaction_timestamp()"


class PostgresStore:
    """A `Store` on PostgreSQL (see the module doc). Make one with `open_postgres`."""

    dialect = DIALECT

    def __init__(
        self,
        dsn: str,
        pool: ConnectionPool,
        *,
        clock: Clock | None,
        process_clock: Clock,
        workers: int,
        timeout: float,
        connect_timeout: float,
    ) -> None:
        self._dsn = dsn
        self._pool = pool
        self._clock = clock
        self._process_clock = process_clock
        #: The injected clock, else this server's own; `tx.now` is what decides.
        self.clock: Clock = clock if clock is not None else process_clock
        self._timeout = timeout
        self._max_size = workers
        self._connect_timeout = connect_timeout
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tenure-pg")
        # Which of `postgres_pipe`'s statements each pooled connection holds.
        # psycopg deallocates every prepared statement of a connection after
        # a ROLLBACK on it, so a rollback forgets them here.
        self._statements: weakref.WeakKeyDictionary[psycopg.Connection[Any], Prepared] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False
        #: Database clock minus this process's clock, in seconds (measured at open).
        self.clock_skew_s = 0.0
        self._follower = Follower(dsn, connect_timeout)
        #: This server's id among those on the database (`running_servers`).
        self.server_id = new_server_id()
        self._presence: Presence | None = None

    @property
    def dsn(self) -> str:
        """The connection string this store was opened with."""
        return self._dsn

    # units of work ---------------------------------------------------------

    async def run(
        self, fn: Callable[[Tx], T], *, quick: bool = False, reads: Reads | None = None
    ) -> T:
        """Run `fn` in one transaction on a worker thread; commit unless it raises.

        `reads`: what `fn` reads first (an agent, its leases, a task or the
        first claim candidate), read with BEGIN, in its round trip.
        """
        return await self._submit(self._run_sync, fn, reads)

    async def read(self, fn: Callable[[Tx], T], *, quick: bool = False) -> T:
        """Run a read-only `fn` in one transaction; a `quick` one statement
        by statement instead (`tenure.store.postgres_lookup`).

        Not declared READ ONLY: readers may still lock rows (`due_hooks`), and
        on PostgreSQL a reader does not block writers anyway.
        """
        if quick:
            return await self._submit(self._lookup_sync, fn)
        return await self._submit(self._run_sync, fn)

    async def _submit(self, call: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, call, *args)

    def _run_sync(self, fn: Callable[[Tx], T], reads: Reads | None = None) -> T:
        stale = 0
        while True:
            try:
                return self._attempt(fn, reads)
            except _StaleConnection as exc:
                # A pooled connection died while idle (a server restart, a
                # terminated backend). Nothing of `fn` ran: try another one;
                # after as many as the pool holds, the database is down.
                stale += 1
                if stale > self._max_size:
                    raise exc.error from exc

    def _attempt(self, fn: Callable[[Tx], T], reads: Reads | None) -> T:
        conn = self._getconn()
        try:
            try:
                tx = self._begin(conn, reads)
            except StoreUnavailable as err:
                if conn.broken or conn.closed:
                    raise _StaleConnection(err) from err
                raise
            try:
                result = fn(tx)
                # The deferred writes and COMMIT, in one round trip; a
                # statement that fails there aborts the transaction whole.
                tx.commit()
            except BaseException:
                self._rollback(conn)
                raise
            return result
        finally:
            self._pool.putconn(conn)

    def _lookup_sync(self, fn: Callable[[Tx], T]) -> T:
        """A quick read: `fn` on a `LookupTx`, each statement its own round trip."""

        def lookup(conn: psycopg.Connection[Any]) -> T:
            tx = LookupTx(conn, self._prepared(conn))
            try:
                result = fn(tx)
            finally:
                if tx.failure is not None:
                    self._rollback(conn)
            if tx.failure is not None:
                # `fn` swallowed a failed statement: its answer may be wrong.
                raise tx.failure
            return result

        return self._on_a_live_connection(lookup)

    def _on_a_live_connection(self, read: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`read` on a pooled connection, and again on another if the one it
        had was found dead: a read has no effect, so it may run twice. After
        as many dead connections as the pool holds, the database is down and
        the last error stands."""
        for attempt in range(self._max_size + 1):
            conn = self._getconn()
            try:
                return read(conn)
            except (psycopg.Error, StoreUnavailable):
                if attempt == self._max_size or not (conn.broken or conn.closed):
                    raise
            finally:
                self._pool.putconn(conn)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _prepared(self, conn: psycopg.Connection[Any]) -> Prepared:
        """Which of `postgres_pipe`'s statements `conn` holds."""
        statements = self._statements.get(conn)
        if statements is None:
            statements = self._statements[conn] = Prepared()
        return statements

    def _getconn(self) -> psycopg.Connection[Any]:
        try:
            conn: psycopg.Connection[Any] = self._pool.getconn(timeout=self._timeout)
        except psycopg.Error as exc:
            raise StoreUnavailable(
                "no PostgreSQL connection could be had", details={"reason": str(exc)[:300]}
            ) from exc
        return conn

    def _begin(self, conn: psycopg.Connection[Any], reads: Reads | None = None) -> PostgresTx:
        """BEGIN, with the reads that come with it, in one round trip: the
        database's clock (unless one was injected), then what `reads` names
        (`pgsql.SQL_AGENT_AND_LEASES`, then `SQL_TASK_LOCKED`,
        `SQL_FIRST_CANDIDATE` or both)."""
        statements = self._prepared(conn)
        steps: list[Step] = [(_BEGIN, None)]
        if self._clock is None:
            steps.append((_NOW, ()))
        clock_steps = len(steps)
        if reads is not None:
            steps.extend(_read_steps(reads))
        try:
            results = self._begin_steps(conn, statements, steps)
            if self._clock is None:
                now: datetime = statements.rows(conn, results[1])[0][0]
            else:
                now = self._clock.now()
            found = [statements.rows(conn, result) for result in results[clock_steps:]]
        except psycopg.Error as exc:
            raise _translated(exc) from exc
        shard = (conn.info.backend_pid or 0) % COUNTER_SHARDS
        tx = PostgresTx(conn, _utc(now), shard, causal=self._clock is None, statements=statements)
        if reads is not None:
            tx.prefetched(reads, *found)
        return tx

    def _begin_steps(
        self, conn: psycopg.Connection[Any], statements: Prepared, steps: list[Step]
    ) -> list[pq.abc.PGresult]:
        """Run BEGIN's steps; once more if a statement of ours was deallocated
        behind the store's back (`postgres_pipe` then reads them again). On
        failure the connection is left idle (BEGIN may have run)."""
        try:
            return postgres_pipe.execute(conn, statements, steps)
        except psycopg.errors.InvalidSqlStatementName:
            self._rollback(conn)
        except psycopg.Error:
            self._rollback(conn)
            raise
        try:
            return postgres_pipe.execute(conn, statements, steps)
        except psycopg.Error:
            self._rollback(conn)
            raise

    def _rollback(self, conn: psycopg.Connection[Any]) -> None:
        statements = self._statements.get(conn)
        if statements is not None:
            statements.forget()
        if conn.closed or conn.broken:
            return
        try:
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
        except psycopg.Error:
            log.debug("rollback failed; the pool will discard the connection", exc_info=True)

    # events ----------------------------------------------------------------

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
        """Events with id > `after_id`, in id order, filtered as asked."""
        sql = EVENT_SELECT + " WHERE id > %s"
        params: list[Any] = [after_id]
        for column, value in (("board_id", board_id), ("task_id", task_id), ("agent_id", agent_id)):
            if value is not None:
                sql += f" AND {column} = %s"
                params.append(value)
        if since is not None:
            sql += " AND at >= %s"
            params.append(since)
        sql += " ORDER BY id LIMIT %s"
        params.append(limit)
        return await self._submit(self._select_events, sql, params)

    def _select_events(self, sql: str, params: list[Any]) -> list[StoredEvent]:
        found = self._outside_transaction(lambda conn: conn.execute(sql, params).fetchall())
        return [stored_event(row) for row in found]

    def _outside_transaction(self, read: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run one read-only statement in autocommit (no BEGIN/COMMIT round
        trips), on another connection if the first was found dead."""
        try:
            return self._on_a_live_connection(read)
        except psycopg.Error as exc:
            raise _translated(exc) from exc

    async def wait_for_events(self, after_id: int, timeout: float) -> None:
        """Return once an event with id > `after_id` may exist, or after `timeout` s."""
        if self._closed:
            raise StoreUnavailable("the store is closed")
        await self._follower.wait(after_id, timeout)

    async def listen(self, timeout: float = 5.0) -> bool:
        """Start following the event log now; True once LISTEN is in place.

        `wait_for_events` starts the listener by itself; calling this first
        (an SSE endpoint, a test) makes sure the first wait already hears
        NOTIFY rather than only the catch-up read.
        """
        return await self._follower.listen(timeout)

    # life ------------------------------------------------------------------

    async def sole_server(self, timeout: float = 5.0) -> bool:
        """Join the servers running on this database, for as long as this
        store is open (`tenure.store.postgres_presence`), and say whether
        this one is the only one. False when that cannot be told in time."""
        presence = self._join_presence()
        if not await asyncio.to_thread(presence.held.wait, timeout):
            return False
        count: int = await self._submit(self._outside_transaction, holders)
        return count == 1

    async def running_servers(self) -> set[int] | None:
        """The ids of the servers running on this database, this one's
        included; None while this one does not hold its own presence lock
        (then nothing can be told: it may have just lost its connection)."""
        presence = self._join_presence()
        if not presence.held.is_set():
            return None
        ids: set[int] = await self._submit(self._outside_transaction, running)
        # Held a moment ago: if it was lost meanwhile, the answer may miss some.
        return ids if presence.held.is_set() and self.server_id in ids else None

    def _join_presence(self) -> Presence:
        if self._closed:
            # A closed store's presence has stopped: never start it again.
            raise StoreUnavailable("the store is closed")
        if self._presence is None:
            self._presence = Presence(self._dsn, self._connect_timeout, self.server_id)
            self._presence.start()
        return self._presence

    def measure_clock_skew(self) -> float:
        """Database clock minus `process_clock`, in seconds (blocking; at open)."""
        with self._pool.connection(timeout=self._timeout) as conn:
            before = self._process_clock.now()
            row = conn.execute("SELECT clock_timestamp()").fetchone()
            after = self._process_clock.now()
        assert row is not None
        db_now: datetime = row[0]
        local = before + (after - before) / 2
        self.clock_skew_s = (db_now - local).total_seconds()
        if abs(self.clock_skew_s) > _SKEW_WARNING_S:
            log.warning(
                "this server's clock differs from the database's by %+.1f s; leases are "
                "judged on the database's clock",
                -self.clock_skew_s,
            )
        return self.clock_skew_s

    async def schema_version(self) -> int:
        """The schema version of the open database."""
        return await self._submit(self._schema_version_sync)

    def _schema_version_sync(self) -> int:
        return self._outside_transaction(schema_version_on)

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the listener, close the pool and the worker threads."""
        if self._closed:
            return
        self._closed = True
        self._follower.stop()
        await asyncio.get_running_loop().run_in_executor(None, self._close_sync)

    def _close_sync(self) -> None:
        self._follower.join()
        if self._presence is not None:
            self._presence.stop()
        self._executor.shutdown(wait=True)
        self._pool.close()
        self._follower.release()


class _StaleConnection(Exception):
    """BEGIN failed on a pooled connection that turned out to be dead."""

    def __init__(self, error: StoreUnavailable) -> None:
        super().__init__(error.message)
        self.error = error


def _read_steps(reads: Reads) -> list[Step]:
    """The statements that read what `reads` names, in the order a unit reads it."""
    board, agent = reads.board_id, reads.agent_id
    steps: list[Step] = [(pgsql.SQL_AGENT_AND_LEASES, (board, agent))]
    if reads.task_id is not None:
        steps.append((pgsql.SQL_TASK_LOCKED, (board, reads.task_id)))
    if reads.claim_below is not None:
        steps.append((pgsql.SQL_FIRST_CANDIDATE, (board, reads.claim_below, board, agent)))
    return steps


def _translated(exc: psycopg.Error) -> TenureError:
    err = translate(exc)
    return err if err is not None else TenureError(f"database error: {exc}")


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC (the driver gives timestamptz in the session's zone)."""
    result = decode_time(moment)
    assert result is not None
    return result


async def open_postgres(
    dsn: str,
    clock: Clock | None = None,
    *,
    min_size: int = 1,
    max_size: int = 10,
    migrate: bool = True,
    process_clock: Clock | None = None,
    timeout: float = 5.0,
    connect_timeout: float = 5.0,
) -> PostgresStore:
    """Open the PostgreSQL store at `dsn`.

    - `clock`: None to judge time on the database's clock (production);
      a `FakeClock` for tests and the lab.
    - `min_size`/`max_size`: the connection pool (and worker threads).
    - `migrate`: apply missing migrations (True), or refuse a database that
      needs any with `SchemaOutdated`, naming `tenure db migrate` (False). A
      database newer than this code is refused either way (`SchemaTooNew`).
    - `process_clock`: this server's own clock, only to report its skew.
    - `timeout`: seconds to wait for a pooled connection before
      `StoreUnavailable`; `connect_timeout`: for a new connection.

    A database that cannot be reached raises `StoreUnavailable`.
    """
    if min_size < 1 or max_size < min_size:
        raise ValueError("need 1 <= min_size <= max_size")

    def prepare() -> PostgresStore:
        # One direct connection first: an unreachable server fails fast here
        # (the pool would keep retrying in the background until `timeout`).
        with connect(dsn, connect_timeout) as conn:
            try:
                migrate_on(conn, apply=migrate)
            except psycopg.Error as exc:
                raise _translated(exc) from exc
        pool = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs=connect_kwargs(dsn, connect_timeout),
            timeout=timeout,
            open=False,
            name="tenure",
        )
        try:
            pool.open(wait=True, timeout=max(timeout, connect_timeout))
        except psycopg.Error as exc:
            pool.close()
            raise _translated(exc) from exc
        store = PostgresStore(
            dsn,
            pool,
            clock=clock,
            process_clock=process_clock or SystemClock(),
            workers=max_size,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )
        try:
            store.measure_clock_skew()
        except psycopg.Error as exc:
            pool.close()
            raise _translated(exc) from exc
        return store

    return await asyncio.get_running_loop().run_in_executor(None, prepare)


if TYPE_CHECKING:
    from tenure.store.base import Store

    def _conforms(store: PostgresStore, tx: PostgresTx) -> tuple[Store, Tx]:
        """Never called: mypy proves here that these satisfy the protocols."""
        a: Store = store
        b: Tx = tx
        return a, b
