"""`tenure mcp`: Tenure's MCP tools over stdio, for clients that spawn their servers.

The proxy holds one upstream MCP session with a running Tenure server
(streamable HTTP at `<url>/mcp`, under a bearer token) and answers the
client's `tools/list` and `tools/call` on stdin/stdout by forwarding them
there unchanged, so both transports offer exactly the same tools, checks and
answers. The upstream session opens at start, before the first tool call,
so the server knows the agent is connected from the moment it is spawned.

When the proxy's stdin ends, the agent process that spawned it has exited
(or closed its end): the proxy then deletes its upstream session, which the
server takes as the agent leaving (`session_closed`: its leases turn suspect
and are recovered within 30 s unless it comes back). That is the only way
the proxy says goodbye. SIGTERM or SIGINT end the proxy without a DELETE: a
signal says someone stopped this process, not that the agent is gone (a
client restarting its MCP servers, a supervisor reloading); should the agent
really be gone, the server still notices, because the proxy's connection
drops, and failing that its leases simply expire.

If the upstream session is lost (the server restarted), the proxy opens a
new one and retries the call once. After `register_agent` under an
enrolment key, the proxy keeps the new agent's token for such reconnects, so
it stays that agent.
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
import mcp_types as types
from anyio.abc import TaskStatus
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from tenure import __version__
from tenure.core.errors import StoreUnavailable, TenureError

log = logging.getLogger("tenure.mcp_stdio")

SESSION_HEADER = "mcp-session-id"
#: Seconds allowed for connecting, writing and the DELETE; reads may wait longer
#: (a tool call can take a while under load; the standing stream is idle for long).
CONNECT_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 300.0
#: Seconds between two attempts to reach a server that went away.
RETRY_S = 1.0


def endpoint_url(url: str) -> str:
    """The MCP endpoint of a Tenure server given by its base URL (or the endpoint itself)."""
    url = url.rstrip("/")
    return url if url.endswith("/mcp") else url + "/mcp"


class Upstream:
    """One MCP session with the Tenure server, reopened if the server loses it.

    The session's client lives in one task (`run`), because the SDK's
    connection is a stack of task groups that must be entered and left by the
    same task; tool calls from other tasks borrow the current client and, when
    it fails, ask that task for a new one.
    """

    def __init__(self, url: str, token: str) -> None:
        self.url = endpoint_url(url)
        self.token = token
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        #: What the server tells agents to do, from its initialize answer.
        self.instructions: str | None = None
        self._client: Client | None = None
        self._http: httpx2.AsyncClient | None = None
        self._generation = 0
        self._ready = anyio.Event()  # set while a client is connected
        self._wanted = anyio.Event()  # set to end the current connection
        self._stop = anyio.Event()
        self._goodbye = False

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold the upstream session until `stop`, reconnecting when asked.

        Started with `TaskGroup.start`: the first connection must succeed,
        later ones are retried every `RETRY_S` seconds while the server is away.
        """
        first = True
        while not self._stop.is_set():
            try:
                async with AsyncExitStack() as stack:
                    await self._open(stack)
                    if first:
                        task_status.started()
                        first = False
                    await self._wanted.wait()
                    self._ready = anyio.Event()
                    self._wanted = anyio.Event()
                    self._client = None
                    if self._goodbye:
                        await self._delete()
            except Exception as exc:
                if first:
                    raise
                log.warning("the Tenure server at %s cannot be reached: %r", self.url, exc)
                with anyio.move_on_after(RETRY_S):
                    await self._stop.wait()

    def stop(self, *, goodbye: bool) -> None:
        """End the session; with `goodbye`, delete it first (the agent left)."""
        self._goodbye = goodbye
        self._stop.set()
        self._wanted.set()

    async def _open(self, stack: AsyncExitStack) -> None:
        """Open the session (initialize handshake, so the server can follow it)."""

        async def remember_session(response: httpx2.Response) -> None:
            session = response.headers.get(SESSION_HEADER)
            if session:
                self.session_id = session

        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=httpx2.Timeout(CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
            event_hooks={"response": [remember_session]},
        )
        await stack.enter_async_context(http)
        # No DELETE on the way out by the SDK: only a goodbye sends one.
        transport = streamable_http_client(self.url, http_client=http, terminate_on_close=False)
        client = await stack.enter_async_context(Client(transport, mode="legacy"))
        self._client, self._http = client, http
        self.protocol_version = client.protocol_version
        self.instructions = client.instructions
        self._generation += 1
        self._ready.set()

    async def _delete(self) -> None:
        if self._http is None or self.session_id is None:
            return
        headers = {SESSION_HEADER: self.session_id}
        if self.protocol_version:
            headers["mcp-protocol-version"] = self.protocol_version
        try:
            with anyio.fail_after(CONNECT_TIMEOUT_S):
                await self._http.delete(self.url, headers=headers)
        except Exception as exc:
            log.warning("could not close the upstream session: %r", exc)

    async def list_tools(self) -> list[types.Tool]:
        """The server's tools, as it lists them."""
        listed = await self._call(lambda client: client.list_tools())
        return list(listed.tools)

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Forward one tool call; remember a token that `register_agent` hands out."""
        result: types.CallToolResult = await self._call(
            lambda client: client.call_tool(name, arguments)
        )
        if name == "register_agent" and not result.is_error:
            token = (result.structured_content or {}).get("token")
            if isinstance(token, str) and token:
                self.token = token
        return result

    async def _call(self, fn: Any) -> Any:
        newer_than = 0
        for attempt in (1, 2):
            with anyio.fail_after(CONNECT_TIMEOUT_S):
                # Reconnecting is rare: a short poll keeps the hand-over simple.
                while self._generation <= newer_than or not self._ready.is_set():
                    await anyio.sleep(0.05)
            client, generation = self._client, self._generation
            assert client is not None
            try:
                return await fn(client)
            except Exception as exc:
                if attempt == 2:
                    raise
                # The session is gone (the server restarted) or the connection
                # broke: ask for a fresh one (once, however many calls noticed).
                log.warning("upstream call failed (%r); reconnecting", exc)
                if generation == self._generation:
                    self._wanted.set()
                newer_than = generation
        raise AssertionError("unreachable")


def _reason(exc: BaseException) -> str:
    """The innermost cause of a failure, in one line (task groups wrap them)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _unavailable(message: str) -> types.CallToolResult:
    err = StoreUnavailable(message)
    return _error_result(err)


def _error_result(err: TenureError) -> types.CallToolResult:
    body = err.to_dict()
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(body))],
        structured_content=body,
        is_error=True,
    )


def build_proxy(upstream: Upstream, tools: list[types.Tool]) -> Server[Any]:
    """The stdio-facing MCP server that forwards every tool call to `upstream`."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            return await upstream.call_tool(params.name, dict(params.arguments or {}))
        except Exception as exc:
            reason = _reason(exc)
            log.error("tool %s: the Tenure server could not be reached: %s", params.name, reason)
            return _unavailable(f"the Tenure server at {upstream.url} is unreachable: {reason}")

    return Server(
        "tenure",
        version=__version__,
        title="Tenure (stdio proxy)",
        # The agent reads the server's own instructions, as over HTTP.
        instructions=upstream.instructions,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def run_proxy(url: str, token: str) -> int:
    """Serve on stdin/stdout until stdin ends; then close the upstream session.

    Returns the exit status: 0 after a clean end of input, 1 when the server
    could not be reached at start.
    """
    upstream = Upstream(url, token)
    async with anyio.create_task_group() as group:
        try:
            await group.start(upstream.run)
            tools = await upstream.list_tools()
        except Exception as exc:
            print(
                f"tenure mcp: cannot open a session at {upstream.url}: {_reason(exc)}",
                file=sys.stderr,
            )
            upstream.stop(goodbye=False)
            group.cancel_scope.cancel()
            return 1
        server = build_proxy(upstream, tools)
        try:
            async with stdio_server() as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())
        except BaseException:
            # Cancelled or failed: not the agent leaving, so no goodbye.
            upstream.stop(goodbye=False)
            raise
        # stdin ended: the agent process is gone.
        upstream.stop(goodbye=True)
    return 0


def main(url: str, token: str) -> int:
    """Run the proxy (the body of `tenure mcp`)."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    try:
        return anyio.run(run_proxy, url, token)
    except KeyboardInterrupt:
        return 130


__all__ = ["Upstream", "build_proxy", "endpoint_url", "main", "run_proxy"]
