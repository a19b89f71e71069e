"""SPEC's holder rules: who may act on a task, and what a refusal records.

`judge` decides, for an agent acting on a task, between the live holder's
act, a claim-back by the old holder of a recovered task nobody took since,
`lease_lost` (a late note kept, the handoff's progress never lowered) and
`not_holder`. The acts themselves live in `tenure.core.lease`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from tenure.core.decisions import Change, ChangeKind, Subject
from tenure.core.effects import Effects, lease_event, new_lease
from tenure.core.errors import LeaseLost, NotHolder
from tenure.core.evolve import evolve
from tenure.core.handoff import with_late_report
from tenure.core.model import (
    RECOVERY_REASONS,
    Counter,
    Event,
    EventType,
    Lease,
    Task,
    TaskStatus,
    check_id,
    ensure_utc,
)
from tenure.core.policy import Policy

__all__ = ["Act", "judge", "refuse", "task_event"]

#: An act of the holder on its live lease: (task, lease) -> Change.
Act = Callable[[Task, Lease], Change]


# Holder rules --------------------------------------------------------------------


def _holder_story(subject: Subject, agent_id: str) -> tuple[str, str | None, datetime | None]:
    """Who has the task now, since when: for a refusal's message."""
    task, live, last = subject.task, subject.live, subject.callers_last
    if live is not None and live.agent_id != agent_id:
        return f"held by {live.agent_id}", live.agent_id, live.assigned_at
    if task.dead_lettered:
        return "dead-lettered (recovery budget exhausted)", None, task.updated_at
    if task.status is TaskStatus.DONE:
        return "done", None, task.completed_at or task.updated_at
    if task.status is TaskStatus.BLOCKED:
        return "blocked", None, task.updated_at
    since = last.ended_at if last is not None else None
    if subject.caller_holds_other:
        return "back on the board, and you hold another task", None, since
    return "back on the board", None, since


def refuse(
    subject: Subject,
    agent_id: str,
    now: datetime,
    policy: Policy,
    *,
    progress: int | None,
    message: str,
    stale_epoch: int | None = None,
) -> Change:
    """`lease_lost`: nothing of the lease changes; a late note may join the handoff."""
    task = subject.task
    fx = Effects()
    story, holder, since = _holder_story(subject, agent_id)
    if stale_epoch is not None:
        story = f"at epoch {task.epoch}, not the epoch {stale_epoch} you quoted"
    new_task: Task | None = None
    counter = Counter.STALE_REFUSED
    handoff = task.handoff
    if stale_epoch is None and handoff is not None:
        updated = with_late_report(handoff, agent_id, now, progress, message)
        if updated != handoff:
            new_task = evolve(task, handoff=updated, updated_at=now)
        recent = (now - handoff.recovered_at).total_seconds() <= policy.false_recovery_window_s
        if handoff.recovered_from_agent == agent_id and recent:
            counter = Counter.FALSE_RECOVERY_LOST
    fx.counters.append(counter)
    last = subject.callers_last
    epoch = stale_epoch if stale_epoch is not None else (last.epoch if last else None)
    since_text = since.isoformat() if since is not None else None
    details: dict[str, Any] = {
        "task_id": task.id,
        "holder": holder,
        "since": since_text,
        "task_status": str(task.status),
        "your_epoch": epoch,
        "current_epoch": task.epoch,
    }
    fx.events.append(
        task_event(
            EventType.LEASE_STALE_REFUSED,
            task,
            agent_id,
            epoch,
            now,
            reason="stale_epoch" if stale_epoch is not None else "lease_lost",
            counted=str(counter),
            holder=holder,
        )
    )
    when = f" since {since_text}" if since_text else ""
    error = LeaseLost(
        f"your lease on {task.id} has ended: the task is {story}{when}; "
        "your branch is preserved; request your next task",
        details=details,
    )
    return fx.change(ChangeKind.REFUSED, task=new_task, error=error)


def task_event(
    kind: EventType, task: Task, agent_id: str, epoch: int | None, now: datetime, **data: Any
) -> Event:
    return Event(
        type=kind,
        board_id=task.board_id,
        at=now,
        task_id=task.id,
        agent_id=agent_id,
        epoch=epoch,
        data=data,
    )


def _can_claim_back(subject: Subject, agent_id: str, epoch: int | None) -> bool:
    task, last, handoff = subject.task, subject.callers_last, subject.task.handoff
    return (
        last is not None
        and subject.live is None
        and task.status is TaskStatus.TODO
        and not task.dead_lettered
        and not subject.caller_holds_other
        and handoff is not None
        and handoff.recovered_from_agent == agent_id
        and handoff.recovery_reason in RECOVERY_REASONS
        and task.epoch == last.epoch
        and (epoch is None or epoch == last.epoch)
    )


def _claim_back(subject: Subject, agent_id: str, now: datetime, policy: Policy, act: Act) -> Change:
    """The old holder of a recovered, unclaimed task takes it again, then acts."""
    task, old = subject.task, subject.callers_last
    assert old is not None and task.handoff is not None  # checked by _can_claim_back
    fresh = new_lease(task, agent_id, now, policy, old.branch)
    fresh = evolve(
        fresh,
        progress=old.progress,
        max_progress=max(old.max_progress, task.handoff.previous_progress),
        message=old.message,
        head_sha=old.head_sha,
    )
    claimed = evolve(
        task,
        status=TaskStatus.IN_PROGRESS,
        assignee=agent_id,
        epoch=fresh.epoch,
        handoff=None,
        recovery_count=max(0, task.recovery_count - 1),
        updated_at=now,
    )
    fx = Effects()
    fx.events.append(
        lease_event(
            EventType.LEASE_RECLAIMED,
            fresh,
            now,
            previous_epoch=old.epoch,
            recovered_at=task.handoff.recovered_at.isoformat(),
        )
    )
    fx.counters.append(Counter.FALSE_RECOVERY_RECLAIMED)
    acted = act(claimed, fresh)
    fx.absorb(acted)
    kind = acted.kind
    if kind in (ChangeKind.RENEWED, ChangeKind.TOUCHED):
        kind = ChangeKind.RECLAIMED
    inserted = evolve(acted.lease or fresh, version=1)
    return fx.change(kind, task=acted.task or claimed, lease=inserted, expected_version=None)


def judge(
    subject: Subject,
    agent_id: str,
    now: datetime,
    policy: Policy,
    *,
    epoch: int | None,
    act: Act,
    claim_back: bool,
    progress: int | None = None,
    message: str = "",
) -> Change:
    """SPEC's holder-rules table: who may do `act` on the subject's task."""
    now = ensure_utc(now, "now")
    check_id(agent_id, "agent_id")
    live = subject.live
    if live is not None and live.agent_id == agent_id:
        if epoch is not None and epoch != live.epoch:
            return refuse(
                subject, agent_id, now, policy, progress=None, message="", stale_epoch=epoch
            )
        return act(subject.task, live)
    last = subject.callers_last
    if last is None:
        raise NotHolder(
            f"{agent_id} never held task {subject.task.id}",
            details={"task_id": subject.task.id, "agent_id": agent_id},
        )
    if epoch is not None and epoch != last.epoch:
        return refuse(subject, agent_id, now, policy, progress=None, message="", stale_epoch=epoch)
    if claim_back and _can_claim_back(subject, agent_id, epoch):
        return _claim_back(subject, agent_id, now, policy, act)
    return refuse(subject, agent_id, now, policy, progress=progress, message=message)
