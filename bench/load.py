"""Load: many agents renewing their leases against one real `tenure serve`.

Starts a server (a subprocess, as in production) on SQLite and/or a scratch
PostgreSQL database, registers N agents that each claim one task, then has
every agent send a progress report (a renewal) once a second, each on its own
phase of the second, for the given duration. Prints, per backend: requests,
errors (any answer that is not 2xx, and any transport failure: must be 0),
throughput, and p50/p99/max latency of the renewals. Figures, not a test.

    .venv/bin/python bench/load.py                        # 200 agents, 60 s, both stores
    .venv/bin/python bench/load.py --seconds 10           # a shorter run
    .venv/bin/python bench/load.py --backend sqlite --agents 50 --json

PostgreSQL: a database `tenure_load_<pid>` is created on `--pg` (an admin
DSN; default the local server, user postgres) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

ADMIN_TOKEN = re.compile(r"tnr_admin_[A-Za-z0-9_-]+")
DEFAULT_PG = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@dataclass
class Figures:
    """One backend's result."""

    backend: str
    agents: int
    seconds: float
    renewals: int
    errors: int
    throughput_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    first_error: str = ""
    server_log: str = ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`tenure serve` in a subprocess, with its log in a temporary folder."""

    def __init__(self, database_url: str, folder: Path) -> None:
        self.port = _free_port()
        self.log = folder / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENURE_")}
        env["TENURE_LOG_LEVEL"] = "WARNING"
        args = [
            sys.executable, "-c", "from tenure.cli import main; main()", "serve",
            "--host", "127.0.0.1", "--port", str(self.port), "--database-url", database_url,
        ]  # fmt: skip
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start in 60 s")
            time.sleep(0.1)
        found = ADMIN_TOKEN.search(self.log.read_text())
        if not found:
            raise SystemExit("the server printed no admin token")
        self.admin_token = found.group(0)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def _prepare(client: httpx.AsyncClient, admin: str, agents: int) -> list[tuple[str, str]]:
    """A board with one task per agent; each agent registered and holding its task."""
    auth = {"Authorization": f"Bearer {admin}"}
    board = await client.post("/api/v1/boards", json={"id": "load"}, headers=auth)
    board.raise_for_status()
    key = {"Authorization": f"Bearer {board.json()['enrolment_key']}"}
    tasks = [{"id": f"t{n}", "title": f"task {n}"} for n in range(agents)]
    (
        await client.post("/api/v1/boards/load/tasks/import", json=tasks, headers=auth)
    ).raise_for_status()
    held: list[tuple[str, str]] = []
    for n in range(agents):
        made = await client.post("/api/v1/agents", json={"agent_id": f"a{n}"}, headers=key)
        made.raise_for_status()
        token = made.json()["token"]
        claim = await client.post("/api/v1/claim", headers={"Authorization": f"Bearer {token}"})
        claim.raise_for_status()
        held.append((token, claim.json()["task"]["id"]))
    return held


async def _agent(
    client: httpx.AsyncClient,
    token: str,
    task_id: str,
    phase: float,
    until: float,
    period: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    """Renew once per `period`, starting at `phase` into the first period."""
    headers = {"Authorization": f"Bearer {token}"}
    next_at = time.monotonic() + phase
    progress = 0
    while next_at < until:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        progress = min(99, progress + 1)
        started = time.perf_counter()
        try:
            answer = await client.post(
                f"/api/v1/tasks/{task_id}/progress",
                json={"progress": progress, "message": "steady"},
                headers=headers,
            )
            if not answer.is_success:
                errors.append(f"{answer.status_code}: {answer.text[:200]}")
        except httpx.HTTPError as exc:
            errors.append(repr(exc))
        latencies.append(time.perf_counter() - started)
        next_at += period


async def _load(url: str, admin: str, agents: int, seconds: float, period: float) -> Figures:
    limits = httpx.Limits(max_connections=agents, max_keepalive_connections=agents)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        held = await _prepare(client, admin, agents)
        latencies: list[float] = []
        errors: list[str] = []
        began = time.monotonic()
        until = began + seconds
        await asyncio.gather(
            *(
                _agent(client, token, task, period * n / agents, until, period, latencies, errors)
                for n, (token, task) in enumerate(held)
            )
        )
        elapsed = time.monotonic() - began
    ordered = sorted(latencies) or [0.0]
    return Figures(
        backend="",
        agents=agents,
        seconds=round(elapsed, 1),
        renewals=len(latencies),
        errors=len(errors),
        throughput_per_s=round(len(latencies) / elapsed, 1),
        p50_ms=round(statistics.median(ordered) * 1000, 1),
        p99_ms=round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        max_ms=round(ordered[-1] * 1000, 1),
        first_error=errors[0] if errors else "",
    )


def _run(backend: str, database_url: str, args: argparse.Namespace, folder: Path) -> Figures:
    server = Server(database_url, folder)
    try:
        figures = asyncio.run(
            _load(server.url, server.admin_token, args.agents, args.seconds, args.period)
        )
    finally:
        server.stop()
    figures.backend = backend
    if figures.errors:
        # What the server said about them (tracebacks, warnings), for the report.
        lines = server.log.read_text(errors="replace").splitlines()
        figures.server_log = "\n".join(line for line in lines if "Error" in line or "WARN" in line)[
            -4000:
        ]
    return figures


def _postgres_database(admin_dsn: str) -> tuple[str, str]:
    """A new scratch database: its name and its postgresql:// URL."""
    import psycopg

    name = f"tenure_load_{os.getpid()}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    user = parts.get("user", "postgres")
    return (
        name,
        f"postgresql://{user}@{parts.get('host', '127.0.0.1')}:{parts.get('port', 5432)}/{name}",
    )


def _drop(admin_dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="the run's length")
    parser.add_argument("--period", type=float, default=1.0, help="seconds between renewals")
    parser.add_argument("--pg", default=DEFAULT_PG, help="admin DSN of the PostgreSQL server")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    args = parser.parse_args(argv)
    results: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="tenure-load-") as tmp:
        folder = Path(tmp)
        if args.backend in ("sqlite", "both"):
            results.append(_run("sqlite", f"sqlite:///{folder}/load.db", args, folder))
        if args.backend in ("postgres", "both"):
            name, url = _postgres_database(args.pg)
            try:
                results.append(_run("postgres", url, args, folder))
            finally:
                _drop(args.pg, name)
    if args.json:
        for figures in results:
            print(json.dumps(asdict(figures)))
    else:
        print(f"{'backend':<9} {'agents':>6} {'s':>5} {'renewals':>8} {'errors':>6} "
              f"{'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")  # fmt: skip
        for f in results:
            print(
                f"{f.backend:<9} {f.agents:>6} {f.seconds:>5} {f.renewals:>8} {f.errors:>6} "
                f"{f.throughput_per_s:>7} {f.p50_ms:>7} {f.p99_ms:>7} {f.max_ms:>7}"
            )
            if f.first_error:
                print(f"  first error: {f.first_error}")
            if f.server_log:
                print(f"  the server's log about it:\n{f.server_log}")
    return 1 if any(f.errors for f in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
