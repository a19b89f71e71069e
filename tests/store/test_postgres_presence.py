"""Which servers run on a PostgreSQL database (`tenure.store.postgres_presence`),
and the MCP session counts a server forgets at its start only when alone."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from tests.support.pg import fresh_postgres_dsn, open_into, terminate_sessions

from tenure.api.mcp import forget_sessions_of_a_previous_run
from tenure.auth import ADMIN
from tenure.core.errors import StoreUnavailable
from tenure.service import Coordinator
from tenure.store.postgres import PostgresStore, open_postgres
from tenure.store.postgres_log import EVENTS_LOCK_KEY
from tenure.store.postgres_presence import PRESENCE_KEY, SERVERS_CLASS
from tenure.store.postgres_schema import MIGRATE_LOCK_KEY

pytestmark = pytest.mark.postgres

#: The server id of a run before this one (ids are drawn from 1 to 2**31 - 1).
PREVIOUS_RUN = 99


@pytest.fixture
def dsn() -> str:
    return fresh_postgres_dsn()


async def test_a_server_is_alone_until_another_joins_and_after_it_leaves(
    stores: list[PostgresStore], dsn: str
) -> None:
    first = await open_into(stores, dsn)
    assert await first.sole_server()
    second = await open_into(stores, dsn)
    assert not await second.sole_server()
    assert not await first.sole_server()
    await second.close()
    assert await first.sole_server()
    # A store that never asked is no server: it does not count.
    await open_into(stores, dsn)
    assert await first.sole_server()


async def test_the_running_servers_are_known_by_their_ids(
    stores: list[PostgresStore], dsn: str
) -> None:
    first = await open_into(stores, dsn)
    second = await open_into(stores, dsn)
    assert first.server_id != second.server_id
    await first.sole_server()
    await second.sole_server()
    assert await first.running_servers() == {first.server_id, second.server_id}
    await second.close()
    assert await first.running_servers() == {first.server_id}
    # Another server's lock of its own, held by a bare connection, counts too...
    other = psycopg.connect(dsn, autocommit=True)
    other.execute("SELECT pg_advisory_lock(%s, %s)", (SERVERS_CLASS, 77))
    assert await first.running_servers() == {first.server_id, 77}
    other.close()  # ...until its connection ends, however it ends.
    # The server ends the session (and frees its locks) a moment after the
    # client has gone: a CI run saw 77 still held right after the close.
    deadline = time.monotonic() + 10
    while (running := await first.running_servers()) != {first.server_id}:
        assert running == {first.server_id, 77} and time.monotonic() < deadline, running
        await asyncio.sleep(0.02)


async def test_a_server_without_its_presence_lock_cannot_tell_who_runs(
    stores: list[PostgresStore], dsn: str
) -> None:
    store = await open_into(stores, dsn)
    await store.sole_server()
    terminate_sessions(dsn)  # the lock's connection too
    deadline = time.monotonic() + 15
    answers = set()
    while len(answers) < 2:
        # None while its thread takes the lock again, then itself among the running.
        running = await store.running_servers()
        answers.add(None if running is None else store.server_id in running)
        assert time.monotonic() < deadline, f"answers so far: {answers}"
        await asyncio.sleep(0.05)
    assert answers == {None, True}


async def test_a_lost_presence_connection_is_taken_again(
    stores: list[PostgresStore], dsn: str
) -> None:
    first = await open_into(stores, dsn)
    assert await first.sole_server()
    terminate_sessions(dsn)  # as if the database restarted
    second = await open_into(stores, dsn)
    deadline = time.monotonic() + 15
    while await second.sole_server():
        # The first server's lock is gone until its thread reconnects.
        assert time.monotonic() < deadline, "the presence lock was never taken again"
        await asyncio.sleep(0.1)


async def test_a_server_that_died_no_longer_counts(stores: list[PostgresStore], dsn: str) -> None:
    """A holder's connection closing (its process ending, however it ends)
    lets go of the lock."""
    other = psycopg.connect(dsn, autocommit=True)
    other.execute("SELECT pg_advisory_lock_shared(%s)", (PRESENCE_KEY,))
    store = await open_into(stores, dsn)
    assert not await store.sole_server()
    other.close()
    assert await store.sole_server()


async def _agent_with_sessions(coordinator: Coordinator, sessions: int) -> None:
    await coordinator.admin.create_board(ADMIN, "b")
    await coordinator.admin.register_agent(ADMIN, {"id": "a"}, "b")

    def unit(tx: Any, effects: Any) -> None:
        for _ in range(sessions):
            tx.open_session("b", "a", PREVIOUS_RUN)

    await coordinator.run(unit)


async def _sessions(coordinator: Coordinator) -> int:
    agent = await coordinator.store.read(lambda tx: tx.get_agent("b", "a"))
    assert agent is not None
    return int(agent.open_sessions)


async def test_a_lone_server_forgets_the_sessions_of_a_previous_run(
    stores: list[PostgresStore], dsn: str
) -> None:
    coordinator = Coordinator(await open_into(stores, dsn))
    await _agent_with_sessions(coordinator, 2)
    assert await forget_sessions_of_a_previous_run(coordinator) == 1
    assert await _sessions(coordinator) == 0


async def test_a_server_beside_another_keeps_the_session_counts(
    stores: list[PostgresStore], dsn: str
) -> None:
    running = await open_into(stores, dsn)
    assert await running.sole_server()
    coordinator = Coordinator(await open_into(stores, dsn))
    await _agent_with_sessions(coordinator, 2)
    assert await forget_sessions_of_a_previous_run(coordinator) == 0
    assert await _sessions(coordinator) == 2


def test_the_advisory_lock_keys_are_distinct() -> None:
    """A shared key would make a server's presence block the migrations, or
    the event log's appends."""
    assert len({PRESENCE_KEY, EVENTS_LOCK_KEY, MIGRATE_LOCK_KEY}) == 3


async def test_a_closed_store_does_not_join_the_running_servers_again(dsn: str) -> None:
    store = await open_postgres(dsn)
    assert await store.sole_server()  # it joined
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.running_servers()
    with pytest.raises(StoreUnavailable):
        await store.sole_server()
