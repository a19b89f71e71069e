"""What `tenure serve` wires together at start: the store check, the hook
deliverer, the bind address warning."""

from __future__ import annotations

import http.client
import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.support.server import (
    SHORT_LEASES,
    LiveServer,
    free_port,
    new_board,
    tenure_command,
    wait_until,
)

pytestmark = pytest.mark.xdist_group("server-wiring")


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A local webhook endpoint; the bodies it received."""
    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    server.shutdown()
    server.server_close()


def test_a_recovery_reaches_the_configured_webhook(
    live_server: Callable[..., LiveServer], webhook: tuple[str, list[dict]]
) -> None:
    url, bodies = webhook
    server = live_server({**SHORT_LEASES, "TENURE_HOOKS_WEBHOOK_URLS": url})
    fleet = new_board(server, "hooked")
    fleet.add_tasks({"id": "h1", "title": "Will be recovered"})
    agent, _ = fleet.agent("gone")
    agent.post("/claim")
    wait_until(lambda: bodies, 15, 0.1, "the recovery's webhook")
    assert bodies[0]["event"] == "recovered"
    assert bodies[0]["board_id"] == "hooked"


def test_a_database_newer_than_the_code_is_refused_at_start(tmp_path: Path) -> None:
    database = tmp_path / "newer.db"
    url = f"sqlite:///{database}"
    done = subprocess.run(tenure_command("db", "migrate", "--database-url", url), check=False)
    assert done.returncode == 0
    with sqlite3.connect(database) as db:
        db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    started = subprocess.run(
        tenure_command("serve", "--database-url", url, "--port", str(free_port())),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert started.returncode == 2
    assert "newer than this Tenure" in started.stderr


def test_listening_beyond_loopback_warns(live_server: Callable[..., LiveServer]) -> None:
    loud = live_server({}, ("--host", "0.0.0.0"))
    assert "reachable from other machines" in loud.logs()


def test_idle_connections_are_kept_for_server_keep_alive(
    live_server: Callable[..., LiveServer],
) -> None:
    """`server.keep_alive` reaches uvicorn: with 1 s, an idle connection is closed
    by the server after about a second; a request within it is answered."""
    server = live_server({"TENURE_SERVER_KEEP_ALIVE": "1"})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(2):  # the second request reuses the connection
            conn.request("GET", "/healthz")
            answer = conn.getresponse()
            assert answer.status == 200 and answer.read()
        assert conn.sock is not None
        idle_from = time.monotonic()
        assert conn.sock.recv(1) == b""  # then the server closes it, idle
        assert 0.5 < time.monotonic() - idle_from < 8
    finally:
        conn.close()
