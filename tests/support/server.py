"""A real Tenure server in a subprocess, for tests that talk to it over HTTP.

`start_server(folder, env)` runs `tenure serve` (uvicorn, the real lifespan,
the real monitor) on a free loopback port with its SQLite file in `folder`,
waits until /readyz answers, and reads the admin token the server printed
at its first start; it runs SPEC's detector unless `env` names another.
`LiveServer.restart()` stops it and starts it again on the same port and
file. Every wait is a bounded poll.

Fixtures built on it (see tests/server/conftest.py): `live_server`, a
factory; `short_lease_env`, settings with leases of seconds.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ADMIN_TOKEN = re.compile(r"tnr_admin_[A-Za-z0-9_-]+")

#: Settings for tests that watch leases expire: every phase 2 s, grace 0.5 s,
#: a monitor pass every 0.1 s; SPEC's detector, whose phases these are.
SHORT_LEASES: dict[str, str] = {
    "TENURE_DETECTOR_POLICY": "spec",
    **{f"TENURE_LEASE_PHASE{n}_LEASE": "2" for n in (1, 2, 3, 4)},
    **{f"TENURE_LEASE_PHASE{n}_GRACE": "0.5" for n in (1, 2, 3, 4)},
    "TENURE_LEASE_DEFAULT_LEASE": "2",
    "TENURE_LEASE_DEFAULT_GRACE": "0.5",
    "TENURE_LEASE_WARNING_THRESHOLD": "0.5",
    "TENURE_MONITOR_INTERVAL": "0.1",
}

START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(interval)


def tenure_command(*args: str) -> list[str]:
    """The argv that runs the `tenure` command of this interpreter."""
    return [sys.executable, "-c", "from tenure.cli import main; main()", *args]


def launch(
    args: list[str], env: Mapping[str, str], folder: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start `args` in `folder`, its output (stdout and stderr) to `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            args, env=dict(env), stdout=log, stderr=subprocess.STDOUT, cwd=folder
        )


def read_log(log_path: Path) -> str:
    """What a server process wrote so far ("" before it wrote anything)."""
    return log_path.read_text(errors="replace") if log_path.exists() else ""


def wait_ready(
    process: subprocess.Popen[bytes], url: str, log_path: Path, name: str, timeout: float
) -> str:
    """Wait until the server at `url` answers /readyz; fail at once if it exits.

    Returns the admin token its log printed, or "" (only a first start prints one).
    """

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}:\n{read_log(log_path)}")
        try:
            return httpx.get(url + "/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout, 0.05, f"{name} to start ({log_path})")
    found = ADMIN_TOKEN.search(read_log(log_path))
    return found.group(0) if found else ""


@dataclass
class LiveServer:
    """One running `tenure serve` process."""

    folder: Path
    port: int
    env: dict[str, str]
    extra_args: tuple[str, ...] = ()
    admin_token: str = ""
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.folder / "tenure.db"

    @property
    def log_path(self) -> Path:
        return self.folder / f"server-{self.starts}.log"

    def start(self) -> LiveServer:
        """Start the process and wait until it is ready."""
        self.starts += 1
        args = tenure_command(
            "serve",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--database-url", f"sqlite:///{self.database}",
            *self.extra_args,
        )  # fmt: skip
        self.process = launch(args, self.env, self.folder, self.log_path)
        token = wait_ready(self.process, self.url, self.log_path, "the server", START_TIMEOUT_S)
        if not self.admin_token:
            assert token, f"the first start printed no admin token:\n{self.logs()}"
            self.admin_token = token
        return self

    def logs(self) -> str:
        """Everything the current process wrote."""
        return read_log(self.log_path)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Stop the process (gracefully by default); its exit status."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.process = None
        return int(process.returncode)

    def restart(self) -> LiveServer:
        """Stop, then start again on the same port and database."""
        self.stop()
        return self.start()

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client on /api/v1 with `token` as its bearer token (closed at the end)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=10.0)
        self._clients.append(client)
        return client

    def admin(self) -> httpx.Client:
        """An HTTP client with the admin token."""
        return self.client(self.admin_token)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.stop()


def start_server(
    folder: Path, env: Mapping[str, str] | None = None, extra_args: tuple[str, ...] = ()
) -> LiveServer:
    """A started LiveServer with its files in `folder` and `env` on top of os.environ."""
    folder.mkdir(parents=True, exist_ok=True)
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TENURE_")},
        "TENURE_LOG_LEVEL": "INFO",
        # SPEC's detector unless `env` says otherwise: live-server tests wait
        # out its phase numbers (short leases recovered within seconds), and
        # the default detector, `adaptive`, allows at least 90 s of silence.
        "TENURE_DETECTOR_POLICY": "spec",
        **(env or {}),
    }
    return LiveServer(folder, free_port(), full_env, extra_args).start()


@dataclass
class Fleet:
    """A board on a live server with an enrolment key, and helpers to add agents."""

    server: LiveServer
    board_id: str
    enrolment_key: str

    def agent(self, agent_id: str, **profile: Any) -> tuple[httpx.Client, str]:
        """Register an agent; its HTTP client and token."""
        answer = self.server.client(self.enrolment_key).post(
            "/agents", json={"agent_id": agent_id, **profile}
        )
        assert answer.status_code == 201, answer.text
        token = answer.json()["token"]
        return self.server.client(token), token

    def add_tasks(self, *tasks: dict[str, Any]) -> None:
        answer = self.server.admin().post(f"/boards/{self.board_id}/tasks/import", json=list(tasks))
        assert answer.status_code == 201, answer.text


def new_board(server: LiveServer, board_id: str) -> Fleet:
    """Create a board on `server`."""
    answer = server.admin().post("/boards", json={"id": board_id})
    assert answer.status_code == 201, answer.text
    return Fleet(server, board_id, answer.json()["enrolment_key"])
