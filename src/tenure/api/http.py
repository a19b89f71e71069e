"""The HTTP API: REST under /api/v1 over the Coordinator, with OpenAPI and SSE.

Two families of routes:

- the agent's protocol, about the caller's own board: `POST /claim`,
  `POST /tasks/{task_id}/progress|heartbeat|block|release|validation`,
  `GET /tasks/{task_id}/context`, `GET /me`, `POST /heartbeat`;
- the board's administration and observation, under `/boards/{board_id}/...`
  (admin token; agents and viewers may read their own board), plus
  `/leases`, `/statistics`, `/events` and `/events/stream` across boards.

Every route takes a bearer token. An enrolment key may only register agents
(`POST /agents`). Every authenticated call of an agent touches its leases:
the Coordinator's agent calls do that themselves; the read routes call
`Coordinator.touch`. Errors leave in SPEC's one shape, whatever raised them
(a `TenureError`, FastAPI's validation, an unknown route, the body limit).
No lease logic lives here; SPEC's error shape is `tenure.api.errors`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse

from tenure.api.errors import install_error_handlers
from tenure.api.schemas import (
    ERROR_RESPONSES,
    AgentIn,
    AssignIn,
    BlockIn,
    BoardIn,
    ClaimIn,
    HeartbeatIn,
    ProgressIn,
    ReleaseIn,
    TaskImport,
    TaskIn,
    TaskPatch,
    ValidationIn,
)
from tenure.auth import Caller, Role
from tenure.core.decisions import Evidence, Report
from tenure.core.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from tenure.core.model import UTC, StoredEvent, TaskStatus
from tenure.core.validate import MAX_EVENT_ID
from tenure.pages import CURSOR_MAX, PAGE_MAX
from tenure.service import Coordinator

if TYPE_CHECKING:
    from tenure.server import Runtime

log = logging.getLogger("tenure.http")

#: Seconds between two keep-alive comments on an idle event stream.
SSE_PING_S = 15.0
#: Events read per query while a stream catches up.
SSE_BATCH = 500

_bearer = HTTPBearer(
    auto_error=False, description="An agent token, an enrolment key or the admin token."
)
Json = dict[str, Any]


# ---------------------------------------------------------- dependencies
def runtime_of(request: Request) -> Runtime:
    """The server's Runtime, set by the lifespan."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def coordinator_of(request: Request) -> Coordinator:
    return runtime_of(request).coordinator


Creds = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def any_caller(request: Request, creds: Creds) -> Caller:
    """Whoever the bearer token names, enrolment keys included."""
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise Unauthorized("send a bearer token: Authorization: Bearer <token>")
    return await coordinator_of(request).authenticate(creds.credentials)


async def caller(request: Request, who: Annotated[Caller, Depends(any_caller)]) -> Caller:
    """A caller that may do more than register: enrolment keys are refused."""
    if who.role is Role.ENROLMENT:
        raise Forbidden("an enrolment key may only register agents (POST /api/v1/agents)")
    return who


async def touching_caller(request: Request, who: Annotated[Caller, Depends(caller)]) -> Caller:
    """A caller whose call, when it is an agent, touches its leases (the read
    routes are not Coordinator agent calls, so they touch here)."""
    if who.is_agent:
        await coordinator_of(request).touch(who)
    return who


Who = Annotated[Caller, Depends(caller)]
Reader = Annotated[Caller, Depends(touching_caller)]
Coord = Annotated[Coordinator, Depends(coordinator_of)]


def own_board(who: Caller, board_id: str) -> str:
    """`board_id` if the caller may see it; agents and viewers see only theirs."""
    if not who.is_admin and who.board_id != board_id:
        raise NotFound(f"no board {board_id!r}")
    return board_id


def scope_of(who: Caller, board_id: str | None) -> str | None:
    """The board a cross-board read is limited to (None: every board, admins only)."""
    if who.is_admin:
        return board_id
    if board_id is not None and board_id != who.board_id:
        raise NotFound(f"no board {board_id!r}")
    return who.board_id


# ---------------------------------------------------------------- routes
router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)


@router.get("/me", tags=["agent protocol"])
async def me(who: Who, c: Coord) -> Json:
    """Who the token belongs to; for an agent, a touch and its notice of leases."""
    answer: Json = {"role": str(who.role), "board_id": who.board_id, "agent_id": who.agent_id}
    if who.is_agent:
        answer["notice"] = await c.touch(who)
    return answer


@router.post("/claim", tags=["agent protocol"])
async def claim(who: Who, c: Coord, body: ClaimIn | None = None) -> Json:
    """`request_next_task`: one ready task of the caller's board under a new lease,
    or `task: null` with the reason and a suggested retry delay. An optional
    `worktree` sets the agent's worktree first (checked against the allowed roots)."""
    return await c.request_next_task(who, worktree=body.worktree if body else None)


@router.post("/heartbeat", tags=["agent protocol"])
async def heartbeat_all(who: Who, c: Coord) -> Json:
    """A sign of life about nothing in particular: touches every lease the agent holds."""
    if not who.is_agent:
        raise Forbidden("heartbeats come from agents")
    return {"ok": True, "notice": await c.touch(who)}


@router.post("/tasks/{task_id}/progress", tags=["agent protocol"])
async def progress(task_id: str, body: ProgressIn, who: Who, c: Coord) -> Json:
    """A progress report by the holder: renews the lease; `completed` finishes the
    task; `blocked` ends the lease. A late report from an old holder claims the task
    back when nobody took it, else is refused with `lease_lost`. With `claim_next`,
    a claim follows in the same transaction: its answer is `next`."""
    report = Report(
        status=body.status,
        progress=body.progress,
        message=body.message,
        branch=body.branch,
        head_sha=body.head_sha,
        epoch=body.epoch,
        validate=body.validate_,
    )
    return await c.report_progress(who, task_id, report, claim_next=body.claim_next)


@router.post("/tasks/{task_id}/heartbeat", tags=["agent protocol"])
async def heartbeat(task_id: str, who: Who, c: Coord, body: HeartbeatIn | None = None) -> Json:
    """A touch aimed at one task (same holder rules as a report; no progress)."""
    body = body or HeartbeatIn()
    evidence = (
        Evidence(conflict=body.conflict, changed=body.changed)
        if (body.conflict or body.changed)
        else None
    )
    return await c.heartbeat(who, task_id, epoch=body.epoch, evidence=evidence)


@router.post("/tasks/{task_id}/block", tags=["agent protocol"])
async def block(task_id: str, body: BlockIn, who: Who, c: Coord) -> Json:
    """The holder cannot go on: the lease ends and the task is `blocked`. With
    `claim_next`, a claim follows in the same transaction: its answer is `next`."""
    return await c.report_blocker(
        who, task_id, body.description, body.severity, claim_next=body.claim_next
    )


@router.post("/tasks/{task_id}/release", tags=["agent protocol"])
async def release(task_id: str, who: Who, c: Coord, body: ReleaseIn | None = None) -> Json:
    """The holder gives the task back to the board, with a handoff."""
    return await c.release_task(who, task_id, (body or ReleaseIn()).message)


@router.post("/tasks/{task_id}/validation", tags=["agent protocol"])
async def validation(task_id: str, body: ValidationIn, who: Who, c: Coord) -> Json:
    """The result of the validation window, by the holder."""
    return await c.validation_result(who, task_id, body.passed, body.note)


@router.get("/tasks/{task_id}/context", tags=["agent protocol"])
async def context(task_id: str, who: Who, c: Coord) -> Json:
    """The task, its handoff, comments and dependencies, for the caller's board."""
    if not who.is_agent:
        raise Forbidden("use GET /api/v1/boards/{board_id}/tasks/{task_id}/context")
    return await c.get_task_context(who, task_id)


# boards --------------------------------------------------------------------
@router.post("/boards", status_code=201, tags=["boards"])
async def create_board(body: BoardIn, who: Who, c: Coord) -> Json:
    """Create a board (admin). The answer holds its enrolment key and viewer token, once."""
    return await c.admin.create_board(who, body.id, body.name, body.project_root)


@router.get("/boards", tags=["boards"])
async def list_boards(who: Reader, c: Coord) -> Json:
    """Every board (admin), or the caller's own."""
    return {"boards": await c.admin.list_boards(who)}


@router.get("/boards/{board_id}/tasks", tags=["tasks"])
async def list_tasks(
    board_id: str,
    who: Reader,
    c: Coord,
    status: TaskStatus | None = None,
    limit: Annotated[int | None, Query(ge=1, le=PAGE_MAX)] = None,
    after: Annotated[str | None, Query(max_length=CURSOR_MAX)] = None,
) -> Json:
    """A board's tasks with their live leases, oldest first, optionally of one
    status. With `limit`, a page of that many: `next` is the `after` of the
    page that follows, null on the last one."""
    own_board(who, board_id)
    scope = None if who.is_agent else board_id
    status_text = str(status) if status else None
    return await c.admin.list_tasks(who, scope, status_text, limit=limit, after=after)


@router.get("/boards/{board_id}/overview", tags=["tasks"])
async def overview(board_id: str, who: Reader, c: Coord) -> Json:
    """The board as its dashboard opens it: every task not done, the done ones
    completed last (at most `done_shown`, newest first), `done_total`, and the
    server's `now`. What a live view of a board with a long history reads."""
    own_board(who, board_id)
    return await c.admin.overview(who, None if who.is_agent else board_id)


@router.post("/boards/{board_id}/tasks", status_code=201, tags=["tasks"])
async def add_task(board_id: str, body: TaskIn, who: Who, c: Coord) -> Json:
    """Add one task (admin)."""
    return await c.admin.add_task(who, board_id, body.model_dump(exclude_none=True))


_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": TaskImport.model_json_schema(ref_template="#/components/schemas/{model}")
            },
            "application/yaml": {
                "schema": {
                    "type": "string",
                    "description": "A YAML list of tasks, or a mapping with `tasks`.",
                }
            },
        },
    }
}


@router.post(
    "/boards/{board_id}/tasks/import", status_code=201, tags=["tasks"], openapi_extra=_IMPORT_BODY
)
async def import_tasks(board_id: str, request: Request, who: Who, c: Coord) -> Json:
    """Add many tasks at once from JSON (a list, or `{"tasks": [...]}`) or YAML
    (Content-Type `application/yaml`). Dependencies may point within the batch; a
    cycle or an unknown dependency refuses the whole batch."""
    raw = await request.body()
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    try:
        if "yaml" in kind or kind == "text/plain":
            data = yaml.safe_load(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidInput(
            f"the body is not valid {'YAML' if 'yaml' in kind else 'JSON'}: {exc}"
        ) from None
    if isinstance(data, dict) and set(data) == {"tasks"}:
        data = data["tasks"]
    if not isinstance(data, list):
        raise InvalidInput("send a list of tasks, or an object with `tasks`")
    return {"tasks": await c.admin.import_tasks(who, board_id, data)}


@router.get("/boards/{board_id}/tasks/{task_id}", tags=["tasks"])
async def show_task(board_id: str, task_id: str, who: Reader, c: Coord) -> Json:
    """One task with its live lease, lease history and comments."""
    own_board(who, board_id)
    return await c.admin.show_task(who, None if who.is_agent else board_id, task_id)


@router.patch("/boards/{board_id}/tasks/{task_id}", tags=["tasks"])
async def update_task(board_id: str, task_id: str, body: TaskPatch, who: Who, c: Coord) -> Json:
    """Change a task's fields (admin)."""
    return await c.admin.update_task(who, board_id, task_id, body.model_dump(exclude_unset=True))


@router.delete("/boards/{board_id}/tasks/{task_id}", status_code=204, tags=["tasks"])
async def delete_task(board_id: str, task_id: str, who: Who, c: Coord) -> Response:
    """Delete a task with no live lease and no dependants (admin)."""
    await c.admin.delete_task(who, board_id, task_id)
    return Response(status_code=204)


@router.get("/boards/{board_id}/tasks/{task_id}/context", tags=["tasks"])
async def board_task_context(board_id: str, task_id: str, who: Reader, c: Coord) -> Json:
    """What an agent would see about the task (admins also see an expired handoff)."""
    own_board(who, board_id)
    if who.is_agent:
        return await c.get_task_context(who, task_id)
    return await c.get_task_context(who, task_id, board_id)


@router.post("/boards/{board_id}/tasks/{task_id}/cancel", tags=["tasks"])
async def cancel_task(board_id: str, task_id: str, who: Who, c: Coord) -> Json:
    """Take a task off the queue; a live lease ends (admin)."""
    return await c.admin.cancel_task(who, board_id, task_id)


@router.post("/boards/{board_id}/tasks/{task_id}/assign", tags=["tasks"])
async def assign(board_id: str, task_id: str, body: AssignIn, who: Who, c: Coord) -> Json:
    """Give a `todo` task to a named agent, through the claim path (admin)."""
    return await c.assign(who, board_id, task_id, body.agent_id)


@router.post("/boards/{board_id}/tasks/{task_id}/unassign", tags=["tasks"])
async def unassign(board_id: str, task_id: str, who: Who, c: Coord) -> Json:
    """End the task's live lease and put it back on the board with a handoff (admin)."""
    return await c.admin.unassign(who, board_id, task_id)


@router.post("/boards/{board_id}/tasks/{task_id}/requeue", tags=["tasks"])
async def requeue(board_id: str, task_id: str, who: Who, c: Coord) -> Json:
    """Bring a blocked or dead-lettered task back to `todo` (admin)."""
    return await c.admin.requeue(who, board_id, task_id)


@router.post("/boards/{board_id}/tasks/{task_id}/validation", tags=["tasks"])
async def board_validation(
    board_id: str, task_id: str, body: ValidationIn, who: Who, c: Coord
) -> Json:
    """The result of a validation window, by an admin (a checker)."""
    return await c.validation_result(who, task_id, body.passed, body.note, board_id=board_id)


# agents --------------------------------------------------------------------
@router.post("/agents", status_code=201, tags=["agents"])
async def register_agent(
    body: AgentIn, who: Annotated[Caller, Depends(any_caller)], c: Coord, response: Response
) -> Json:
    """Register an agent: under a board's enrolment key (the agent joins that board)
    or the admin token (name `board_id`). The answer holds the agent's token, once.
    Under an agent's own token, updates its profile."""
    data = body.model_dump(exclude={"board_id"}, exclude_none=True)
    answer = await c.admin.register_agent(who, data, body.board_id)
    if who.is_agent:
        response.status_code = 200
    return answer


@router.get("/boards/{board_id}/agents", tags=["agents"])
async def list_agents(board_id: str, who: Reader, c: Coord) -> Json:
    """A board's agents (never their tokens)."""
    own_board(who, board_id)
    return {"agents": await c.admin.list_agents(who, None if who.is_agent else board_id)}


@router.post("/boards/{board_id}/agents/{agent_id}/revoke", tags=["agents"])
async def revoke_agent(board_id: str, agent_id: str, who: Who, c: Coord) -> Json:
    """Revoke an agent's token at once (admin); its leases run on to recovery."""
    return {"agent": await c.admin.revoke_agent(who, board_id, agent_id)}


@router.post("/boards/{board_id}/agents/{agent_id}/rotate", tags=["agents"])
async def rotate_agent(board_id: str, agent_id: str, who: Who, c: Coord) -> Json:
    """A new token for an agent; the old one stops working (admin)."""
    return await c.admin.rotate_agent_token(who, board_id, agent_id)


@router.delete("/boards/{board_id}/agents/{agent_id}", status_code=204, tags=["agents"])
async def delete_agent(board_id: str, agent_id: str, who: Who, c: Coord) -> Response:
    """Remove an agent that holds no live lease (admin)."""
    await c.admin.deregister_agent(who, board_id, agent_id)
    return Response(status_code=204)


# observation ---------------------------------------------------------------
@router.get("/leases", tags=["observation"])
async def list_leases(who: Reader, c: Coord, board_id: str | None = None) -> Json:
    """Live leases, with state, seconds left and flags."""
    scope = scope_of(who, board_id)
    return {"leases": await c.admin.list_leases(who, None if who.is_agent else scope)}


@router.get("/statistics", tags=["observation"])
async def statistics(request: Request, who: Reader, c: Coord, board_id: str | None = None) -> Json:
    """Leases by state and flag, average renewals, the counters, and the monitor."""
    scope = scope_of(who, board_id)
    figures = await c.admin.statistics(who, None if who.is_agent else scope)
    runtime = runtime_of(request)
    if figures.get("board_id") is None:
        runtime.telemetry.set_lease_gauges(figures)
    figures["monitor"] = runtime.monitor_statistics()
    return figures


def _as_utc(moment: datetime | None) -> datetime | None:
    """`moment` in UTC (naive means UTC); a moment that UTC cannot hold (year 1
    at +05:00, year 9999 at -05:00) is refused here, not overflowed in the store."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(
            "since is out of the range of dates", details={"field": "since"}
        ) from None


@router.get("/events", tags=["observation"])
async def events(
    who: Reader,
    c: Coord,
    board_id: str | None = None,
    task_id: str | None = None,
    agent_id: str | None = None,
    after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> Json:
    """The event log (the lease history), by id; resume with `after`."""
    scope = scope_of(who, board_id)
    rows = await c.admin.events(
        who,
        None if who.is_agent else scope,
        after=after,
        task_id=task_id,
        agent_id=agent_id,
        since=_as_utc(since),
        limit=limit,
    )
    return {"events": rows, "last_id": rows[-1]["id"] if rows else after}


@router.get(
    "/events/stream",
    tags=["observation"],
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "One SSE message per event."}
    },
)
async def stream_events(
    request: Request,
    who: Reader,
    c: Coord,
    board_id: str | None = None,
    task_id: str | None = None,
    agent_id: str | None = None,
    after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Server-sent events tailing the log by id: each event's `id:` is its log id,
    so a client that reconnects with `Last-Event-ID` misses nothing. Starts after
    `after` (0: the whole log). A comment line is sent every 15 s while idle."""
    scope = scope_of(who, board_id)
    start = after
    if last_event_id:
        if not last_event_id.strip().isdigit() or int(last_event_id) > MAX_EVENT_ID:
            raise InvalidInput(
                "Last-Event-ID must be an event id", details={"field": "Last-Event-ID"}
            )
        start = int(last_event_id)

    def wanted(row: StoredEvent) -> bool:
        return (
            (scope is None or row.board_id == scope)
            and (task_id is None or row.task_id == task_id)
            and (agent_id is None or row.agent_id == agent_id)
        )

    runtime = runtime_of(request)
    return EventSourceResponse(
        _tail(runtime, start, wanted, request.is_disconnected),
        ping=SSE_PING_S,
        shutdown_event=runtime.stopping,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _tail(
    runtime: Runtime,
    cursor: int,
    wanted: Callable[[StoredEvent], bool],
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[ServerSentEvent]:
    """Every event after `cursor` that `wanted` keeps, then each new one as it lands.

    The cursor follows the whole log, not only the kept events, so a filter that
    keeps nothing never makes the wait return at once forever.
    """
    store = runtime.store
    while not runtime.stopping.is_set():
        rows = await store.events_after(cursor, limit=SSE_BATCH)
        for row in rows:
            cursor = row.id
            if wanted(row):
                yield ServerSentEvent(data=json.dumps(row.to_dict()), id=str(row.id))
        if len(rows) == SSE_BATCH:
            continue
        if await disconnected():
            return
        await store.wait_for_events(cursor, timeout=1.0)


# health --------------------------------------------------------------------
health = APIRouter(tags=["health"])


@health.get("/healthz")
async def healthz() -> Json:
    """The process answers."""
    return {"status": "ok"}


@health.get(
    "/readyz", responses={503: {"description": "The monitor died or the store is unreachable."}}
)
async def readyz(request: Request) -> Response:
    """Ready to serve: the monitor runs and the store answers."""
    checks = await runtime_of(request).readiness()
    ready = all(check["ok"] for check in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unready", "checks": checks},
        status_code=200 if ready else 503,
    )


def install_routes(app: FastAPI) -> None:
    """Add the API, the health checks and SPEC's error shape to `app`."""
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(health)


__all__ = ["install_routes", "router"]
