"""What only the PostgreSQL store has to prove: several servers on one database.

The contract suite (tests/contract) runs every store operation on both
backends; these tests cover what exists only with PostgreSQL: the database's
clock deciding for servers whose clocks disagree, followers on one replica
woken by events written through another, the event log's id order under
concurrent appenders, a SIGKILLed writer, a database that is down, and
schema versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.support.pg import (
    empty_postgres_dsn,
    fresh_postgres_dsn,
    open_into,
    terminate_sessions,
)

from tenure.clock import FakeClock, OffsetClock
from tenure.core.errors import Conflict, InvalidInput, StoreUnavailable
from tenure.core.model import (
    UTC,
    Agent,
    Board,
    Event,
    EventType,
    Lease,
    Task,
    TaskStatus,
)
from tenure.store import migrate, postgres_pipe
from tenure.store import postgres_sql as pgsql
from tenure.store.base import ClaimFilter, Reads, Tx
from tenure.store.postgres import (
    PostgresStore,
    TransientFailure,
    migrate_postgres,
    open_postgres,
    postgres_schema_version,
)
from tenure.store.sqlite import migrate_file

pytestmark = pytest.mark.postgres

BOARD = "b1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def dsn() -> str:
    return fresh_postgres_dsn()


def _only(task: Task | None) -> Task:
    assert task is not None
    return task


def _board_with_tasks(count: int, agents: int = 0) -> Callable[[Tx], None]:
    def unit(tx: Tx) -> None:
        tx.insert_board(Board(id=BOARD, name="Board", created_at=tx.now))
        for i in range(agents):
            tx.insert_agent(
                Agent(
                    board_id=BOARD, id=f"a{i}", name=f"a{i}", token_hash=f"h{i}", created_at=tx.now
                )
            )
        for i in range(count):
            tx.insert_task(
                Task(
                    board_id=BOARD, id=f"t{i:03d}", title="t", created_at=tx.now, updated_at=tx.now
                )
            )

    return unit


def _lease(task_id: str, now: datetime, recover_in: timedelta) -> Lease:
    return Lease(
        board_id=BOARD,
        task_id=task_id,
        agent_id="a0",
        epoch=1,
        assigned_at=now,
        expires_at=now + recover_in - timedelta(seconds=60),
        grace_s=60.0,
        recover_after=now + recover_in,
        last_renewed_at=now,
        last_signal_at=now,
    )


# (a) clock skew --------------------------------------------------------------------


async def test_a_unit_that_reads_a_row_written_after_it_began_takes_the_later_time(
    dsn: str, stores: list[PostgresStore]
) -> None:
    """READ COMMITTED shows a unit rows committed after its BEGIN; its `now` then
    moves up to the write time it read, so nothing it stamps comes before what
    it acts on (a claim before the recovery it claims, say)."""
    store = await open_into(stores, dsn)
    await store.run(_board_with_tasks(1))
    started, go_on = threading.Event(), threading.Event()

    def slow(tx: Tx) -> tuple[datetime, datetime, datetime]:
        begun = tx.now
        started.set()
        go_on.wait(10)
        task = tx.get_task(BOARD, "t000")
        assert task is not None
        return begun, task.updated_at, tx.now

    pending = asyncio.ensure_future(store.run(slow))
    assert await asyncio.to_thread(started.wait, 10)

    def write_later(tx: Tx) -> datetime:
        task = tx.get_task(BOARD, "t000", for_update=True)
        assert task is not None
        tx.update_task(replace(task, title="changed", updated_at=tx.now))
        return tx.now

    written_at = await store.run(write_later)
    go_on.set()
    begun, seen, moved_to = await pending
    assert begun < written_at == seen == moved_to
    # A time beyond the reach of a race (a clock problem) does not move it.
    far = written_at + timedelta(minutes=10)
    await store.run(
        lambda tx: tx.update_task(replace(_only(tx.get_task(BOARD, "t000")), updated_at=far))
    )
    assert await store.run(lambda tx: (tx.get_task(BOARD, "t000"), tx.now)[1]) < far


async def test_servers_with_clocks_ten_minutes_apart_judge_expiry_identically(
    dsn: str, stores: list[PostgresStore]
) -> None:
    ahead = OffsetClock(timedelta(minutes=5))
    behind = OffsetClock(timedelta(minutes=-5))
    east = await open_into(stores, dsn, process_clock=ahead)
    west = await open_into(stores, dsn, process_clock=behind)
    # Each store measured its own server's clock against the database's:
    # the two servers really disagree by ten minutes.
    assert east.clock_skew_s == pytest.approx(-300, abs=2)
    assert west.clock_skew_s == pytest.approx(300, abs=2)

    await east.run(_board_with_tasks(2))

    def lease_two_tasks(tx: Tx) -> None:
        # One lease due two minutes from the database's now, one overdue.
        tx.insert_lease(_lease("t000", tx.now, timedelta(minutes=2)))
        tx.insert_lease(_lease("t001", tx.now, timedelta(seconds=-1)))

    await east.run(lease_two_tasks)

    def judge(tx: Tx) -> tuple[datetime, list[str]]:
        return tx.now, [lease.task_id for lease in tx.due_leases(tx.now, 10)]

    (east_now, east_due), (west_now, west_due) = await asyncio.gather(
        east.run(judge), west.run(judge)
    )
    assert east_due == west_due == ["t001"]
    assert abs((east_now - west_now).total_seconds()) < 5

    # The control: had each server judged on its own clock, they would
    # disagree (the east one would recover a lease the west one keeps).
    east_own = await open_into(stores, dsn, clock=ahead)
    west_own = await open_into(stores, dsn, clock=behind)
    assert (await east_own.run(judge))[1] == ["t001", "t000"]
    assert (await west_own.run(judge))[1] == []


async def test_an_injected_clock_replaces_the_database_clock(
    dsn: str, stores: list[PostgresStore]
) -> None:
    clock = FakeClock(T0)
    store = await open_into(stores, dsn, clock=clock)
    assert await store.run(lambda tx: tx.now) == T0
    clock.advance(90)
    assert await store.read(lambda tx: tx.now) == T0 + timedelta(seconds=90)


async def test_the_dsns_own_options_are_kept(dsn: str, stores: list[PostgresStore]) -> None:
    store = await open_into(stores, f"{dsn} options='-c statement_timeout=4321'")
    with store._pool.connection() as conn:  # the pool's settings, as units of work get them
        settings = conn.execute(
            "SELECT current_setting('statement_timeout'), current_setting('TimeZone')"
        ).fetchone()
    assert settings == ("4321ms", "UTC")


# (b) followers ---------------------------------------------------------------------


def _append(task_id: str | None = None) -> Callable[[Tx], int]:
    def unit(tx: Tx) -> int:
        return tx.append_event(
            Event(EventType.TASK_CREATED, BOARD, tx.now, task_id=task_id, data={"n": 1})
        )

    return unit


async def test_an_event_written_through_one_store_wakes_a_follower_on_another(
    dsn: str, stores: list[PostgresStore]
) -> None:
    writer = await open_into(stores, dsn)
    follower = await open_into(stores, dsn)
    await writer.run(_board_with_tasks(1))
    assert await follower.listen(timeout=10)

    for round_ in range(2):
        after = max((event.id for event in await follower.events_after(0)), default=0)
        waiting = asyncio.create_task(follower.wait_for_events(after, timeout=60))
        await asyncio.sleep(0)  # let the follower register before the write
        assert not waiting.done()
        event_id = await writer.run(_append(f"t{round_:03d}"))
        # Woken by NOTIFY, long before its 60 s timeout.
        await asyncio.wait_for(waiting, timeout=10)
        seen = await follower.events_after(after)
        assert [(event.id, event.task_id) for event in seen] == [(event_id, f"t{round_:03d}")]


async def test_a_follower_whose_connection_died_hears_what_was_written_meanwhile(
    dsn: str, stores: list[PostgresStore]
) -> None:
    """The listener connects again (after a pause) and reads the highest id:
    a write made while it was not listening still wakes its waiters."""
    writer = await open_into(stores, dsn)
    follower = await open_into(stores, dsn)
    await writer.run(_board_with_tasks(1))
    assert await follower.listen(timeout=10)
    terminate_sessions(dsn)  # the listener's connection too
    event_id = await writer.run(_append("t000"))
    await asyncio.wait_for(follower.wait_for_events(event_id - 1, timeout=60), timeout=20)
    assert await follower.listen(timeout=10)


async def test_a_follower_started_after_the_write_returns_at_once(
    dsn: str, stores: list[PostgresStore]
) -> None:
    writer = await open_into(stores, dsn)
    follower = await open_into(stores, dsn)
    await writer.run(_board_with_tasks(0))
    await writer.run(_append())
    await asyncio.wait_for(follower.wait_for_events(0, timeout=60), timeout=10)
    # and a follower already up to date waits out its timeout
    await asyncio.wait_for(follower.wait_for_events(1, timeout=0.05), timeout=10)


async def test_event_ids_become_visible_in_order_under_concurrent_appenders(
    dsn: str, stores: list[PostgresStore]
) -> None:
    store = await open_into(stores, dsn, max_size=3)
    await store.run(_board_with_tasks(0))
    release = threading.Event()

    def slow_appender(tx: Tx) -> int:
        event_id = tx.append_event(Event(EventType.TASK_CREATED, BOARD, tx.now, data={"who": 1}))
        release.wait(30)  # hold the transaction open, its event uncommitted
        return event_id

    first = asyncio.create_task(store.run(slow_appender))
    await _until_advisory_lock_held(dsn)
    second = asyncio.create_task(store.run(_append()))
    await _until_advisory_lock_awaited(dsn)
    # The second appender queues behind the first: while the first is open,
    # a follower sees neither event, never the later id without the earlier.
    assert await store.events_after(0) == []
    release.set()
    first_id, second_id = await asyncio.gather(first, second)
    assert first_id < second_id
    assert [event.id for event in await store.events_after(0)] == [first_id, second_id]


async def _poll(dsn: str, query: str) -> None:
    """Wait (bounded) until `query` returns true: a state, not a duration."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(1000):
            row = conn.execute(query).fetchone()
            if row and row[0]:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"never true: {query}")


async def _until_advisory_lock_held(dsn: str) -> None:
    await _poll(dsn, "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND granted")


async def _until_advisory_lock_awaited(dsn: str) -> None:
    await _poll(
        dsn, "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    )


# (c) crash ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_sigkilled_writer_loses_no_acknowledged_operation(
    dsn: str, stores: list[PostgresStore]
) -> None:
    agents = 6
    setup = await open_into(stores, dsn)
    await setup.run(_board_with_tasks(400, agents=agents))

    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("pg_crash_child.py")),
        dsn,
        str(agents),
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    acks: list[list[str]] = []
    # Kill after a random number of acknowledgements (not after a duration):
    # the child is then somewhere inside its next units of work.
    kill_after = random.Random().randint(100, 600)
    try:
        line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
        assert line == b"ready\n"
        while len(acks) < kill_after:
            line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
            assert line.endswith(b"\n"), "the child stopped before it was killed"
            acks.append(line.decode().split())
    finally:
        child.kill()  # SIGKILL
        rest = await child.stdout.read()
        await child.wait()
    for line in rest.decode().splitlines(keepends=True):
        if line.endswith("\n") and line.split()[0] in {"claim", "renew", "done"}:
            acks.append(line.split())
    assert child.returncode == -9

    reopened = await open_into(stores, dsn)

    def load(tx: Tx) -> tuple[list[Task], dict[tuple[str, int], Lease]]:
        tasks = tx.list_tasks(BOARD)
        leases = {
            (lease.task_id, lease.epoch): lease
            for task in tasks
            for lease in tx.lease_history(BOARD, task.id)
        }
        return tasks, leases

    tasks, leases = await reopened.read(load)
    for word, agent_id, task_id, epoch, *rest_ in acks:
        lease = leases.get((task_id, int(epoch)))
        assert lease is not None, f"acknowledged {word} of {task_id}/{epoch} is missing"
        assert lease.agent_id == agent_id
        if word in {"renew", "done"}:
            assert lease.version >= int(rest_[0]), f"acknowledged {word} lost: {lease}"
        if word == "done":
            assert lease.ended_at is not None
    _assert_tasks_and_leases_agree(tasks, list(leases.values()))


def _assert_tasks_and_leases_agree(tasks: list[Task], leases: list[Lease]) -> None:
    live = [lease for lease in leases if lease.live]
    by_task = {task.id: task for task in tasks}
    for task in tasks:
        mine = [lease for lease in live if lease.task_id == task.id]
        if task.status is TaskStatus.IN_PROGRESS:
            assert len(mine) == 1, f"{task.id} in progress with {len(mine)} live leases"
            assert (mine[0].agent_id, mine[0].epoch) == (task.assignee, task.epoch)
        else:
            assert mine == [], f"{task.id} is {task.status} with a live lease"
    for lease in live:
        assert by_task[lease.task_id].status is TaskStatus.IN_PROGRESS


# deadlocks and swallowed failures ----------------------------------------------------


async def test_a_deadlock_is_a_transient_conflict_for_one_side_and_the_other_commits(
    dsn: str, stores: list[PostgresStore]
) -> None:
    store = await open_into(stores, dsn, max_size=3)
    await store.run(_board_with_tasks(2))
    both_hold_one = threading.Barrier(2, timeout=30)

    def lock_in_order(first: str, second: str) -> Callable[[Tx], str]:
        def unit(tx: Tx) -> str:
            tx.get_task(BOARD, first, for_update=True)
            both_hold_one.wait()
            tx.get_task(BOARD, second, for_update=True)  # each waits for the other
            tx.append_event(Event(EventType.TASK_UPDATED, BOARD, tx.now, task_id=first))
            return first

        return unit

    outcomes = await asyncio.gather(
        store.run(lock_in_order("t000", "t001")),
        store.run(lock_in_order("t001", "t000")),
        return_exceptions=True,
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failures) == 1, outcomes
    assert isinstance(failures[0], TransientFailure)
    assert isinstance(failures[0], Conflict) and failures[0].code == "conflict"
    (winner,) = [o for o in outcomes if isinstance(o, str)]
    assert [event.task_id for event in await store.events_after(0)] == [winner]


async def test_a_unit_of_work_that_swallows_a_failed_statement_is_not_committed(
    dsn: str, stores: list[PostgresStore]
) -> None:
    store = await open_into(stores, dsn)
    await store.run(_board_with_tasks(1))

    def swallows(tx: Tx) -> str:
        tx.append_event(Event(EventType.TASK_UPDATED, BOARD, tx.now))
        task = tx.get_task(BOARD, "t000")
        assert task is not None
        with contextlib.suppress(InvalidInput):
            tx.update_task(replace(task, title=None))  # type: ignore[arg-type]
        return "committed?"

    with pytest.raises(InvalidInput):
        await store.run(swallows)
    assert await store.events_after(0) == []
    (task,) = await store.read(lambda tx: tx.list_tasks(BOARD))
    assert task.title == "t"


# (d) the database is down ---------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_opening_a_store_on_a_closed_port_is_store_unavailable() -> None:
    dsn = f"host=127.0.0.1 port={_closed_port()} user=postgres dbname=tenure"
    with pytest.raises(StoreUnavailable) as caught:
        await open_postgres(dsn, connect_timeout=2)
    assert caught.value.code == "store_unavailable"
    assert not isinstance(caught.value, psycopg.Error)


async def test_killed_connections_are_replaced_without_the_caller_noticing(
    dsn: str, stores: list[PostgresStore]
) -> None:
    store = await open_into(stores, dsn, min_size=2)
    await store.run(_board_with_tasks(1))
    terminate_sessions(dsn)
    assert [task.id for task in await store.run(lambda tx: tx.list_tasks(BOARD))] == ["t000"]
    terminate_sessions(dsn)
    assert await store.events_after(0) == []
    terminate_sessions(dsn)
    assert await store.schema_version() == migrate.latest_version("postgres")


async def test_a_database_that_goes_down_gives_store_unavailable_and_nothing_half_written(
    dsn: str, stores: list[PostgresStore]
) -> None:
    store = await open_into(stores, dsn, timeout=1.0, connect_timeout=1.0)
    await store.run(_board_with_tasks(1))
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    terminate_sessions(dsn)
    try:
        with pytest.raises(StoreUnavailable):
            await store.run(_append())
        with pytest.raises(StoreUnavailable):
            await store.events_after(0)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    # Back up: the store recovers by itself (once the pool's reconnection
    # backoff comes round), and the failed write left nothing.
    for _ in range(60):
        try:
            events = await store.events_after(0)
            break
        except StoreUnavailable:
            continue  # each try waits out the 1 s pool timeout
    else:
        raise AssertionError("the store never came back")
    assert events == []


async def test_a_write_cut_off_mid_transaction_keeps_nothing(
    dsn: str, stores: list[PostgresStore]
) -> None:
    store = await open_into(stores, dsn)
    await store.run(_board_with_tasks(1))

    def half_written(tx: Tx) -> None:
        tx.append_event(Event(EventType.TASK_CREATED, BOARD, tx.now))
        terminate_sessions(dsn)  # the connection dies inside the transaction
        tx.append_event(Event(EventType.TASK_CREATED, BOARD, tx.now))

    with pytest.raises(StoreUnavailable):
        await store.run(half_written)
    assert await store.events_after(0) == []


# (e) schema versions ---------------------------------------------------------------------


async def test_a_database_one_migration_behind_is_refused_until_migrated() -> None:
    dsn = empty_postgres_dsn()
    head = migrate.latest_version("postgres")
    migrate_postgres(dsn, target=head - 1)
    assert postgres_schema_version(dsn) == head - 1

    with pytest.raises(migrate.SchemaOutdated) as caught:
        await open_postgres(dsn, migrate=False)
    assert "tenure db migrate" in caught.value.message
    assert caught.value.code == "store_unavailable"
    assert postgres_schema_version(dsn) == head - 1  # refusing changed nothing

    store = await open_postgres(dsn, migrate=True)
    try:
        assert await store.schema_version() == head
    finally:
        await store.close()
    # Up to date now: opening without migrating is fine.
    store = await open_postgres(dsn, migrate=False)
    await store.close()


async def test_a_database_newer_than_the_code_is_refused(dsn: str) -> None:
    head = migrate.latest_version("postgres")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE meta SET value = %s WHERE key = %s", (str(head + 1), migrate.VERSION_KEY)
        )
    for apply in (True, False):
        with pytest.raises(migrate.SchemaTooNew) as caught:
            await open_postgres(dsn, migrate=apply)
        assert "newer" in caught.value.message
    assert postgres_schema_version(dsn) == head + 1


def _schema_of(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    """Tables, columns, indexes and constraints of the public schema."""
    queries = {
        "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default, "
        "is_identity FROM information_schema.columns WHERE table_schema = 'public' "
        "ORDER BY table_name, column_name",
        "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = 'public' ORDER BY indexname",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY conname",
    }
    with psycopg.connect(dsn) as conn:
        return {name: conn.execute(query).fetchall() for name, query in queries.items()}


def test_migrating_one_version_at_a_time_equals_migrating_at_once() -> None:
    head = migrate.latest_version("postgres")
    stepwise, at_once = empty_postgres_dsn(), empty_postgres_dsn()
    for version in range(1, head + 1):
        assert migrate_postgres(stepwise, target=version) == [version]
    assert migrate_postgres(at_once) == list(range(1, head + 1))
    assert migrate_postgres(at_once) == []  # nothing left to do
    schema = _schema_of(at_once)
    assert schema["columns"] and schema["indexes"]
    assert _schema_of(stepwise) == schema


def test_the_postgres_schema_has_the_sqlite_schemas_tables_columns_and_indexes(
    tmp_path: Path,
) -> None:
    sqlite_file = tmp_path / "schema.db"
    migrate_file(sqlite_file)
    with closing(sqlite3.connect(sqlite_file)) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        sqlite_columns = {
            (table, row[1])
            for table in tables
            for row in conn.execute(f"PRAGMA table_info({table})")
        }
        sqlite_indexes = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' "
                "AND name NOT LIKE 'sqlite_autoindex_%'"
            )
        }
    pg_schema = _schema_of(fresh_postgres_dsn())
    pg_columns = {(row[0], row[1]) for row in pg_schema["columns"]}
    # The one deliberate difference: PostgreSQL shards counters per connection.
    assert pg_columns - sqlite_columns == {("counters", "shard")}
    assert sqlite_columns - pg_columns == set()
    # Every named index on both (PostgreSQL also names its key indexes).
    pg_indexes = {row[1] for row in pg_schema["indexes"] if not row[1].endswith(("_pkey", "_key"))}
    assert pg_indexes == sqlite_indexes


def _count_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement units send through a psycopg cursor from now on (not
    those sent with BEGIN or COMMIT)."""
    from tenure.store.postgres_tx import PostgresTx

    sent: list[str] = []
    real = PostgresTx._exec

    def counting(self: PostgresTx, sql: str, params: Any = ()) -> Any:
        sent.append(sql)
        return real(self, sql, params)

    monkeypatch.setattr(PostgresTx, "_exec", counting)
    return sent


async def test_a_unit_that_names_its_agent_reads_it_and_its_leases_with_begin(
    stores: list[PostgresStore], dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent and its leases come with BEGIN's round trip: the unit's own
    reads of them send no statement; with the database's clock as well."""
    store = await open_into(stores, dsn)
    await store.run(_board_with_tasks(2, agents=1))
    await store.run(lambda tx: tx.insert_lease(_lease("t000", tx.now, timedelta(seconds=60))))
    sent = _count_statements(monkeypatch)

    def unit(tx: Tx) -> tuple[Agent | None, list[Lease]]:
        me = tx.get_agent(BOARD, "a0")
        assert me is not None
        live, _ = tx.leases_of_agent(BOARD, "a0", me.last_seen_at or me.created_at)
        return me, live

    me, live = await store.run(unit, reads=Reads(BOARD, "a0"))
    assert sent == [] and me is not None and [x.task_id for x in live] == ["t000"]
    plain = await store.run(unit)
    assert len(sent) == 2 and plain == (me, live)


async def test_a_units_task_or_first_claim_candidate_comes_with_begin(
    stores: list[PostgresStore], dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An act's task, or a claim's first candidate, is read (and locked) with
    BEGIN's round trip: the unit's own read of it sends no statement. A claim
    by an agent holding `claim_below` live leases or more reads nothing with
    BEGIN and asks the database as before; so does a read of another task."""
    store = await open_into(stores, dsn)
    await store.run(_board_with_tasks(2, agents=1))
    sent = _count_statements(monkeypatch)

    def first(tx: Tx) -> list[str]:
        return [t.id for t in tx.claim_candidates(ClaimFilter(BOARD, limit=1))]

    def act(tx: Tx) -> str | None:
        task = tx.get_task(BOARD, "t001", for_update=True)
        return None if task is None else task.id

    assert await store.run(first, reads=Reads(BOARD, "a0", claim_below=1)) == ["t000"]
    assert await store.run(act, reads=Reads(BOARD, "a0", task_id="t001")) == "t001"
    assert sent == []
    assert await store.run(act, reads=Reads(BOARD, "a0", task_id="t000")) == "t001"
    assert len(sent) == 1
    await store.run(lambda tx: tx.insert_lease(_lease("t000", tx.now, timedelta(seconds=60))))
    sent.clear()
    # a0 now holds one live lease: with claim_below=1 BEGIN reads no candidate.
    assert await store.run(first, reads=Reads(BOARD, "a0", claim_below=1)) == ["t000"]
    assert len(sent) == 1
    assert await store.run(first, reads=Reads(BOARD, "a0", claim_below=2)) == ["t000"]
    assert len(sent) == 1


async def test_an_act_then_a_claim_reads_the_task_and_the_candidate_with_begin(
    stores: list[PostgresStore], dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An act that may be followed by a claim (a report with `claim_next`)
    reads its task and the first claim candidate with BEGIN. Writing the act's
    task keeps the candidate good when that task leaves `todo`; writing it
    back to `todo`, or writing the candidate itself, sends the claim to the
    database."""
    store = await open_into(stores, dsn)
    await store.run(_board_with_tasks(3, agents=1))
    sent = _count_statements(monkeypatch)
    both = Reads(BOARD, "a0", task_id="t002", claim_below=1)

    def act_then_claim(status: TaskStatus, written: str = "t002") -> Callable[[Tx], list[str]]:
        def unit(tx: Tx) -> list[str]:
            task = tx.get_task(BOARD, written, for_update=True)
            assert task is not None
            tx.update_task(replace(task, status=status))
            return [t.id for t in tx.claim_candidates(ClaimFilter(BOARD, limit=1))]

        return unit

    def reads_sent() -> int:
        found = [sql for sql in sent if sql.lstrip().startswith("SELECT")]
        sent.clear()
        return len(found)

    assert await store.run(act_then_claim(TaskStatus.DONE), reads=both) == ["t000"]
    assert reads_sent() == 0
    # t002 back to todo: it may now come first (recovered tasks do), so ask.
    assert await store.run(act_then_claim(TaskStatus.TODO), reads=both) == ["t000"]
    assert reads_sent() == 1
    # Writing the candidate itself (read apart): it is no longer what BEGIN read.
    in_progress = act_then_claim(TaskStatus.IN_PROGRESS, written="t000")
    assert await store.run(in_progress, reads=both) == ["t001"]
    assert reads_sent() == 2


async def test_the_read_with_begin_survives_its_statement_being_deallocated(
    stores: list[PostgresStore], dsn: str
) -> None:
    """The reads sent with BEGIN are statements the store prepared: a
    rollback may deallocate them (psycopg does, with all of a connection's
    statements, when it holds some of its own) or leave them, and anyone may
    DEALLOCATE one, or all; each time the next call prepares them again, and
    answers the same."""
    store = await open_into(stores, dsn, max_size=1)  # one connection: every unit shares it
    await store.run(_board_with_tasks(1, agents=1))

    def reads(tx: Tx) -> tuple[Agent | None, Task | None]:
        return tx.get_agent(BOARD, "a0"), tx.get_task(BOARD, "t000", for_update=True)

    def fails(tx: Tx) -> None:
        tx.get_agent(BOARD, "a0")
        raise InvalidInput("refused")

    def deallocates(tx: Tx) -> None:
        name = postgres_pipe.statement(pgsql.SQL_AGENT_AND_LEASES)[0].decode()
        tx._exec(f"DEALLOCATE {name}")  # type: ignore[attr-defined]

    def deallocates_all(tx: Tx) -> None:
        tx._exec("DEALLOCATE ALL")  # type: ignore[attr-defined]

    def deallocates_task_read(tx: Tx) -> None:
        name = postgres_pipe.statement(pgsql.SQL_TASK_LOCKED)[0].decode()
        tx._exec(f"DEALLOCATE {name}")  # type: ignore[attr-defined]

    hint = Reads(BOARD, "a0", task_id="t000")
    first = await store.run(reads, reads=hint)
    assert first[0] is not None and first[0].id == "a0"
    assert first[1] is not None and first[1].id == "t000"
    for _ in range(8):  # psycopg prepares statements of its own after a few runs
        assert await store.run(reads) == first
    for spoil in (fails, deallocates, deallocates_task_read, deallocates_all, fails):
        with contextlib.suppress(InvalidInput):
            await store.run(spoil, reads=hint)
        assert await store.run(reads, reads=hint) == first
        assert await store.run(reads, reads=hint) == first


async def test_writes_sent_with_commit_survive_their_statements_being_deallocated(
    stores: list[PostgresStore], dsn: str
) -> None:
    """The writes sent with COMMIT are statements the store prepared on the
    connection. Deallocated during a unit, by someone else, they fail it as
    a lost race (nothing of it kept, safe to run again); the next unit
    prepares them anew."""
    store = await open_into(stores, dsn, max_size=1)  # one connection: every unit shares it
    await store.run(_board_with_tasks(1, agents=1))

    def seen(at: datetime, *, spoil: bool = False) -> Callable[[Tx], None]:
        def unit(tx: Tx) -> None:
            if spoil:
                tx._exec("DEALLOCATE ALL")  # type: ignore[attr-defined]
            tx.mark_seen(BOARD, "a0", at)

        return unit

    def last_seen(tx: Tx) -> datetime | None:
        agent = tx.get_agent(BOARD, "a0")
        return None if agent is None else agent.last_seen_at

    await store.run(seen(T0))
    with pytest.raises(TransientFailure):
        await store.run(seen(T0 + timedelta(seconds=1), spoil=True))
    assert await store.run(last_seen) == T0
    await store.run(seen(T0 + timedelta(seconds=2)))
    assert await store.run(last_seen) == T0 + timedelta(seconds=2)
