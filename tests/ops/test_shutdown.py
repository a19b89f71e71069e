"""Graceful shutdown: SIGTERM under load marks no lease suspect and loses none.

A real `tenure serve` runs with a monitor pass every 0.1 s while agents
renew and touch their leases over HTTP as fast as they can, and one more
holds its lease through an open MCP session (streamable HTTP, with its
standing stream). The server gets
SIGTERM in the middle of that, exits cleanly, and starts again on the same
database: every lease live before is live after, with the same epoch and an
expiry no earlier than before, and the log holds no `lease.suspect` (nor a
recovery) for any of them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from tests.support.server import LiveServer, new_board, wait_until

pytestmark = pytest.mark.xdist_group("ops-shutdown")

AGENTS = 6
STEADY = {
    # Leases far longer than the test: nothing may expire on a slow machine.
    **{f"TENURE_LEASE_PHASE{n}_LEASE": "300" for n in (1, 2, 3, 4)},
    "TENURE_LEASE_DEFAULT_LEASE": "300",
    # A pass every 0.1 s: one is nearly always in flight when SIGTERM lands.
    "TENURE_MONITOR_INTERVAL": "0.1",
}


class Load:
    """Agents renewing (odd ones) and touching (even ones) their leases in a loop."""

    def __init__(self, clients: list[tuple[str, httpx.Client]]) -> None:
        self.clients = clients
        self.stop = threading.Event()
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._work, args=(n, task, client), daemon=True)
            for n, (task, client) in enumerate(clients)
        ]

    def _work(self, n: int, task_id: str, client: httpx.Client) -> None:
        progress = 10
        while not self.stop.is_set():
            try:
                if n % 2:
                    progress = min(99, progress + 1)
                    answer = client.post(f"/tasks/{task_id}/progress", json={"progress": progress})
                else:
                    answer = client.get("/me")
            except httpx.HTTPError:
                with self._lock:
                    self.failed += 1  # the server is going away: expected
                time.sleep(0.01)
                continue
            with self._lock:
                if answer.status_code == 200:
                    self.ok += 1
                elif answer.status_code != 503:
                    self.errors.append(f"{answer.status_code} {answer.text[:200]}")

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


class McpHolder:
    """An agent that claims and renews through one MCP session until the server goes."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.ready = threading.Event()
        self.task_id: str | None = None
        self.reports = 0
        self.ended: BaseException | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _call(self, client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await client.call_tool(tool, arguments)
        body: dict[str, Any] = json.loads("".join(getattr(b, "text", "") for b in result.content))
        assert not result.is_error, body
        return body

    async def _main(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            http = httpx2.AsyncClient(headers=headers)
            async with http, Client(streamable_http_client(self.url, http_client=http)) as client:
                self.task_id = (await self._call(client, "request_next_task"))["task"]["id"]
                while True:
                    progress = min(99, 10 + self.reports)
                    await self._call(
                        client, "report_task_progress", task_id=self.task_id, progress=progress
                    )
                    self.reports += 1
                    self.ready.set()
                    await asyncio.sleep(0.05)
        except BaseException as exc:  # the server going away ends the session
            self.ended = exc
        finally:
            self.ready.set()


def _leases(server: LiveServer) -> dict[str, dict[str, Any]]:
    answer = server.admin().get("/leases", params={"board_id": "s"})
    assert answer.status_code == 200, answer.text
    return {lease["task_id"]: lease for lease in answer.json()["leases"]}


def test_sigterm_under_load_marks_nothing_suspect_and_loses_no_lease(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server(STEADY)
    fleet = new_board(server, "s")
    fleet.add_tasks(*({"id": f"t{n}", "title": f"Task {n}"} for n in range(AGENTS + 2)))
    clients: list[tuple[str, httpx.Client]] = []
    for n in range(AGENTS):
        client, _token = fleet.agent(f"w{n}")
        claimed = client.post("/claim")
        assert claimed.status_code == 200, claimed.text
        task_id = claimed.json()["task"]["id"]
        report = client.post(f"/tasks/{task_id}/progress", json={"progress": 10})
        assert report.status_code == 200, report.text
        # Each agent its own connection pool, so the load really is concurrent.
        clients.append((task_id, httpx.Client(base_url=client.base_url, headers=client.headers)))
    _client, mcp_token = fleet.agent("mcp")
    holder = McpHolder(server.url + "/mcp", mcp_token)
    holder.thread.start()
    assert holder.ready.wait(60) and holder.task_id is not None, holder.ended
    process = server.process
    assert process is not None

    with Load(clients) as load:
        wait_until(lambda: load.ok >= 20 * AGENTS, 60, what="the agents to be busy")
        before = _leases(server)
        assert len(before) == AGENTS + 1
        assert before[holder.task_id]["agent_id"] == "mcp"
        assert holder.reports >= 1 and holder.ended is None
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(45)
        took = time.monotonic() - started
        calls_before_exit = load.ok
    for _, client in clients:
        client.close()
    holder.thread.join(30)
    assert not holder.thread.is_alive(), "the MCP session did not end with the server"

    # uvicorn finishes the shutdown, then re-raises the signal it caught, so
    # the parent sees "ended by SIGTERM"; the log shows the shutdown ran in full.
    assert process.returncode in (0, -signal.SIGTERM), server.logs()
    # By design at most ~15 s (5 s for requests in flight, 10 s for the workers).
    assert took < 30, f"the shutdown took {took:.1f} s"
    assert load.errors == []
    assert calls_before_exit >= 20 * AGENTS
    logs = server.logs()
    assert "tenure stopping" in logs
    assert "Application shutdown complete" in logs
    assert "Traceback" not in logs, logs

    server.process = None
    server.start()
    after = _leases(server)
    assert set(after) == set(before), "every lease live before is live after the restart"
    for task_id, lease in before.items():
        again = after[task_id]
        assert again["agent_id"] == lease["agent_id"]
        assert again["epoch"] == lease["epoch"], task_id
        assert again["expires_at"] >= lease["expires_at"], task_id
        assert again["state"] == "active", again
        assert again["version"] >= lease["version"]
    events = server.admin().get("/events", params={"board_id": "s", "limit": 5000}).json()["events"]
    types = {event["type"] for event in events}
    assert "lease.renewed" in types
    assert "lease.suspect" not in types
    assert "lease.recovered" not in types
    assert "lease.released" not in types
