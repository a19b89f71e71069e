"""The web dashboard: its pages, its sign-in, and the JSON and SSE it reads.

People sign in once with a token (the admin token, or a board's viewer
token) and get an HttpOnly session cookie, so the browser's EventSource,
which cannot send headers, is authenticated too. The cookie holds an opaque
random id; the server keeps, per session, the role and the *digest* of the
token (never the token) and checks that digest against the store on every
request, so a rotated admin token or board key shuts its sessions out at
once. Sessions live in the process's memory: a restart signs people out, and
several replicas behind one address need sticky sessions (the event stream
itself shows every replica's changes, since it tails the store's log).

Every state-changing request (`POST`) must carry the session's CSRF token in
`X-CSRF-Token` and, when the browser sends one, an `Origin` of this server.
Sign-in takes JSON only, which a cross-site form cannot send.

Routes: `GET /` (the board), `GET /login`, `POST /login`, `POST /logout`,
`GET /ui/static/{file}`, and the dashboard's own API under `/ui/api/...`
(JSON reads, an SSE stream of one board's events, and the admin's actions:
unassign, requeue, add a task). No lease logic lives here: reads and actions
go through the Coordinator.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse

from tenure.api.schemas import TaskIn
from tenure.auth import ADMIN_TOKEN_META, Caller, Role, token_hash
from tenure.core.errors import Forbidden, NotFound, Unauthorized
from tenure.core.model import StoredEvent, check_id
from tenure.service import Coordinator
from tenure.store.base import Store, Tx
from tenure.views import task_view

if TYPE_CHECKING:
    from tenure.server import Runtime

COOKIE = "tenure_session"
CSRF_HEADER = "X-CSRF-Token"
#: A session ends this long after sign-in, whatever happens.
SESSION_TTL_S = 12 * 3600.0
#: Sessions one process keeps; the oldest go first past this.
MAX_SESSIONS = 10_000
#: Events of the board shown in the feed when the page loads.
FEED_SIZE = 60
#: Tasks one refetch may name.
MAX_IDS = 200
SSE_PING_S = 15.0
_PAGE = 1000

#: Files of `tenure/api/web` served under /ui/static, with their types.
STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "login.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
#: No inline script or style, nothing from another origin.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
Json = dict[str, Any]


# ---------------------------------------------------------------- sessions
@dataclass(frozen=True, slots=True)
class Session:
    """One signed-in browser: what its token was, never the token itself."""

    role: Role
    token_digest: str
    csrf: str
    started: float


class Sessions:
    """Signed-in browsers of this process, keyed by the digest of the cookie's id
    (so even this table does not hold a usable cookie)."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, limit: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    @staticmethod
    def _key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode("utf-8")).hexdigest()

    def open(self, role: Role, token: str) -> tuple[str, Session]:
        """A new session for a token that just authenticated; returns its cookie id."""
        session_id = secrets.token_urlsafe(32)
        # Monotonic, not the store's clock: a session's age is no lease matter.
        session = Session(role, token_hash(token), secrets.token_urlsafe(24), time.monotonic())
        self._by_id[self._key(session_id)] = session
        while len(self._by_id) > self.limit:
            self._by_id.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session a cookie names, or None."""
        if not session_id:
            return None
        key = self._key(session_id)
        session = self._by_id.get(key)
        if session is None:
            return None
        if time.monotonic() - session.started > self.ttl_s:
            del self._by_id[key]
            return None
        return session

    def close(self, session_id: str | None) -> None:
        """Forget a session (sign-out)."""
        if session_id:
            self._by_id.pop(self._key(session_id), None)

    def __len__(self) -> int:
        return len(self._by_id)


def _caller_of_digest(tx: Tx, role: Role, digest: str) -> Caller:
    """Who a stored token digest still stands for; `Unauthorized` once it was
    rotated away (the admin token) or the board is gone."""
    if role is Role.ADMIN:
        stored = tx.get_meta(ADMIN_TOKEN_META)
        if stored is not None and hmac.compare_digest(stored, digest):
            return Caller(Role.ADMIN)
    elif role is Role.VIEWER:
        board = tx.board_by_key_hash(digest)
        if board is not None and hmac.compare_digest(board.viewer_token_hash or "", digest):
            return Caller(Role.VIEWER, board.id)
    raise Unauthorized("the dashboard session's token is no longer valid; sign in again")


# ------------------------------------------------------------ dependencies
def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.dashboard_sessions
    return sessions


async def _session_caller(request: Request) -> tuple[Caller, Session] | None:
    session = _sessions(request).get(request.cookies.get(COOKIE))
    if session is None:
        return None
    store = _runtime(request).store
    caller = await store.read(lambda tx: _caller_of_digest(tx, session.role, session.token_digest))
    return caller, session


async def signed_in(request: Request) -> tuple[Caller, Session]:
    """The session's caller, re-authenticated now; `Unauthorized` without one."""
    found = await _session_caller(request)
    if found is None:
        raise Unauthorized("sign in at /login")
    return found


SignedIn = Annotated[tuple[Caller, Session], Depends(signed_in)]


def _same_origin(request: Request) -> None:
    """Refuse a request another site's page sent (browsers name it in `Origin`).

    Hosts are compared, not schemes: behind a TLS proxy the browser says https
    while this process sees http.
    """
    origin = request.headers.get("origin")
    if origin is None:
        return
    if urlsplit(origin).netloc != request.headers.get("host", ""):
        raise Forbidden("cross-origin request refused")


async def acting(
    request: Request,
    who: SignedIn,
    csrf: Annotated[str | None, Header(alias=CSRF_HEADER)] = None,
) -> Caller:
    """The caller of a state-changing request: same origin, the session's CSRF token."""
    _same_origin(request)
    caller, session = who
    if not csrf or not hmac.compare_digest(csrf, session.csrf):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header")
    return caller


Acting = Annotated[Caller, Depends(acting)]


def _board(caller: Caller, board_id: str) -> str:
    """`board_id` if the caller may see it (viewers: only their own)."""
    check_id(board_id, "board_id")
    if not caller.is_admin and caller.board_id != board_id:
        raise NotFound(f"no board {board_id!r}")
    return board_id


def _coordinator(request: Request) -> Coordinator:
    return _runtime(request).coordinator


# ------------------------------------------------------------------ pages
def _asset(name: str) -> bytes:
    return resources.files("tenure.api").joinpath("web", name).read_bytes()


def _page(name: str) -> Response:
    return Response(_asset(name), media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS)


pages = APIRouter(include_in_schema=False)


@pages.get("/")
async def board_page(request: Request) -> Response:
    """The board, for a signed-in browser; others go to the sign-in page."""
    try:
        found = await _session_caller(request)
    except Unauthorized:
        found = None
    if found is None:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response
    return _page("index.html")


@pages.get("/login")
async def login_page() -> Response:
    """The sign-in page."""
    return _page("login.html")


class LoginIn(BaseModel):
    """A token to exchange for a session."""

    token: Annotated[str, Field(min_length=1, max_length=512)]


@pages.post("/login")
async def login(body: LoginIn, request: Request) -> Response:
    """Exchange the admin token or a board's viewer token for a session cookie."""
    _same_origin(request)
    caller = await _coordinator(request).authenticate(body.token.strip())
    if caller.role not in (Role.ADMIN, Role.VIEWER):
        raise Forbidden("the dashboard takes the admin token or a board's viewer token")
    sessions = _sessions(request)
    sessions.close(request.cookies.get(COOKIE))
    session_id, _ = sessions.open(caller.role, body.token.strip())
    response = JSONResponse({"ok": True, "role": str(caller.role), "board_id": caller.board_id})
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(SESSION_TTL_S),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@pages.post("/logout")
async def logout(request: Request, who: Acting) -> Response:
    """End the session and drop the cookie."""
    _sessions(request).close(request.cookies.get(COOKIE))
    response = JSONResponse({"ok": True})
    response.delete_cookie(COOKIE, path="/")
    return response


@pages.get("/ui/static/{name}")
async def static(name: str) -> Response:
    """The dashboard's scripts and styles, shipped inside the package."""
    if name not in STATIC:
        raise NotFound(f"no file {name!r}")
    return Response(
        _asset(name),
        media_type=STATIC[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


# ------------------------------------------------------------ the UI's API
api = APIRouter(prefix="/ui/api", include_in_schema=False)


@api.get("/session")
async def session_info(request: Request, who: SignedIn) -> Json:
    """Who is signed in, the CSRF token for actions, and the numbers the page needs."""
    caller, session = who
    policy = _coordinator(request).policy
    return {
        "role": str(caller.role),
        "board_id": caller.board_id,
        "is_admin": caller.is_admin,
        "csrf_token": session.csrf,
        "warning_threshold_s": policy.warning_threshold_s,
    }


@api.get("/boards")
async def boards(request: Request, who: SignedIn) -> Json:
    """The boards the caller may see (a viewer: its own)."""
    return {"boards": await _coordinator(request).admin.list_boards(who[0])}


async def _now(store: Store) -> datetime:
    return await store.read(lambda tx: tx.now)


@api.get("/boards/{board_id}/tasks")
async def tasks(
    request: Request,
    board_id: str,
    who: SignedIn,
    ids: Annotated[str | None, Query(description="Comma-separated task ids")] = None,
) -> Json:
    """The board's tasks with their live leases (those not done, and the done
    ones completed last), or only those `ids` name (a task that no longer
    exists is listed in `missing`)."""
    caller = who[0]
    _board(caller, board_id)
    c = _coordinator(request)
    if ids is None:
        return await c.admin.overview(caller, board_id)
    wanted = [part for part in ids.split(",") if part][:MAX_IDS]
    for task_id in wanted:
        check_id(task_id, "task_id")

    def unit(tx: Tx) -> Json:
        if tx.get_board(board_id) is None:
            raise NotFound(f"no board {board_id!r}")
        found, missing = [], []
        for task_id in wanted:
            task = tx.get_task(board_id, task_id)
            if task is None:
                missing.append(task_id)
            else:
                found.append(task_view(task, tx.now, c.policy, tx.live_lease(board_id, task_id)))
        return {"tasks": found, "missing": missing, "now": tx.now.isoformat()}

    result: Json = await c.store.read(unit)
    return result


@api.get("/boards/{board_id}/statistics")
async def statistics(request: Request, board_id: str, who: SignedIn) -> Json:
    """The board's fleet figures: leases by state and flag, and the counters."""
    caller = who[0]
    _board(caller, board_id)
    return await _coordinator(request).admin.statistics(caller, board_id)


@api.get("/boards/{board_id}/events")
async def recent_events(request: Request, board_id: str, who: SignedIn) -> Json:
    """The board's latest events (for the feed) and the log's head, from which
    the page follows the stream."""
    _board(who[0], board_id)
    store = _runtime(request).store
    rows, head = await recent(store, board_id, await _now(store))
    return {"events": [row.to_dict() for row in rows], "head": head}


async def recent(store: Store, board_id: str, now: datetime) -> tuple[list[StoredEvent], int]:
    """The last `FEED_SIZE` events of a board and the id of the log's newest event.

    The store has no "newest first" query, so this looks for the newest window
    that holds any event (a minute, an hour, a day, all time) and reads forward
    through it: the cost follows recent activity, never the log's length.
    """
    start = 0
    for window in (timedelta(minutes=1), timedelta(hours=1), timedelta(days=1), None):
        since = now - window if window is not None else None
        first = await store.events_after(0, since=since, limit=1)
        if first:
            start = first[0].id - 1
            break
    else:
        return [], 0
    kept: deque[StoredEvent] = deque(maxlen=FEED_SIZE)
    head = start
    while True:
        page = await store.events_after(head, limit=_PAGE)
        for row in page:
            if row.board_id == board_id:
                kept.append(row)
        if page:
            head = page[-1].id
        if len(page) < _PAGE:
            return list(kept), head


@api.get("/boards/{board_id}/stream")
async def stream(
    request: Request,
    board_id: str,
    who: SignedIn,
    after: Annotated[int, Query(ge=0)] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """The board's events as server-sent events, after `after` (or the
    `Last-Event-ID` a reconnecting EventSource sends). The session is checked
    again every few seconds, so a signed-out or revoked viewer stops hearing."""
    _board(who[0], board_id)
    start = after
    if last_event_id and last_event_id.strip().isdigit():
        start = int(last_event_id)
    runtime = _runtime(request)

    async def still_allowed() -> bool:
        if await request.is_disconnected():
            return False
        try:
            return await _session_caller(request) is not None
        except Unauthorized:
            return False

    return EventSourceResponse(
        _follow(runtime, board_id, start, still_allowed),
        ping=SSE_PING_S,
        shutdown_event=runtime.stopping,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _follow(
    runtime: Runtime, board_id: str, cursor: int, allowed: Callable[[], Awaitable[bool]]
) -> AsyncIterator[ServerSentEvent]:
    """Each event of the board after `cursor`, as it lands in the store's log
    (written by any replica). The cursor follows the whole log so a quiet
    board never makes the wait spin."""
    store = runtime.store
    checked = time.monotonic()
    while not runtime.stopping.is_set():
        rows = await store.events_after(cursor, limit=_PAGE)
        for row in rows:
            cursor = row.id
            if row.board_id == board_id:
                yield ServerSentEvent(data=json.dumps(row.to_dict()), id=str(row.id))
        if len(rows) == _PAGE:
            continue
        if time.monotonic() - checked > 5.0:
            checked = time.monotonic()
            if not await allowed():
                return
        await store.wait_for_events(cursor, timeout=1.0)


# actions (admin) ------------------------------------------------------------
@api.post("/boards/{board_id}/tasks")
async def add_task(request: Request, board_id: str, body: TaskIn, who: Acting) -> Json:
    """Add a task to the board (admin)."""
    _board(who, board_id)
    data = body.model_dump(exclude_none=True)
    return await _coordinator(request).admin.add_task(who, board_id, data)


@api.post("/boards/{board_id}/tasks/{task_id}/unassign")
async def unassign(request: Request, board_id: str, task_id: str, who: Acting) -> Json:
    """End the task's lease and put it back on the board with a handoff (admin)."""
    _board(who, board_id)
    return await _coordinator(request).admin.unassign(who, board_id, task_id)


@api.post("/boards/{board_id}/tasks/{task_id}/requeue")
async def requeue(request: Request, board_id: str, task_id: str, who: Acting) -> Json:
    """Bring a blocked or dead-lettered task back to todo (admin)."""
    _board(who, board_id)
    return await _coordinator(request).admin.requeue(who, board_id, task_id)


def install_dashboard(app: FastAPI) -> None:
    """Add the dashboard's pages and API to `app` (call from `create_app`)."""
    app.state.dashboard_sessions = Sessions()
    app.include_router(pages)
    app.include_router(api)


__all__ = ["COOKIE", "CSRF_HEADER", "Sessions", "install_dashboard", "recent"]
