"""Over the wire: a real `tenure serve` subprocess on SQLite (or, with
`--backend postgres`, on the local PostgreSQL), on loopback.

- Open loop: 50 agents each renewing (a progress report) once a second, an
  offered load of 50/s, over HTTP and over MCP (streamable HTTP, the SDK's
  own client). Latency is measured from each call's scheduled moment, so a
  server that falls behind shows it (no coordinated omission): p50, p99, max.
- Closed loop: C agents renewing back to back for a few seconds at growing
  C; the highest rate with zero errors.
- Memory: the resident size of a server process whose database holds 100k
  live leases, after it answered calls and ran a monitor pass.

The database, board, agents and leases are prepared through a Coordinator
on the file before the server starts (bulk SQL for the 100k), so the server
is measured, not the set-up.

    .venv/bin/python bench/server_bench.py --seconds 20
    .venv/bin/python bench/server_bench.py --backend postgres --skip-memory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import Bench, percentile, pg_recreate, seed_live

from tenure.auth import ADMIN
from tenure.clock import SystemClock
from tenure.core.policy import Policy
from tenure.monitor import Monitor
from tenure.service import Coordinator, Options
from tenure.store.base import Store
from tenure.store.postgres import open_postgres
from tenure.store.sqlite import open_sqlite

SERVE = (
    "import sys; from tenure.server import serve; from tenure.settings import load_settings; "
    "sys.exit(serve(load_settings()))"
)
AGENTS = 50
#: The database `--backend postgres` recreates for the server.
WIRE_DB = "tenure_bench_wire"
#: The clients: the lean HTTP one (the server's own latency), httpx's
#: AsyncClient (what a Python agent using httpx sees), the MCP SDK's client.
TRANSPORTS = ("lean", "http", "mcp")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One `tenure serve` process on the store at `database_url`."""

    def __init__(self, folder: Path, database_url: str) -> None:
        self.folder, self.database_url, self.port = folder, database_url, _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENURE_")}
        env.update(
            TENURE_STORE_DATABASE_URL=self.database_url,
            TENURE_SERVER_HOST="127.0.0.1",
            TENURE_SERVER_PORT=str(self.port),
            TENURE_LOG_LEVEL="WARNING",
        )
        log = (self.folder / "server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.folder / "server.log").read_text()[-2000:])
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not start")

    def rss_mib(self) -> float:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        return kb / 1024

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


async def prepare(database_url: str, agents: int, live: int = 0) -> list[tuple[str, str]]:
    """A board with `agents` agents each holding one lease (and `live` seeded
    leases) in the store at `database_url`; returns (token, task id) per agent."""
    kind = "sqlite" if database_url.startswith("sqlite:///") else "postgres"
    store: Store
    if kind == "sqlite":
        store = await open_sqlite(Path(database_url.removeprefix("sqlite:///")), SystemClock())
    else:
        store = await open_postgres(database_url)
    try:
        c = Coordinator(store, Policy(), Options())
        await c.admin.ensure_admin_token()
        await c.admin.create_board(ADMIN, "bench")
        bench = Bench(kind, store, c, Monitor(c), "bench")
        if live:
            await seed_live(bench, 0, live)
        await c.admin.import_tasks(
            ADMIN, "bench", [{"id": f"wire-{n:03d}", "title": "wire"} for n in range(agents)]
        )
        held = []
        for n in range(agents):
            made = await c.admin.register_agent(ADMIN, {"agent_id": f"wire-agent-{n:03d}"}, "bench")
            got = await c.request_next_task(bench.agent(f"wire-agent-{n:03d}"))
            held.append((str(made["token"]), str(got["task"]["id"])))
        return held
    finally:
        await store.close()


# transports ---------------------------------------------------------------------


class HttpAgent:
    def __init__(self, url: str, token: str, task_id: str) -> None:
        self.client = httpx.AsyncClient(
            base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        self.task_id = task_id
        self.n = 0

    async def renew(self) -> bool:
        self.n += 1
        answer = await self.client.post(
            f"/tasks/{self.task_id}/progress", json={"progress": self.n % 100, "message": "step"}
        )
        return answer.status_code == 200

    async def close(self) -> None:
        await self.client.aclose()


class LeanHttpAgent:
    """The same call as HttpAgent over one kept-alive socket, with nothing
    between the bench and the wire: a request written, a response read by its
    Content-Length. It measures the server; httpx's AsyncClient adds several
    milliseconds of its own per call on this machine (see docs/performance.md)."""

    def __init__(self, url: str, token: str, task_id: str) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.head = (
            f"POST /api/v1/tasks/{task_id}/progress HTTP/1.1\r\nHost: {self.host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        )
        self.n = 0
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def renew(self) -> bool:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        self.n += 1
        body = json.dumps({"progress": self.n % 100, "message": "step"}).encode()
        writer.write(f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        return head.startswith(b"HTTP/1.1 200")

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            await self.streams[1].wait_closed()


class McpAgent:
    """An MCP session over streamable HTTP. The SDK's client must be entered and
    left in one task, so a task of its own holds the session and makes the calls
    handed to it through a queue."""

    def __init__(self, url: str, token: str, task_id: str) -> None:
        self.url, self.token, self.task_id = url + "/mcp", token, task_id
        self.n = 0
        self._calls: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[bool]] | None] = (
            asyncio.Queue()
        )
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        #: The first refusal's text, to say why a run had errors.
        self.first_error = ""

    async def open(self) -> None:
        self._task = asyncio.create_task(self._hold())
        await self._ready

    async def _hold(self) -> None:
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        try:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
            async with http, Client(streamable_http_client(self.url, http_client=http)) as client:
                self._ready.set_result(None)
                while (item := await self._calls.get()) is not None:
                    arguments, answer = item
                    try:
                        result = await client.call_tool("report_task_progress", arguments)
                        if result.is_error and not self.first_error:
                            self.first_error = "".join(
                                getattr(block, "text", "") for block in result.content
                            )[:300]
                        answer.set_result(not result.is_error)
                    except Exception as exc:
                        answer.set_exception(exc)
        except Exception as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)

    async def renew(self) -> bool:
        self.n += 1
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        arguments = {"task_id": self.task_id, "progress": self.n % 100, "message": "step"}
        await self._calls.put((arguments, answer))
        return await answer

    async def close(self) -> None:
        await self._calls.put(None)
        if self._task is not None:
            await self._task


async def _agents(kind: str, url: str, held: list[tuple[str, str]]) -> list[Any]:
    if kind == "http":
        return [HttpAgent(url, token, task) for token, task in held]
    if kind == "lean":
        return [LeanHttpAgent(url, token, task) for token, task in held]
    agents = [McpAgent(url, token, task) for token, task in held]
    for agent in agents:
        await agent.open()
    return agents


async def open_loop(agents: list[Any], rate_each: float, seconds: float) -> dict[str, Any]:
    """Each agent calls `rate_each` times a second, staggered; latency from schedule."""
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter() + 0.2
    period = 1.0 / rate_each

    async def run(k: int, agent: Any) -> None:
        nonlocal errors
        n = 0
        while True:
            due = start + (k / len(agents)) * period + n * period
            if due - start > seconds:
                return
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                ok = await agent.renew()
            except Exception:
                ok = False
            latencies.append((time.perf_counter() - due) * 1000)
            errors += 0 if ok else 1
            n += 1

    await asyncio.gather(*(run(k, a) for k, a in enumerate(agents)))
    return {
        "offered_per_s": len(agents) * rate_each,
        "calls": len(latencies),
        "errors": errors,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
    }


async def closed_loop(agents: list[Any], seconds: float) -> dict[str, Any]:
    """Every agent renews back to back for `seconds`."""
    done = errors = 0
    stop = time.perf_counter() + seconds

    async def run(agent: Any) -> None:
        nonlocal done, errors
        while time.perf_counter() < stop:
            try:
                ok = await agent.renew()
            except Exception:
                ok = False
            done += 1
            errors += 0 if ok else 1

    start = time.perf_counter()
    await asyncio.gather(*(run(a) for a in agents))
    elapsed = time.perf_counter() - start
    return {"concurrency": len(agents), "rate": done / elapsed, "errors": errors}


async def bench_wire(
    folder: Path,
    seconds: float,
    closed_seconds: float,
    *,
    backend: str = "sqlite",
    transports: tuple[str, ...] = TRANSPORTS,
) -> dict[str, Any]:
    """Open and closed loop over HTTP and MCP on one server."""
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'wire.db'}"
    else:
        pg_recreate(WIRE_DB)
        url = f"postgresql://postgres@127.0.0.1:5432/{WIRE_DB}"
    held = await prepare(url, AGENTS)
    server = Server(folder, url)
    server.start()
    out: dict[str, Any] = {}
    try:
        for kind in transports:
            agents = await _agents(kind, server.url, held)
            try:
                await closed_loop(agents[:5], 1.0)  # warm the connections and caches
                out[f"{kind}_open"] = await open_loop(agents, 1.0, seconds)
                best: dict[str, Any] = {"rate": 0.0}
                levels = []
                for concurrency in (1, 4, 16, 50):
                    got = await closed_loop(agents[:concurrency], closed_seconds)
                    levels.append(got)
                    if got["errors"] == 0 and got["rate"] > best["rate"]:
                        best = got
                out[f"{kind}_closed"] = {"levels": levels, "best": best}
            finally:
                for agent in agents:
                    await agent.close()
    finally:
        server.stop()
    return out


async def bench_memory(folder: Path, live: int) -> dict[str, Any]:
    """RSS of a server with `live` live leases, idle and after calls and a pass."""
    db = folder / "memory.db"
    url = f"sqlite:///{db}"
    held = await prepare(url, 10, live)
    server = Server(folder, url)
    server.start()
    try:
        idle = server.rss_mib()
        agents = await _agents("http", server.url, held)
        await closed_loop(agents, 2.0)
        async with httpx.AsyncClient(base_url=server.url) as admin:
            # list the board (every live lease through the server once)
            token = await _admin_token(db)
            await admin.get(
                "/api/v1/boards/bench/tasks",
                params={"status": "in_progress"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=120,
            )
        await asyncio.sleep(11)  # one monitor pass (default interval 10 s)
        busy = server.rss_mib()
        for agent in agents:
            await agent.close()
        return {"live": live, "rss_idle_mib": idle, "rss_after_mib": busy}
    finally:
        server.stop()


async def _admin_token(db: Path) -> str:
    """A fresh admin token written into the database (the first one is not kept)."""
    store = await open_sqlite(db, SystemClock())
    try:
        return await Coordinator(store).admin.rotate_admin_token()
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="open-loop duration")
    parser.add_argument("--closed-seconds", type=float, default=4.0)
    parser.add_argument("--memory-live", type=int, default=100_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tenure-wire-"))
    out = await bench_wire(
        folder,
        args.seconds,
        args.closed_seconds,
        backend=args.backend,
        transports=tuple(args.transports.split(",")),
    )
    if not args.skip_memory:
        out["memory"] = await bench_memory(folder, args.memory_live)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
