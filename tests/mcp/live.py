"""A real Tenure server in a subprocess, and MCP agents that talk to it.

`LiveServer` starts `tenure.server.serve` (the real app, uvicorn, the real
monitor, MCP mounted by its lifespan) on a fresh SQLite file with settings
from the environment. Tests administer boards and read state through their
own Coordinator on the same file, so they need no admin token.

`agent_session` connects with the SDK's own client, over streamable HTTP or
over stdio through a spawned `tenure mcp` proxy, and returns an `McpAgent`
whose `call` gives back the parsed answer (or raises `ToolFailed` with SPEC's
error body).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tenure.auth import ADMIN
from tenure.service import Coordinator
from tenure.settings import load_settings
from tenure.store.base import Store
from tenure.store.postgres import open_postgres
from tenure.store.sqlite import open_sqlite

ROOT = Path(__file__).resolve().parents[2]
TENURE_BIN = Path(sys.executable).with_name("tenure")
SERVE = (
    "import sys; from tenure.server import serve; from tenure.settings import load_settings; "
    "sys.exit(serve(load_settings()))"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """One `tenure serve` process on its own SQLite file (or on the
    PostgreSQL database `env` names in `TENURE_STORE_DATABASE_URL`)."""

    directory: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def db(self) -> Path:
        return self.directory / "tenure.db"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return self.url + "/mcp"

    def server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENURE_")}
        env.update(
            TENURE_STORE_DATABASE_URL=f"sqlite:///{self.db}",
            TENURE_SERVER_HOST="127.0.0.1",
            TENURE_SERVER_PORT=str(self.port),
            TENURE_LOG_LEVEL="WARNING",
        )
        env.update(self.env)
        return env

    def start(self, timeout: float = 20.0) -> None:
        log = (self.directory / "server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE],
            env=self.server_env(),
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited early:\n{self.log()}")
            try:
                # No token: our endpoint answers 401, which proves /mcp is mounted.
                if httpx.post(self.mcp_url, json={}, timeout=1.0).status_code == 401:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not start within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    @asynccontextmanager
    async def admin(self) -> AsyncIterator[Admin]:
        """A Coordinator of the test's own on the server's database (its
        SQLite file, or the PostgreSQL database `env` names)."""
        env = self.server_env()
        settings = load_settings(env, toml_path=None)
        url = env["TENURE_STORE_DATABASE_URL"]
        store: Store = (
            await open_postgres(url) if url.startswith("postgresql") else await open_sqlite(self.db)
        )
        try:
            yield Admin(Coordinator(store, settings.policy()))
        finally:
            await store.close()


@dataclass
class Admin:
    """Board set-up and state reads, straight through a Coordinator."""

    coordinator: Coordinator

    async def board(self, *task_ids: str, **task_fields: Any) -> tuple[str, str]:
        """A fresh board with `task_ids` as tasks; returns (board id, enrolment key)."""
        board_id = "b-" + uuid.uuid4().hex[:10]
        made = await self.coordinator.admin.create_board(ADMIN, board_id)
        for task_id in task_ids:
            await self.add_task(board_id, task_id, **task_fields)
        return board_id, made["enrolment_key"]

    async def add_task(self, board_id: str, task_id: str, **fields: Any) -> None:
        data = {"id": task_id, "title": f"Task {task_id}", **fields}
        await self.coordinator.admin.add_task(ADMIN, board_id, data)

    async def agent(self, board_id: str, agent_id: str) -> str:
        """Register an agent directly; returns its token."""
        made = await self.coordinator.admin.register_agent(ADMIN, {"agent_id": agent_id}, board_id)
        return str(made["token"])

    async def task(self, board_id: str, task_id: str) -> dict[str, Any]:
        return await self.coordinator.admin.show_task(ADMIN, board_id, task_id)

    async def lease(self, board_id: str, task_id: str) -> dict[str, Any] | None:
        leases = await self.coordinator.admin.list_leases(ADMIN, board_id)
        return next((lease for lease in leases if lease["task_id"] == task_id), None)


class ToolFailed(Exception):
    """A tool answered with isError; `error` is SPEC's {"code", "message", "details"}."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(json.dumps(body)[:300])
        self.body = body
        self.error: dict[str, Any] = body.get("error", {})
        self.code = self.error.get("code")


@dataclass
class McpAgent:
    """An MCP client session, as an agent uses it."""

    client: Client

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await self.client.call_tool(tool, arguments)
        text = "".join(getattr(block, "text", "") for block in result.content)
        body = json.loads(text)
        if result.is_error:
            raise ToolFailed(body)
        assert isinstance(body, dict)
        return body

    async def fails(self, tool: str, **arguments: Any) -> ToolFailed:
        """The call must fail; its error."""
        try:
            answer = await self.call(tool, **arguments)
        except ToolFailed as failed:
            return failed
        raise AssertionError(f"{tool} succeeded: {answer}")


def stdio_parameters(server: LiveServer, token: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=str(TENURE_BIN),
        args=["mcp", "--url", server.url],
        env={"TENURE_TOKEN": token, "PATH": os.environ.get("PATH", "")},
        cwd=str(ROOT),
    )


@asynccontextmanager
async def agent_session(server: LiveServer, token: str, transport: str) -> AsyncIterator[McpAgent]:
    """An MCP session under `token` over `transport` ("http" or "stdio")."""
    if transport == "http":
        # mode "auto" (the SDK's default) probes server/discover first: Tenure
        # steers it to the session handshake.
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
        async with http, Client(streamable_http_client(server.mcp_url, http_client=http)) as client:
            yield McpAgent(client)
    else:
        async with Client(stdio_parameters(server, token)) as client:
            yield McpAgent(client)


def proxy_pids() -> list[int]:
    """The `tenure mcp` processes this test process spawned."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = stat.rsplit(")", 1)[1].split()[1]
        if parent == me and b"mcp" in cmdline and b"--url" in cmdline:
            found.append(int(entry.name))
    return found


def stored(record: Any) -> Any:
    """A record as stored: without the fields computed from the moment it was read."""
    if isinstance(record, dict):
        return {k: stored(v) for k, v in record.items() if k not in {"seconds_left", "state"}}
    if isinstance(record, list):
        return [stored(item) for item in record]
    return record


async def wait_for(
    check: Callable[[], Awaitable[Any]], timeout: float, step: float = 0.1
) -> tuple[Any, float]:
    """Poll `check` until it returns something truthy; that and the seconds it took."""
    started = time.monotonic()
    while True:
        value = await check()
        elapsed = time.monotonic() - started
        if value:
            return value, elapsed
        if elapsed > timeout:
            raise AssertionError(f"nothing within {timeout} s")
        await anyio.sleep(step)
