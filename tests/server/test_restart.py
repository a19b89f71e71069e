"""The server process restarts mid-lease, and dies when its monitor dies."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable

import pytest
from tests.support.server import ADMIN_TOKEN, LiveServer, new_board, wait_until

pytestmark = pytest.mark.xdist_group("server-restart")

LONG_LEASES = {
    **{f"TENURE_LEASE_PHASE{n}_LEASE": "120" for n in (1, 2, 3, 4)},
    "TENURE_LEASE_DEFAULT_LEASE": "120",
    "TENURE_MONITOR_INTERVAL": "0.1",
}


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "killed"])
def test_a_lease_continues_with_the_same_expiry_after_a_restart(
    live_server: Callable[..., LiveServer], how: signal.Signals
) -> None:
    server = live_server(LONG_LEASES)
    fleet = new_board(server, "r")
    fleet.add_tasks({"id": "t", "title": "Survive a restart"})
    worker, token = fleet.agent("w")
    worker.post("/claim")
    reported = worker.post("/tasks/t/progress", json={"progress": 40, "message": "before"}).json()
    before = reported["lease"]
    admin_token = server.admin_token

    server.stop(how)
    server.start()

    assert server.admin_token == admin_token
    assert not ADMIN_TOKEN.search(server.logs()), "the admin token is printed only at first start"
    leases = server.admin().get("/leases", params={"board_id": "r"}).json()["leases"]
    assert len(leases) == 1
    after = leases[0]
    for field in ("epoch", "version", "expires_at", "recover_after", "progress", "message"):
        assert after[field] == before[field], field
    assert after["state"] == "active"
    # The same agent token goes on working on the same lease.
    again = server.client(token).post("/tasks/t/progress", json={"progress": 60}).json()
    assert again["result"] == "renewed" and again["lease"]["epoch"] == before["epoch"]


def test_the_server_stops_when_its_monitor_dies(live_server: Callable[..., LiveServer]) -> None:
    server = live_server({"TENURE_MONITOR_INTERVAL": "0.1"})
    process = server.process
    assert process is not None
    # Break the store under the monitor: its next pass fails.
    with sqlite3.connect(server.database) as db:
        db.execute("DROP TABLE leases")
    wait_until(lambda: process.poll() is not None, 20, what="the server to stop")
    assert process.returncode == 1
    assert "stopping the server" in server.logs()
