"""JSON-ready views of Tenure's records, the same on every transport.

The HTTP API, the MCP tools, the CLI and the dashboard all show a lease the
same way (task id, epoch, expires at, seconds left, phase, state, flags), so
the shape lives here once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tenure.core import lease as lease_rules
from tenure.core.handoff import is_visible
from tenure.core.model import Agent, Board, Comment, Handoff, Lease, Task
from tenure.core.policy import Policy

#: Recently shown UTC moments (see `tenure.store.rows.encode_time`: the same
#: lease times are shown again at every call). Bounded: emptied when full.
_SHOWN: dict[datetime, str] = {}
_SHOWN_MAX = 4096


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 text for a moment, or None."""
    if not moment:
        return None
    if moment.tzinfo is not UTC:
        # Only UTC moments are remembered: equal instants in other zones
        # would share an entry but not their text.
        return moment.isoformat()
    text = _SHOWN.get(moment)
    if text is None:
        if len(_SHOWN) >= _SHOWN_MAX:
            _SHOWN.clear()
        text = _SHOWN[moment] = moment.isoformat()
    return text


def lease_view(lease: Lease, now: datetime, policy: Policy) -> dict[str, Any]:
    """A lease as agents and people see it."""
    return {
        "task_id": lease.task_id,
        "board_id": lease.board_id,
        "agent_id": lease.agent_id,
        "epoch": lease.epoch,
        "version": lease.version,
        "state": str(lease_rules.lease_state(lease, now, policy)),
        "flags": sorted(str(flag) for flag in lease.flags),
        "phase": lease_rules.phase_of(lease, policy),
        "assigned_at": iso(lease.assigned_at),
        "expires_at": iso(lease.expires_at),
        "seconds_left": round(lease_rules.seconds_left(lease, now), 3),
        "grace_s": lease.grace_s,
        "recover_after": iso(lease.recover_after),
        "last_renewed_at": iso(lease.last_renewed_at),
        "last_signal_at": iso(lease.last_signal_at),
        "renewal_count": lease.renewal_count,
        "progress": lease.progress,
        "message": lease.message,
        "branch": lease.branch,
        "head_sha": lease.head_sha,
        "conflict_extensions": lease.conflict_extensions,
        "suspect_since": iso(lease.suspect_since),
        # Why it is suspect: its connection dropped (True) or its session
        # closed (False); under `adaptive` a drop is given longer.
        "suspect_dropped": lease.suspect_dropped,
        "ended_at": iso(lease.ended_at),
        "end_reason": str(lease.end_reason) if lease.end_reason else None,
    }


class LeaseViews:
    """`lease_view` at one moment, each lease's dict made once: an agent's
    answer shows its lease up to three times (with the task, alone, and in
    its notice), and the three are one and the same."""

    __slots__ = ("_made", "now", "policy")

    def __init__(self, now: datetime, policy: Policy) -> None:
        self.now = now
        self.policy = policy
        # id -> (the lease, its view): the lease is kept so its id stays its own.
        self._made: dict[int, tuple[Lease, dict[str, Any]]] = {}

    def of(self, lease: Lease) -> dict[str, Any]:
        made = self._made.get(id(lease))
        if made is None or made[0] is not lease:
            made = self._made[id(lease)] = (lease, lease_view(lease, self.now, self.policy))
        return made[1]


def handoff_view(handoff: Handoff | None, now: datetime, *, include_expired: bool = False) -> Any:
    """A handoff as the next agent receives it; None once it has expired."""
    if handoff is None or not (include_expired or is_visible(handoff, now)):
        return None
    return handoff.to_dict()


def task_view(
    task: Task,
    now: datetime,
    policy: Policy,
    lease: Lease | None = None,
    *,
    include_expired_handoff: bool = False,
    views: LeaseViews | None = None,
) -> dict[str, Any]:
    """A task with its live lease (if any) and its current handoff."""
    if lease is None:
        shown = None
    else:
        shown = views.of(lease) if views is not None else lease_view(lease, now, policy)
    return {
        "board_id": task.board_id,
        "id": task.id,
        "title": task.title,
        "description": task.description,
        "status": str(task.status),
        "priority": str(task.priority),
        "labels": list(task.labels),
        "required_skills": list(task.required_skills),
        "estimated_hours": task.estimated_hours,
        "dependencies": list(task.dependencies),
        "assignee": task.assignee,
        "epoch": task.epoch,
        "recovery_count": task.recovery_count,
        "flags": sorted(str(flag) for flag in task.flags),
        "dead_lettered": task.dead_lettered,
        "blocked_reason": task.blocked_reason,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "completed_at": iso(task.completed_at),
        "handoff": handoff_view(task.handoff, now, include_expired=include_expired_handoff),
        "lease": shown,
    }


def agent_view(agent: Agent) -> dict[str, Any]:
    """An agent's public profile (never its token)."""
    return {
        "board_id": agent.board_id,
        "id": agent.id,
        "name": agent.name,
        "role": agent.role,
        "skills": list(agent.skills),
        "worktree": agent.worktree,
        "revoked": agent.revoked,
        "open_sessions": agent.open_sessions,
        "created_at": iso(agent.created_at),
        "last_seen_at": iso(agent.last_seen_at),
    }


def board_view(board: Board) -> dict[str, Any]:
    """A board's public fields (never its keys)."""
    return {
        "id": board.id,
        "name": board.name,
        "project_root": board.project_root,
        "created_at": iso(board.created_at),
    }


def comment_view(comment: Comment) -> dict[str, Any]:
    """A comment on a task."""
    return {
        "id": comment.id,
        "task_id": comment.task_id,
        "at": iso(comment.at),
        "author": comment.author,
        "body": comment.body,
    }
