"""Sessions and liveness over MCP: touches, closes, reopens, a killed proxy, a restart."""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from datetime import datetime
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_MODERN_VERSION
from tests.mcp.conftest import STEADY_MONITOR_INTERVAL, SUSPECT_AFTER_CLOSE
from tests.mcp.live import (
    Admin,
    LiveServer,
    McpAgent,
    agent_session,
    proxy_pids,
    stored,
    wait_for,
)
from tests.support.pg import fresh_postgres_dsn, postgres_url

from tenure.auth import ADMIN
from tenure.sessions import GoneServers

#: Slack for a loaded machine on top of SPEC's bound.
MARGIN = 4.0


def _expiry(lease: dict[str, Any] | None) -> datetime:
    assert lease is not None
    return datetime.fromisoformat(lease["expires_at"])


async def _suspicions(admin: Admin, board: str) -> list[str]:
    """How each `lease.suspect` of the board came about: `closed` or `dropped`."""
    events = await admin.coordinator.admin.events(ADMIN, board_id=board)
    return [e["data"]["how"] for e in events if e["type"] == "lease.suspect"]


async def _open_sessions(admin: Admin, board: str, agent_id: str) -> int:
    agents = await admin.coordinator.admin.list_agents(ADMIN, board)
    return int(next(a["open_sessions"] for a in agents if a["id"] == agent_id))


async def test_every_tool_call_of_the_holder_moves_its_expiry_and_nobody_elses_does(
    steady: LiveServer, transport: str
) -> None:
    async with steady.admin() as admin:
        board, key = await admin.board("t1", "t2")
        other = await admin.agent(board, "other")
        async with (
            agent_session(steady, key, transport) as holder,
            agent_session(steady, other, transport) as bystander,
        ):
            await holder.call("register_agent", agent_id="holder")
            await holder.call("request_next_task")
            calls: list[tuple[str, dict[str, Any]]] = [
                ("ping", {}),
                ("heartbeat", {}),
                ("heartbeat", {"task_id": "t1"}),
                ("get_task_context", {"task_id": "t1"}),
                ("request_next_task", {}),  # holds a task already: nothing given, still a touch
                ("register_agent", {"agent_id": "holder", "role": "tester"}),
                ("report_task_progress", {"task_id": "t1", "progress": 10}),
            ]
            for tool, arguments in calls:
                before = _expiry(await admin.lease(board, "t1"))
                answer = await holder.call(tool, **arguments)
                after = _expiry(await admin.lease(board, "t1"))
                assert after > before, tool
                # Every answer shows the caller's lease.
                shown = {lease["task_id"]: lease for lease in answer["notice"]["leases"]}
                assert _expiry(shown["t1"]) == after, tool

            untouched = stored(await admin.lease(board, "t1"))
            await bystander.call("ping")
            await bystander.call("heartbeat")
            await bystander.call("get_task_context", task_id="t1")
            await bystander.call("request_next_task")  # takes t2
            assert stored(await admin.lease(board, "t1")) == untouched


async def test_a_session_closed_and_reopened_in_time_keeps_the_lease(
    steady: LiveServer, transport: str
) -> None:
    async with steady.admin() as admin:
        board, _ = await admin.board("t1")
        token = await admin.agent(board, "a")
        async with agent_session(steady, token, transport) as agent:
            await agent.call("request_next_task")
            assert await _open_sessions(admin, board, "a") == 1

        async def suspect() -> bool:
            lease = await admin.lease(board, "t1")
            return lease is not None and lease["suspect_since"] is not None

        await wait_for(suspect, timeout=5.0)
        closed_at = time.monotonic()
        async with agent_session(steady, token, transport) as agent:
            answer = await agent.call("ping")
            assert answer["notice"]["leases"][0]["suspect_since"] is None
            # Past the suspect deadline, with passes of the monitor in between.
            remaining = (
                SUSPECT_AFTER_CLOSE + 3 * STEADY_MONITOR_INTERVAL - (time.monotonic() - closed_at)
            )
            await anyio.sleep(max(0.0, remaining))
            answer = await agent.call("ping")
            assert [lease["task_id"] for lease in answer["notice"]["leases"]] == ["t1"]
            assert "lost" not in answer["notice"]
        task = await admin.task(board, "t1")
        assert (task["status"], task["assignee"], task["recovery_count"]) == ("in_progress", "a", 0)


async def test_closing_one_of_two_sessions_marks_nothing_suspect(steady: LiveServer) -> None:
    async with steady.admin() as admin:
        board, _ = await admin.board("t1")
        token = await admin.agent(board, "a")
        async with agent_session(steady, token, "http") as agent:
            await agent.call("request_next_task")
            async with agent_session(steady, token, "http") as second:
                await second.call("ping")
                assert await _open_sessions(admin, board, "a") == 2
            assert await _open_sessions(admin, board, "a") == 1
            lease = await admin.lease(board, "t1")
            assert lease is not None and lease["suspect_since"] is None


async def test_a_killed_stdio_proxy_loses_its_lease_within_the_suspect_window(
    steady: LiveServer,
) -> None:
    async with steady.admin() as admin:
        board, key = await admin.board("t1")
        with suppress(Exception):
            async with agent_session(steady, key, "stdio") as agent:
                await agent.call("register_agent", agent_id="doomed")
                await agent.call("request_next_task")
                [pid] = proxy_pids()
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
        # A phase-1 lease lasts 180 s: only the closed session can explain a
        # recovery within seconds.
        bound = SUSPECT_AFTER_CLOSE + STEADY_MONITOR_INTERVAL + MARGIN

        async def recovered() -> dict[str, Any] | None:
            task = await admin.task(board, "t1")
            return task if task["status"] == "todo" else None

        task, _ = await wait_for(recovered, timeout=bound + 5)
        elapsed = time.monotonic() - killed_at
        assert elapsed <= bound
        assert elapsed >= SUSPECT_AFTER_CLOSE - 0.5  # not before the window ended
        assert task["handoff"]["recovery_reason"] == "agent_disconnected"
        assert task["handoff"]["recovered_from_agent"] == "doomed"
        # No goodbye came: the server saw the connection drop.
        assert await _suspicions(admin, board) == ["dropped"]


async def test_a_stdio_proxy_whose_input_ends_closes_its_session(steady: LiveServer) -> None:
    async with steady.admin() as admin:
        board, _ = await admin.board("t1")
        token = await admin.agent(board, "a")
        async with agent_session(steady, token, "stdio") as agent:
            await agent.call("request_next_task")
            assert await _open_sessions(admin, board, "a") == 1
        # The client closed the proxy's stdin; the proxy said goodbye upstream.
        assert await _open_sessions(admin, board, "a") == 0
        lease = await admin.lease(board, "t1")
        assert lease is not None and lease["suspect_since"] is not None
        assert await _suspicions(admin, board) == ["closed"]


async def test_a_server_restart_marks_nothing_suspect_and_the_proxy_reconnects(
    tmp_path: Any,
) -> None:
    server = LiveServer(tmp_path, {"TENURE_MONITOR_INTERVAL": "0.5"})
    server.start()
    try:
        async with server.admin() as admin:
            board, _ = await admin.board("t1")
            token = await admin.agent(board, "a")
        async with agent_session(server, token, "stdio") as agent:
            await agent.call("request_next_task")
            await anyio.to_thread.run_sync(server.stop)
            async with server.admin() as admin:
                lease = await admin.lease(board, "t1")
                events = await admin.coordinator.admin.events(ADMIN, board_id=board)
                # The shutdown closed the session without telling anyone...
                assert await _open_sessions(admin, board, "a") == 1
            assert lease is not None and lease["suspect_since"] is None
            assert "lease.suspect" not in [event["type"] for event in events]

            await anyio.to_thread.run_sync(server.start)
            async with server.admin() as admin:
                # ...and the next start forgets it.
                assert await _open_sessions(admin, board, "a") == 0
                # The proxy opens a new upstream session and the lease is still there.
                answer = await agent.call("ping")
                assert [lease["task_id"] for lease in answer["notice"]["leases"]] == ["t1"]
                assert await _open_sessions(admin, board, "a") == 1
    finally:
        server.stop()


@pytest.mark.postgres
async def test_a_server_on_postgresql_forgets_old_session_counts_only_when_alone(
    tmp_path: Any,
) -> None:
    """Counts left by servers that stopped are reset by one that starts
    alone; one that starts beside a running replica keeps them."""
    env = {"TENURE_STORE_DATABASE_URL": postgres_url(fresh_postgres_dsn())}
    first, second = LiveServer(tmp_path / "a", env), LiveServer(tmp_path / "b", env)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    async def left_open(sessions: int) -> None:
        def unit(tx: Any, effects: Any) -> None:
            tx.forget_sessions()
            for _ in range(sessions):
                tx.open_session(board, "a", 99)  # a server of an earlier run

        async with first.admin() as admin:
            await admin.coordinator.run(unit)

    async with first.admin() as admin:
        board, _ = await admin.board()
        await admin.agent(board, "a")
    await left_open(2)
    try:
        await anyio.to_thread.run_sync(first.start)
        async with first.admin() as admin:
            assert await _open_sessions(admin, board, "a") == 0
        await left_open(2)
        await anyio.to_thread.run_sync(second.start)
        async with second.admin() as admin:
            assert await _open_sessions(admin, board, "a") == 2
    finally:
        second.stop()
        first.stop()


async def test_probing_clients_get_sessions_and_sessionless_ones_still_work(
    steady: LiveServer,
) -> None:
    async with steady.admin() as admin:
        board, _ = await admin.board("t1")
        token = await admin.agent(board, "a")
        # The SDK's default ("auto") probes for the sessionless protocol and is
        # steered to the handshake, whose sessions Tenure follows.
        async with agent_session(steady, token, "http") as agent:
            assert agent.client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
            assert await _open_sessions(admin, board, "a") == 1
        # A client pinned to the sessionless protocol works; nothing to follow.
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
        transport = streamable_http_client(steady.mcp_url, http_client=http)
        async with http, Client(transport, mode=LATEST_MODERN_VERSION) as client:
            answer = await McpAgent(client).call("request_next_task")
            assert answer["task"]["id"] == "t1"
            assert await _open_sessions(admin, board, "a") == 0


@pytest.mark.postgres
async def test_the_sessions_of_a_replica_that_crashed_are_counted_out_by_another(
    tmp_path: Any,
) -> None:
    """Two servers on one PostgreSQL database; the one holding the agent's
    session is killed. Its session stays counted until a running server sees
    it gone; then the agent's count comes down, and nothing turned suspect.
    Its session on the other server then closes as its last."""
    env = {"TENURE_STORE_DATABASE_URL": postgres_url(fresh_postgres_dsn())}
    first, second = LiveServer(tmp_path / "a", env), LiveServer(tmp_path / "b", env)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with first.admin() as admin:
        board, _ = await admin.board("t1")
        token = await admin.agent(board, "a")
    try:
        await anyio.to_thread.run_sync(first.start)
        await anyio.to_thread.run_sync(second.start)
        async with agent_session(first, token, "http") as staying:
            await staying.call("request_next_task")
            with suppress(Exception):
                async with agent_session(second, token, "http") as doomed:
                    await doomed.call("ping")
                    assert second.process is not None
                    second.process.kill()
                    second.process.wait(5)
            async with first.admin() as admin:
                assert await _open_sessions(admin, board, "a") == 2
                # The test's own coordinator settles (the first server would, in
                # GONE_AFTER_S): it joins the running servers and looks.
                assert await admin.coordinator.store.sole_server() is False
                gone = GoneServers(admin.coordinator, gone_after=0.0)
                # (PostgreSQL lets go of the killed server's lock once it sees its socket close.)
                await wait_for(gone.look, timeout=10)
                assert await _open_sessions(admin, board, "a") == 1
                lease = await admin.lease(board, "t1")
                assert lease is not None and lease["suspect_since"] is None
        # The session on the first server closed: the agent's last.
        async with first.admin() as admin:
            await wait_for(lambda: _count_is(admin, board, 0), timeout=10)
            lease = await admin.lease(board, "t1")
            assert lease is not None and lease["suspect_since"] is not None
    finally:
        second.stop()
        first.stop()


async def _count_is(admin: Admin, board: str, count: int) -> bool | None:
    return True if await _open_sessions(admin, board, "a") == count else None
