"""Open sessions counted per server: a gone server's are counted out, and
nothing turns suspect for it (`tenure.sessions`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from tests.support.pg import reopen_postgres_store
from tests.support.world import World

from tenure.auth import Caller
from tenure.service import Coordinator
from tenure.sessions import GoneServers
from tenure.store.base import Store
from tenure.store.sqlite import SqliteStore, open_sqlite

OTHER = 424242  # a server id that is not the world's


@asynccontextmanager
async def _as_server(world: World, server_id: int) -> AsyncIterator[None]:
    """Calls made meanwhile are made as the server `server_id` (the world's
    Coordinator and store, under another id)."""
    own = world.store.server_id
    world.store.server_id = server_id
    try:
        yield
    finally:
        world.store.server_id = own


async def _open_sessions(world: World, agent_id: str) -> int:
    agents = await world.coordinator.admin.list_agents(world.admin, world.board_id)
    return int(next(a["open_sessions"] for a in agents if a["id"] == agent_id))


async def _holding(world: World, agent_id: str) -> Caller:
    caller = await world.add_agent(agent_id)
    await world.add_task(f"T-{agent_id}")
    await world.claim(caller)
    return caller


async def test_a_gone_servers_sessions_are_counted_out_and_nothing_turns_suspect(
    world: World,
) -> None:
    a1 = await _holding(world, "a1")
    async with _as_server(world, OTHER):
        await world.coordinator.session_opened(a1)
        await world.coordinator.session_opened(a1)
    await world.coordinator.session_opened(a1)
    assert await _open_sessions(world, "a1") == 3

    assert await world.coordinator.count_out_sessions_of(OTHER) == 1
    assert await _open_sessions(world, "a1") == 1
    assert (await world.task("T-a1"))["lease"]["suspect_since"] is None
    assert await world.coordinator.count_out_sessions_of(OTHER) == 0  # nothing left there

    # Its last session, on this server, now closes as its last.
    await world.coordinator.session_closed(a1)
    assert await _open_sessions(world, "a1") == 0
    assert (await world.task("T-a1"))["lease"]["state"] == "suspect"


async def test_a_session_counted_out_already_is_not_counted_out_again(world: World) -> None:
    """This server's sessions taken for a gone server's (a presence window):
    their later close does not take the count below the agent's other sessions."""
    a1 = await _holding(world, "a1")
    await world.coordinator.session_opened(a1)
    await world.coordinator.count_out_sessions_of(world.store.server_id)
    async with _as_server(world, OTHER):
        await world.coordinator.session_opened(a1)
    await world.coordinator.session_closed(a1)  # the session counted out above
    assert await _open_sessions(world, "a1") == 1
    assert (await world.task("T-a1"))["lease"]["suspect_since"] is None


async def test_gone_servers_are_counted_out_once_missing_long_enough(world: World) -> None:
    a1 = await _holding(world, "a1")
    async with _as_server(world, OTHER):
        await world.coordinator.session_opened(a1)
    await world.coordinator.session_opened(a1)
    moment = [100.0]
    gone = GoneServers(world.coordinator, gone_after=10.0, clock=lambda: moment[0])
    # As at a server's start: this one joins the running servers (on
    # PostgreSQL, until its presence lock is held it can tell nothing).
    await world.store.sole_server()

    assert await gone.look() == []  # missing from now on
    moment[0] += 9.9
    assert await gone.look() == []
    assert await _open_sessions(world, "a1") == 2
    moment[0] += 0.2
    assert await gone.look() == [OTHER]
    assert await _open_sessions(world, "a1") == 1  # this server's own stays counted
    assert await gone.look() == []
    assert (await world.task("T-a1"))["lease"]["suspect_since"] is None


async def test_sessions_opening_and_closing_at_once_on_two_servers_are_all_counted(
    world: World, tmp_path: Path
) -> None:
    """Two servers on one database, the agent's sessions opening (then
    closing) on both at the same moments: no count is lost either way."""
    if isinstance(world.store, SqliteStore):
        second: Store = await open_sqlite(tmp_path / "tenure.db", world.clock)
    else:
        second = await reopen_postgres_store(world.store, world.clock)  # type: ignore[arg-type]
    other = Coordinator(second, world.coordinator.policy)
    try:
        a1 = await _holding(world, "a1")
        for _ in range(10):
            await asyncio.gather(world.coordinator.session_opened(a1), other.session_opened(a1))
        assert await _open_sessions(world, "a1") == 20
        for _ in range(9):
            await asyncio.gather(world.coordinator.session_closed(a1), other.session_closed(a1))
        assert await _open_sessions(world, "a1") == 2
        assert (await world.task("T-a1"))["lease"]["suspect_since"] is None
        await asyncio.gather(world.coordinator.session_closed(a1), other.session_closed(a1))
        assert await _open_sessions(world, "a1") == 0
        assert (await world.task("T-a1"))["lease"]["state"] == "suspect"
    finally:
        await second.close()


async def test_a_failed_look_is_logged_and_the_next_one_still_comes(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    looks: list[int] = []

    async def running_servers() -> set[int]:
        looks.append(1)
        if len(looks) == 1:
            raise RuntimeError("a failure nobody planned for")
        return {world.store.server_id}

    monkeypatch.setattr(world.store, "running_servers", running_servers)
    watching = asyncio.create_task(GoneServers(world.coordinator).run(every=0.0))
    try:
        while len(looks) < 3:
            assert not watching.done(), watching.exception()
            await asyncio.sleep(0.01)
    finally:
        watching.cancel()
    assert "a failure nobody planned for" in caplog.text
