"""Tenure servers in subprocesses that a test may kill and restart at will.

`Replica` is one `tenure serve` process on a fixed loopback port and a
database URL (several replicas may share one PostgreSQL database); `kill()`
sends SIGKILL, `start()` brings it back on the same port and database.
`Cluster` holds the replicas and hands agents a `FailoverTransport`: an httpx
transport that sends each request to a replica that accepts the connection,
moving on to the next one when a replica is down. Only a refused connection
fails over (the request never left); a connection cut mid-request raises, as
its outcome is unknown, and the caller decides whether to repeat it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tests.support.server import free_port, launch, read_log, tenure_command, wait_ready

#: Seconds a (re)start may take before the test fails.
START_TIMEOUT_S = 60.0


def server_env(settings: Mapping[str, str]) -> dict[str, str]:
    """os.environ without any TENURE_* of the caller's, plus `settings`."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("TENURE_")},
        "TENURE_LOG_LEVEL": "WARNING",
        **settings,
    }


@dataclass
class Replica:
    """One `tenure serve` process on `port` over `database_url`."""

    name: str
    folder: Path
    database_url: str
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    admin_token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.name}-{self.starts}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> float:
        """Start the process; the monotonic time at which it answered /readyz."""
        self.starts += 1
        args = tenure_command(
            "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--database-url", self.database_url,
        )  # fmt: skip
        self.process = launch(args, self.env, self.folder, self.log_path)
        token = wait_ready(self.process, self.url, self.log_path, self.name, START_TIMEOUT_S)
        self.admin_token = self.admin_token or token
        return time.monotonic()

    def logs(self) -> str:
        return read_log(self.log_path)

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind, as a crashed machine."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        self.process = None

    def stop(self) -> None:
        """A graceful stop (SIGTERM), killed if it hangs."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.process = None


class Cluster:
    """Replicas over one database, and transports that fail over between them."""

    def __init__(self, folder: Path, database_url: str, settings: Mapping[str, str], n: int):
        env = server_env(settings)
        self.replicas = [Replica(f"replica{i}", folder, database_url, env) for i in range(n)]
        self.failovers = 0
        self._lock = threading.Lock()

    @property
    def admin_token(self) -> str:
        return self.replicas[0].admin_token

    def start(self) -> None:
        """Start the first replica (it creates the admin token), then the others at once."""
        first, *others = self.replicas
        first.start()
        assert first.admin_token, f"no admin token printed:\n{first.logs()}"
        threads = [threading.Thread(target=replica.start) for replica in others]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for replica in others:
            assert replica.running, f"{replica.name} did not start:\n{replica.logs()}"

    def close(self) -> None:
        for replica in self.replicas:
            replica.stop()

    def transport(self, first: int) -> FailoverTransport:
        return FailoverTransport(self, first)

    def admin(self) -> httpx.Client:
        """An admin client that fails over like the agents do."""
        return httpx.Client(
            base_url=self.replicas[0].url + "/api/v1",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            transport=self.transport(0),
            timeout=10.0,
        )

    def count_failover(self) -> None:
        with self._lock:
            self.failovers += 1


class FailoverTransport(httpx.BaseTransport):
    """Sends each request to the first replica, from a preferred one on, that
    accepts the connection. Gives up (re-raising ConnectError) after `rounds`
    passes over every replica, pausing briefly between passes."""

    def __init__(self, cluster: Cluster, first: int, rounds: int = 50) -> None:
        self.cluster = cluster
        self.index = first
        self.rounds = rounds
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        replicas = self.cluster.replicas
        last: httpx.ConnectError | None = None
        for attempt in range(self.rounds * len(replicas)):
            replica = replicas[self.index % len(replicas)]
            request.url = request.url.copy_with(port=replica.port)
            try:
                return self._inner.handle_request(request)
            except httpx.ConnectError as refused:
                last = refused
                self.index += 1
                self.cluster.count_failover()
                if (attempt + 1) % len(replicas) == 0:
                    time.sleep(0.1)  # every replica refused: one is restarting
        assert last is not None
        raise last

    def close(self) -> None:
        self._inner.close()
