"""MCP for AI agents: Tenure's tools over streamable HTTP at `/mcp`.

The server enters `mcp_extension(app, runtime)` in its lifespan; it runs the
SDK's session manager there and mounts `/mcp` on the app. Every request
passes through `McpEndpoint`, which does what the SDK cannot know about:

- **Identity.** Every request carries a bearer token. The endpoint resolves
  it to a `Caller` before the SDK sees the request (a missing or unknown
  token is answered 401 in SPEC's error shape) and hands the caller to the
  tools through the request scope. A session opened under a board's
  enrolment key is bound, by `register_agent`, to the agent it created: the
  binding (session id -> agent) is held here, server-side, and honoured only
  for requests that present the token that opened the session or the new
  agent's token. No tool takes an agent id that could be faked.
- **Sessions.** A session opened by an agent calls
  `Coordinator.session_opened`; the client's `DELETE` of its session calls
  `session_closed` (when it was the agent's last open session, the
  Coordinator marks its leases suspect): an explicit close. A client whose
  connection drops without a DELETE (a network fault, or its process tree
  was killed) is noticed when its standing `GET` stream ends: that counts as
  a close too, but a **dropped** one (`dropped=True`: the client may come
  back, and the `adaptive` detector waits longer for it), and a request on
  the same session afterwards (a client that reconnects) counts as a reopen.
  Sessions the SDK forgot (idle) are dropped closes as well; a `DELETE` after
  a drop makes the suspicion explicit. A server shutting down never calls
  `session_closed`. The sessions of a server that crashed are counted out
  by the others once it is seen gone, marking nothing suspect
  (`tenure.sessions`).
- **One protocol era.** The SDK also serves the sessionless 2026 protocol. A
  client that probes for it with `server/discover` is told the method does
  not exist, so clients that can (the SDK's own, in `auto` mode) fall back to
  the session handshake, whose sessions Tenure can follow. A client pinned
  to the sessionless protocol still works; its leases fall back to expiry.

Tools, their schemas and their calls live in `tenure.api.mcp_tools`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import (
    DEFAULT_SESSION_IDLE_TIMEOUT,
    StreamableHTTPSessionManager,
)
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenure import __version__
from tenure.api.mcp_tools import TOOLS, call_tool
from tenure.auth import Caller, token_hash
from tenure.core.errors import TenureError, Unauthorized
from tenure.service import Coordinator
from tenure.sessions import GoneServers
from tenure.store.base import Tx
from tenure.units import Effects

log = logging.getLogger("tenure.mcp")

#: Where the endpoint leaves the resolved caller for the tools.
CALLER_SCOPE_KEY = "tenure.caller"
SESSION_HEADER = "mcp-session-id"
METHOD_HEADER = "mcp-method"
#: SPEC's request body limit.
MAX_BODY_BYTES = 1024 * 1024
#: The SDK discards a session with no request for this long; so does the book.
ABANDONED_AFTER_S = DEFAULT_SESSION_IDLE_TIMEOUT + 60.0
#: JSON-RPC "method not found".
_METHOD_NOT_FOUND = -32601

INSTRUCTIONS = (
    "Tenure hands you tasks under leases. Loop: request_next_task; if it gives a task "
    "with a handoff, follow handoff.instructions first; work, calling "
    "report_task_progress (progress, message, branch, head_sha) every few minutes; "
    "finish with report_task_progress status=completed claim_next=true (its `next` is "
    "your next task, as request_next_task answers), or report_blocker, or "
    "release_task. Any tool call keeps your lease alive. Every answer's `notice` shows "
    "your leases and any you lost. On error code lease_lost: stop that task at once, "
    "push nothing more for it, and call request_next_task."
)


class Runtime(Protocol):
    """What `mcp_extension` needs from the server's runtime."""

    @property
    def coordinator(self) -> Coordinator: ...


# ------------------------------------------------------------------ sessions
@dataclass
class _Session:
    """One MCP session as Tenure follows it."""

    opener: str  # digest of the token that opened it
    caller: Caller | None = None  # the agent it acts as, once known
    agent_token: str | None = None  # digest of that agent's token, when bound
    open: bool = False  # counted open in the Coordinator
    dropped: bool = False  # counted closed because its connection dropped
    closing: bool = False  # a DELETE is in flight
    streams: int = 0  # standing GET streams in flight
    seen_at: float = field(default_factory=time.monotonic)  # its last request

    def accepts(self, digest: str | None) -> bool:
        """A request may use this session only with the token that opened it or its agent's."""
        return digest is not None and digest in (self.opener, self.agent_token)


@dataclass
class SessionBook:
    """Which agent each MCP session belongs to, and whether it counts as open.

    Held in this process's memory: with several replicas, route a session's
    requests to one replica (sticky sessions) or lose close detection.
    """

    coordinator: Coordinator
    sessions: dict[str, _Session] = field(default_factory=dict)
    shutting_down: bool = False
    #: True once the server began to stop (a signal came): from then on no
    #: close, by DELETE or a dropped stream, counts as an agent leaving.
    server_stopping: Callable[[], bool] = lambda: False

    def get(self, session_id: str | None) -> _Session | None:
        """The session with this id, if Tenure follows it."""
        return self.sessions.get(session_id) if session_id else None

    def seen(self, session_id: str | None) -> None:
        """A request arrived on the session."""
        entry = self.get(session_id)
        if entry is not None:
            entry.seen_at = time.monotonic()

    def caller_of(self, session_id: str | None, digest: str | None) -> Caller | None:
        """The agent a session is bound to, if `digest` may use it."""
        entry = self.get(session_id)
        if entry is not None and entry.caller is not None and entry.accepts(digest):
            return entry.caller
        return None

    async def opened(self, session_id: str, digest: str, caller: Caller) -> None:
        """A new session: an agent's counts as open at once; others wait for a binding."""
        await self._forget_abandoned()
        entry = _Session(opener=digest)
        self.sessions[session_id] = entry
        if caller.is_agent:
            entry.caller = caller
            await self._open(entry)

    async def bind(self, session_id: str, caller: Caller, token: str) -> None:
        """`register_agent` under an enrolment key: the session now acts as `caller`."""
        entry = self.get(session_id)
        if entry is None or entry.caller is not None:
            return
        entry.caller = caller
        entry.agent_token = token_hash(token)
        await self._open(entry)

    async def resumed(self, session_id: str) -> None:
        """A request on a session whose connection had dropped: it is back."""
        entry = self.get(session_id)
        if entry is not None and not entry.open and not entry.closing and entry.caller is not None:
            await self._open(entry)

    async def dropped(self, session_id: str) -> None:
        """The session's standing stream ended without a DELETE: the client is gone,
        perhaps for a moment (a dropped close)."""
        entry = self.get(session_id)
        if entry is None or self._stopping() or entry.closing or entry.streams:
            return
        await self._close(entry, dropped=True)

    async def closed(self, session_id: str, *, dropped: bool = False) -> None:
        """The client deleted its session (an explicit close), or, with
        `dropped`, the SDK no longer knows it (the client left without a DELETE)."""
        entry = self.sessions.pop(session_id, None)
        if entry is not None and not self._stopping():
            await self._close(entry, dropped=dropped)

    def _stopping(self) -> bool:
        return self.shutting_down or self.server_stopping()

    async def _forget_abandoned(self) -> None:
        """Forget sessions idle past the SDK's idle timeout: it has discarded them.

        Their clients left without a DELETE and without a standing stream to
        notice (or were noticed already); without this the book would grow
        with every client that ever crashed.
        """
        horizon = time.monotonic() - ABANDONED_AFTER_S
        for session_id, entry in list(self.sessions.items()):
            if entry.streams == 0 and entry.seen_at < horizon:
                await self.closed(session_id, dropped=True)

    async def _open(self, entry: _Session) -> None:
        if entry.open or entry.caller is None:
            return
        entry.open, entry.dropped = True, False
        try:
            await self.coordinator.session_opened(entry.caller)
        except TenureError as err:
            log.warning("session_opened for %s failed: %s", entry.caller.agent_id, err.message)

    async def _close(self, entry: _Session, *, dropped: bool) -> None:
        if entry.caller is None:
            return
        # An explicit close of a session counted closed by a drop speaks once more:
        # the client did leave, so its suspicion becomes explicit.
        after_drop = not entry.open and entry.dropped and not dropped
        if not entry.open and not after_drop:
            return
        entry.open, entry.dropped = False, dropped
        try:
            await self.coordinator.session_closed(
                entry.caller, dropped=dropped, after_drop=after_drop
            )
        except TenureError as err:
            log.warning("session_closed for %s failed: %s", entry.caller.agent_id, err.message)


# ------------------------------------------------------------------ endpoint
def _bearer(headers: Headers) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def _send_json(
    send: Send, status: int, body: Any, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    payload = json.dumps(body).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *extra]})
    await send({"type": "http.response.body", "body": payload})


def _jsonrpc_error(code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}


@dataclass
class McpEndpoint:
    """The ASGI app mounted at `/mcp`: identity and session tracking around the SDK."""

    coordinator: Coordinator
    manager: StreamableHTTPSessionManager
    book: SessionBook

    @classmethod
    def create(cls, coordinator: Coordinator) -> McpEndpoint:
        """An endpoint serving Tenure's tools over `coordinator` (run `manager.run()`)."""
        book = SessionBook(coordinator)
        server = build_server(coordinator, book)
        manager = StreamableHTTPSessionManager(
            app=server,
            # Each call answered with one JSON body rather than an SSE stream
            # of one event: the SDK's stream per request cost a call about
            # half its time, and stalled some for 100 ms (closed loop on
            # SQLite: about 400 calls a second before, 900 after; p99 at
            # 50/s from about 40 ms to 10). The spec requires clients to take
            # both. What a stream could add, messages tied to a call (progress,
            # sampling), no tool sends; the standing GET stream is unchanged.
            json_response=True,
            stateless=False,
            max_request_body_size=MAX_BODY_BYTES,
            session_idle_timeout=DEFAULT_SESSION_IDLE_TIMEOUT,
        )
        return cls(coordinator, manager, book)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.manager.handle_request(scope, receive, send)
            return
        headers = Headers(scope=scope)
        method = scope["method"]
        session_id = headers.get(SESSION_HEADER)
        if (
            method == "POST"
            and session_id is None
            and headers.get(METHOD_HEADER) == "server/discover"
        ):
            # Steer probing clients to the session handshake (see the module docstring).
            await _send_json(
                send, 404, _jsonrpc_error(_METHOD_NOT_FOUND, "server/discover is not offered")
            )
            return
        token = _bearer(headers)
        digest = token_hash(token) if token else None
        entry = self.book.get(session_id)
        if entry is not None and not entry.accepts(digest):
            # Another credential may not use (or end) someone's session.
            await _send_json(send, 404, _jsonrpc_error(-32600, "Session not found"))
            return
        try:
            caller = self.book.caller_of(session_id, digest)
            if caller is None:
                caller = await self.coordinator.authenticate(token)
        except TenureError as err:
            extra = ((b"www-authenticate", b"Bearer"),) if isinstance(err, Unauthorized) else ()
            await _send_json(send, err.http_status, err.to_dict(), extra)
            return
        scope[CALLER_SCOPE_KEY] = caller
        self.book.seen(session_id)

        if method == "DELETE":
            await self._delete(session_id, entry, scope, receive, send)
        elif method == "GET" and entry is not None:
            await self._stream(session_id, entry, scope, receive, send)
        elif session_id is None:

            async def opened(status: int, created: str | None) -> None:
                if created and status < 400 and digest is not None:
                    await self.book.opened(created, digest, caller)

            await self._forward(scope, receive, send, before_answer=opened)
        else:
            if entry is not None:
                await self.book.resumed(session_id)
            status, _ = await self._forward(scope, receive, send)
            if status == 404 and entry is not None:
                # The SDK forgot the session (its idle timeout): settle the count.
                await self.book.closed(session_id, dropped=True)

    async def _delete(
        self,
        session_id: str | None,
        entry: _Session | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        if entry is None or session_id is None:
            await self._forward(scope, receive, send)
            return
        entry.closing = True

        async def closed(status: int, _: str | None) -> None:
            # Settled before the client hears back, so "deleted" means "closed".
            if status < 300:
                await self.book.closed(session_id)

        status, _ = await self._forward(scope, receive, send, before_answer=closed)
        if status is None or status >= 300:
            entry.closing = False

    async def _stream(
        self, session_id: str | None, entry: _Session, scope: Scope, receive: Receive, send: Send
    ) -> None:
        assert session_id is not None
        await self.book.resumed(session_id)
        gone = False

        async def watch() -> Message:
            # `http.disconnect` is how the server learns that the client went
            # away; a stream ended by a draining server never sees one.
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
            return message

        entry.streams += 1
        try:
            status, _ = await self._forward(scope, watch, send)
        finally:
            entry.streams -= 1
        if status == 200 and gone:
            await self.book.dropped(session_id)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        before_answer: Callable[[int, str | None], Awaitable[None]] | None = None,
    ) -> tuple[int | None, str | None]:
        """Let the SDK answer; return the status and any session id it created.

        `before_answer` runs once the SDK has decided its answer (status and
        session id) and before the client receives it.
        """
        seen: dict[str, Any] = {"status": None, "session": None}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for key, value in message.get("headers", []):
                    if key.decode("latin-1").lower() == SESSION_HEADER:
                        seen["session"] = value.decode("latin-1")
                if before_answer is not None:
                    await before_answer(seen["status"], seen["session"])
            await send(message)

        await self.manager.handle_request(scope, receive, watch)
        return seen["status"], seen["session"]


# -------------------------------------------------------------------- server
def _result(answer: dict[str, Any], *, error: bool = False) -> types.CallToolResult:
    text = json.dumps(answer, ensure_ascii=False, default=str)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=json.loads(text),
        is_error=error,
    )


def tool_error(err: TenureError) -> types.CallToolResult:
    """A tool error whose text is SPEC's error shape."""
    return _result(err.to_dict(), error=True)


def build_server(coordinator: Coordinator, book: SessionBook | None = None) -> Server[Any]:
    """The MCP server (the SDK's low-level one) with Tenure's tools over `coordinator`."""
    listed = [
        types.Tool(
            name=t.name, title=t.title, description=t.description, input_schema=t.input_schema
        )
        for t in TOOLS
    ]

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def handle_call(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        request = ctx.request
        scope = getattr(request, "scope", None)
        caller = scope.get(CALLER_SCOPE_KEY) if isinstance(scope, dict) else None
        if not isinstance(caller, Caller):
            return tool_error(Unauthorized("a bearer token is required"))
        session_id = request.headers.get(SESSION_HEADER) if request is not None else None

        async def bind(agent: Caller, token: str) -> None:
            if book is not None and session_id:
                await book.bind(session_id, agent, token)

        try:
            answer = await call_tool(coordinator, caller, params.name, params.arguments or {}, bind)
        except TenureError as err:
            return tool_error(err)
        except Exception:
            log.exception("tool %s failed", params.name)
            failure = TenureError("the tool failed inside Tenure; see the server log")
            return tool_error(failure)
        return _result(answer)

    return Server(
        "tenure",
        version=__version__,
        title="Tenure",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=handle_call,
    )


@asynccontextmanager
async def mcp_extension(app: Any, runtime: Runtime) -> AsyncIterator[McpEndpoint]:
    """Serve MCP at `/mcp` on `app` for as long as the server runs.

    Entered by the server's lifespan: the session manager's tasks live inside
    it. Leaving it (the server shutting down) closes every session without
    telling the Coordinator, so no lease turns suspect because of a restart.
    """
    endpoint = McpEndpoint.create(runtime.coordinator)
    stopping = getattr(runtime, "stopping", None)  # the server's Runtime has one
    if stopping is not None:
        endpoint.book.server_stopping = stopping.is_set
    await forget_sessions_of_a_previous_run(runtime.coordinator)
    route: BaseRoute = Route("/mcp", endpoint=_as_asgi(endpoint))
    routes: list[BaseRoute] = app.router.routes
    async with endpoint.manager.run():
        # First, so no catch-all route of the app (a dashboard at "/") shadows it.
        routes.insert(0, route)
        settling = asyncio.create_task(GoneServers(runtime.coordinator).run())
        try:
            yield endpoint
        finally:
            settling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await settling
            endpoint.book.shutting_down = True
            if route in routes:
                routes.remove(route)


async def forget_sessions_of_a_previous_run(coordinator: Coordinator) -> int:
    """Set every agent's open-session count to 0 when no other server can hold any.

    MCP sessions live in the memory of the process that served them, and a
    server shutting down closes them without telling the Coordinator (that
    must never make leases suspect). Their counts would stay up for good, and
    an agent whose count never falls back to 0 is never noticed leaving. With
    SQLite one server process owns the database, so at its start no session
    is open anywhere. With PostgreSQL, only when no other server runs on the
    database (`Store.sole_server`); while another runs, nothing is reset
    (the sessions of servers that are gone are counted out one server at
    a time: `tenure.sessions.GoneServers`). Returns how many agents were reset.
    """
    if not await coordinator.store.sole_server():
        log.info("not known to be the only server on this database: MCP session counts kept")
        return 0

    def unit(tx: Tx, effects: Effects) -> int:
        return tx.forget_sessions()

    reset = await coordinator.run(unit)
    if reset:
        log.info("forgot the MCP sessions of %d agents from before this start", reset)
    return reset


def _as_asgi(endpoint: McpEndpoint) -> ASGIApp:
    """Starlette treats a plain callable object as an ASGI app; say so for mypy."""
    return endpoint


__all__ = [
    "CALLER_SCOPE_KEY",
    "INSTRUCTIONS",
    "McpEndpoint",
    "SessionBook",
    "build_server",
    "mcp_extension",
    "tool_error",
]
