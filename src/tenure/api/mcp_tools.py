"""The MCP tools Tenure offers agents: their schemas, their descriptions, their calls.

One table (`TOOLS`) names each tool, tells a model when to call it and what
the answer means, and gives its JSON Schema; `call_tool` checks the arguments
against SPEC's limits and makes the one Coordinator call the tool stands for.
Both MCP transports use this table: the streamable HTTP endpoint serves it,
and the stdio proxy (`tenure mcp`) forwards to that endpoint unchanged.

Arguments are checked here rather than by the SDK's signature-derived
validation so that a wrong argument is answered in SPEC's error shape
(`{"error": {"code": "invalid_input", ...}}`) like every other error, and so
that a refused call changes nothing: not even a touch.

Identity never comes from an argument: the caller is whoever the request's
bearer token (or the session it is bound to) says it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tenure.auth import Caller, Role
from tenure.core.decisions import Evidence, Report
from tenure.core.errors import InvalidInput
from tenure.core.model import check_id
from tenure.core.validate import (
    MAX_EPOCH,
    MAX_TEXT_BYTES,
    check_branch,
    check_head_sha,
    check_text,
)
from tenure.service import Coordinator

#: Statuses a progress report may carry.
STATUSES = ("in_progress", "completed", "blocked")
#: Severities a blocker may carry.
SEVERITIES = ("low", "medium", "high", "critical")

LEASE_LOST_ADVICE = (
    "If a call answers with the error code `lease_lost`, the task was taken back "
    "(you went silent too long, or another agent now holds it): stop working on "
    "it at once, do not push more commits for it and do not report on it again; "
    "your branch is preserved for whoever continues. Call request_next_task for new work."
)

_ID_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"}
_TASK_ID = {**_ID_SCHEMA, "description": "The task's id, as request_next_task gave it."}
_EPOCH = {
    "type": "integer",
    "minimum": 0,
    "maximum": MAX_EPOCH,
    "description": "Optional fencing token: the lease epoch request_next_task gave you. "
    "If it is no longer current the call is refused with lease_lost.",
}
_CLAIM_NEXT = {
    "type": "boolean",
    "default": False,
    "description": "Then claim your next task in the same call (answer: `next`).",
}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool: its name, what a model should know about it, its input schema."""

    name: str
    title: str
    description: str
    properties: Mapping[str, Any]
    required: tuple[str, ...] = ()

    @property
    def input_schema(self) -> dict[str, Any]:
        """The JSON Schema of the tool's arguments."""
        schema: dict[str, Any] = {
            "type": "object",
            "properties": dict(self.properties),
            "additionalProperties": False,
        }
        if self.required:
            schema["required"] = list(self.required)
        return schema


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "register_agent",
        "Register this agent",
        "Call once, first, when your MCP connection was configured with a board's "
        "enrolment key: it creates your agent on that board and binds the rest of "
        "this session to it (you do not pass any id or token to later calls). The "
        "answer holds `agent` and, once, `token`: your own credential, to configure "
        "instead of the enrolment key if you reconnect later. Called again (or with "
        "an agent token) it updates your profile (name, role, skills, worktree). "
        "List your real skills: tasks that require skills go only to agents that "
        "registered them.",
        {
            "agent_id": {**_ID_SCHEMA, "description": "Your id on the board, e.g. `claude-1`."},
            "name": {"type": "string", "maxLength": 200, "description": "A readable name."},
            "role": {
                "type": "string",
                "maxLength": 200,
                "description": "e.g. `backend developer`.",
            },
            "skills": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 64},
                "maxItems": 32,
                "description": 'What you can do, e.g. ["python", "sql"].',
            },
            "worktree": {
                "type": "string",
                "description": "Absolute path of your git worktree, if the server can read it.",
            },
        },
        ("agent_id",),
    ),
    ToolSpec(
        "request_next_task",
        "Get your next task",
        "Call when you have no task: it gives you one ready task under a lease "
        "(`task`, `lease` with `epoch`, `expires_at`, `seconds_left`, `phase`, "
        "`state`). If `handoff` is present another agent worked on it before you: "
        "follow `handoff.instructions` first (merge its branch, read its log, "
        "continue rather than restart). If `task` is null nothing is ready: "
        "`reason` says why; wait `retry_after_s` seconds and ask again. The lease "
        "stays alive while you keep calling tools; report progress at least every "
        "few minutes. " + LEASE_LOST_ADVICE,
        {
            "worktree": {
                "type": "string",
                "description": "Optional: absolute path of the git worktree you will work "
                "in, if the server can read it (set once; it stays with you).",
            },
        },
    ),
    ToolSpec(
        "report_task_progress",
        "Report progress on your task",
        "Call after each meaningful step (every few minutes at least) on the task "
        "you hold: it stores your progress and message and renews your lease. Put "
        "your git `branch` and `head_sha` in so a successor can continue your work. "
        "`status`: `in_progress` (default), `completed` when the work is done and "
        "pushed (add `validate: true` to ask for a validation window instead of "
        "finishing at once), or `blocked` (prefer report_blocker). The answer holds "
        "the task and your renewed lease. With `claim_next: true` the next task is "
        "claimed in the same call once this report ends your lease: the answer's "
        "`next` is what request_next_task would have answered. " + LEASE_LOST_ADVICE,
        {
            "task_id": _TASK_ID,
            "status": {"type": "string", "enum": list(STATUSES), "default": "in_progress"},
            "progress": {
                "type": "integer",
                "minimum": 0,
                "maximum": 100,
                "description": "Percent done, 0 to 100.",
            },
            "message": {
                "type": "string",
                "description": f"What you did, what comes next (at most {MAX_TEXT_BYTES} bytes).",
            },
            "branch": {"type": "string", "description": "The git branch holding your work."},
            "head_sha": {"type": "string", "description": "The commit at the tip of that branch."},
            "validate": {
                "type": "boolean",
                "default": False,
                "description": "With status `completed`: keep the task open for validation.",
            },
            "claim_next": _CLAIM_NEXT,
            "epoch": _EPOCH,
        },
        ("task_id",),
    ),
    ToolSpec(
        "report_blocker",
        "Report that you are blocked",
        "Call when you cannot go on with your task (missing access, unclear "
        "requirement, broken dependency). It ends your lease and marks the task "
        "`blocked` so a human can look; then call request_next_task, or pass "
        "`claim_next: true` to claim your next task in the same call (answer: `next`).",
        {
            "task_id": _TASK_ID,
            "description": {
                "type": "string",
                "description": "What blocks you and what would unblock you "
                f"(at most {MAX_TEXT_BYTES} bytes).",
            },
            "severity": {"type": "string", "enum": list(SEVERITIES), "default": "medium"},
            "claim_next": _CLAIM_NEXT,
        },
        ("task_id", "description"),
    ),
    ToolSpec(
        "release_task",
        "Give a task back",
        "Call when you must stop working on a task you hold without finishing it "
        "(you are shutting down, or it is not for you). The task goes back to the "
        "board with a handoff for the next agent; say in `message` how far you got.",
        {
            "task_id": _TASK_ID,
            "message": {"type": "string", "description": "How far you got, for the next agent."},
        },
        ("task_id",),
    ),
    ToolSpec(
        "get_task_context",
        "Read a task's full context",
        "Call to read a task of your board in full: its description, its handoff "
        "(with the previous agent's branch and notes), its comments and its "
        "dependencies with their status. Reading also keeps your lease alive.",
        {"task_id": _TASK_ID},
    ),
    ToolSpec(
        "heartbeat",
        "Say you are alive",
        "Call during long steps that give you nothing to report (a long build or "
        "test run) to keep your lease alive. Any other tool call does the same. "
        "Name `task_id` to check that you still hold that task (lease_lost if not). "
        "Set `conflict: true` if your worktree has unmerged paths: resolving a merge "
        "conflict earns a limited extension.",
        {
            "task_id": {**_TASK_ID, "description": "Optional: the task you are working on."},
            "epoch": _EPOCH,
            "conflict": {
                "type": "boolean",
                "default": False,
                "description": "Your worktree has unmerged paths (a merge in progress).",
            },
            "changed": {
                "type": "boolean",
                "default": False,
                "description": "Files in your worktree changed since your last call.",
            },
        },
    ),
    ToolSpec(
        "ping",
        "Check the connection",
        "Call to check that Tenure answers and who you are to it. The answer shows "
        "your identity and, in `notice`, the leases you hold (task id, epoch, "
        "expires at, seconds left, phase, state) and any you lost. It keeps your "
        "leases alive like every other call.",
        {},
    ),
)

TOOLS_BY_NAME: dict[str, ToolSpec] = {tool.name: tool for tool in TOOLS}

#: What a tool returns: the JSON-ready answer.
Answer = dict[str, Any]


# ---------------------------------------------------------------- arguments
def _check_fields(spec: ToolSpec, args: Mapping[str, Any]) -> None:
    unknown = sorted(set(args) - set(spec.properties))
    if unknown:
        raise InvalidInput(
            f"{spec.name} takes no argument {', '.join(unknown)}; "
            f"it takes {sorted(spec.properties)}",
            details={"fields": unknown},
        )
    missing = [name for name in spec.required if args.get(name) is None]
    if missing:
        raise InvalidInput(f"{spec.name} needs {', '.join(missing)}", details={"fields": missing})


def _task_id(args: Mapping[str, Any]) -> str:
    return check_id(args.get("task_id"), "task_id")  # type: ignore[arg-type]


def _integer(value: Any, field: str, low: int, high: int | None = None) -> int | None:
    """An integer field; integral floats (50.0) pass, as some clients send them."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise InvalidInput(
            f"{field} must be an integer {bounds}",
            details={"field": field, "value": str(value)[:40]},
        )
    return value


def _flag(value: Any, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"{field} must be true or false", details={"field": field})
    return value


def _choice(value: Any, field: str, choices: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if value not in choices:
        raise InvalidInput(
            f"{field} must be one of {', '.join(choices)}",
            details={"field": field, "value": str(value)[:40], "choices": list(choices)},
        )
    return str(value)


def _text(value: Any, field: str) -> str:
    return check_text("" if value is None else value, field)


def report_from(args: Mapping[str, Any]) -> Report:
    """The `Report` a report_task_progress call describes, checked."""
    branch = args.get("branch")
    head_sha = args.get("head_sha")
    return Report(
        status=_choice(args.get("status"), "status", STATUSES, "in_progress"),
        progress=_integer(args.get("progress"), "progress", 0, 100),
        message=_text(args.get("message"), "message"),
        branch=check_branch(branch) if branch is not None else None,
        head_sha=check_head_sha(head_sha) if head_sha is not None else None,
        epoch=_integer(args.get("epoch"), "epoch", 0, MAX_EPOCH),
        validate=_flag(args.get("validate"), "validate"),
    )


# -------------------------------------------------------------------- calls
#: Called with the new agent's caller and token when register_agent created an
#: agent under an enrolment key, so the transport can bind its session to it.
Bind = Callable[[Caller, str], Awaitable[None]]


async def call_tool(
    coordinator: Coordinator,
    caller: Caller,
    name: str,
    args: Mapping[str, Any],
    bind: Bind | None = None,
) -> Answer:
    """Run tool `name` for `caller`; raises `TenureError` on refusal.

    Arguments are checked before anything is called, so a refused call
    changes nothing at all.
    """
    spec = TOOLS_BY_NAME.get(name)
    if spec is None:
        raise InvalidInput(f"no tool {name!r}; the tools are {sorted(TOOLS_BY_NAME)}")
    if not isinstance(args, Mapping):
        raise InvalidInput("tool arguments must be an object")
    _check_fields(spec, args)
    c = coordinator

    if name == "register_agent":
        made = await c.admin.register_agent(caller, dict(args))
        token = made.get("token")
        if token is not None and bind is not None:
            agent = made["agent"]
            bound = Caller(Role.AGENT, agent["board_id"], agent["id"])
            await bind(bound, token)
            made["notice"] = await c.touch(bound)
            made["message"] = (
                "Registered. This session now acts as this agent: call request_next_task. "
                "Keep `token` if you may reconnect later; it is shown only once."
            )
        return {"ok": True, **made}
    if name == "request_next_task":
        return await c.request_next_task(caller, worktree=args.get("worktree"))
    if name == "report_task_progress":
        task_id = _task_id(args)
        report = report_from(args)
        then = _flag(args.get("claim_next"), "claim_next")
        return await c.report_progress(caller, task_id, report, claim_next=then)
    if name == "report_blocker":
        task_id = _task_id(args)
        description = check_text(args.get("description"), "description")
        if not description.strip():
            raise InvalidInput("description is required", details={"field": "description"})
        severity = _choice(args.get("severity"), "severity", SEVERITIES, "medium")
        then = _flag(args.get("claim_next"), "claim_next")
        return await c.report_blocker(caller, task_id, description, severity, claim_next=then)
    if name == "release_task":
        task_id = _task_id(args)
        return await c.release_task(caller, task_id, _text(args.get("message"), "message"))
    if name == "get_task_context":
        return await c.get_task_context(caller, _task_id(args))
    if name == "heartbeat":
        about = _task_id(args) if args.get("task_id") is not None else None
        epoch = _integer(args.get("epoch"), "epoch", 0, MAX_EPOCH)
        conflict = _flag(args.get("conflict"), "conflict")
        changed = _flag(args.get("changed"), "changed")
        evidence = Evidence(conflict=conflict, changed=changed) if conflict or changed else None
        answer = await c.heartbeat(caller, about, epoch=epoch, evidence=evidence)
        # Without a task the Coordinator answers with the bare notice.
        return answer if about is not None else {"ok": True, "notice": answer}
    # ping
    return {
        "ok": True,
        "pong": True,
        "you": {"role": str(caller.role), "board_id": caller.board_id, "agent_id": caller.agent_id},
        "notice": await c.touch(caller),
    }


__all__ = [
    "SEVERITIES",
    "STATUSES",
    "TOOLS",
    "TOOLS_BY_NAME",
    "ToolSpec",
    "call_tool",
    "report_from",
]
