"""How assignments end: the one ending function, recovery and dead letters, admin acts.

Every path that ends an assignment (done, blocked, release, unassign,
cancel, recovery, dead letter, stale release) goes through `end_assignment`,
so each of them ends the lease, bumps its version, sets the task's status and
writes the same event the same way. Only `recover` counts against the
recovery budget.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tenure.core.decisions import Change, ChangeKind, HookKind
from tenure.core.effects import Effects, bumped, lease_event
from tenure.core.errors import Conflict, InvalidInput
from tenure.core.evolve import evolve
from tenure.core.handoff import build_handoff, handoff_comment
from tenure.core.model import (
    RECOVERY_REASONS,
    Counter,
    EndReason,
    Event,
    EventType,
    Handoff,
    Lease,
    LeaseFlag,
    Task,
    TaskFlag,
    TaskStatus,
    ensure_utc,
)
from tenure.core.policy import Policy

__all__ = ["BUDGET_EXHAUSTED", "cancel", "end_assignment", "recover", "requeue", "unassign"]

#: The `blocked_reason` of a dead-lettered task.
BUDGET_EXHAUSTED = "recovery_budget_exhausted"


def end_assignment(
    task: Task,
    lease: Lease,
    now: datetime,
    policy: Policy,
    *,
    reason: EndReason,
    status: TaskStatus,
    handoff: Handoff | None = None,
    blocked_reason: str | None = None,
    data: dict[str, Any] | None = None,
) -> Change:
    """End `lease` for `reason` and put `task` in `status`: the one ending path.

    The lease gets `ended_at`/`end_reason` and a new version; the task loses
    its assignee when it goes back to `todo`, takes `handoff` when one is
    given, and the `validating` flag leaves both. A recovery reason writes
    `lease.recovered`, anything else `lease.released` with the reason. When
    the task already belongs to a newer lease (a stale lease being cleared),
    only the lease is written.
    """
    now = ensure_utc(now, "now")
    if not lease.live:
        raise Conflict(
            f"the lease of {lease.agent_id} on {lease.task_id} has already ended",
            details={"task_id": lease.task_id, "epoch": lease.epoch},
        )
    ended = bumped(
        lease,
        ended_at=now,
        end_reason=reason,
        flags=lease.flags - {LeaseFlag.VALIDATING},
    )
    new_task: Task | None = None
    if task.epoch == lease.epoch:
        new_task = evolve(
            task,
            status=status,
            assignee=None if status is TaskStatus.TODO else task.assignee,
            handoff=handoff if handoff is not None else task.handoff,
            flags=task.flags - {TaskFlag.VALIDATING},
            blocked_reason=(blocked_reason or task.blocked_reason)
            if status is TaskStatus.BLOCKED
            else None,
            # A stale lease released from a finished task keeps the finish time.
            completed_at=now
            if status is TaskStatus.DONE and task.status is not TaskStatus.DONE
            else task.completed_at,
            updated_at=now,
        )
    recovered = reason in RECOVERY_REASONS or reason is EndReason.DEAD_LETTERED
    event = lease_event(
        EventType.LEASE_RECOVERED if recovered else EventType.LEASE_RELEASED,
        lease,
        now,
        reason=str(reason),
        status=str(status),
        progress=lease.progress,
        **(data or {}),
    )
    kind = ChangeKind.RECOVERED if recovered else ChangeKind.ENDED
    return Change(
        kind=kind, task=new_task, lease=ended, expected_version=lease.version, events=(event,)
    )


def _hook_payload(task: Task, lease: Lease, handoff: Handoff, reason: str) -> dict[str, Any]:
    return {
        "board_id": task.board_id,
        "task_id": task.id,
        "agent_id": lease.agent_id,
        "epoch": lease.epoch,
        "reason": reason,
        "recovery_count": task.recovery_count,
        "handoff": handoff.to_dict(),
    }


def recover(
    task: Task,
    lease: Lease,
    now: datetime,
    policy: Policy,
    reason: EndReason = EndReason.LEASE_EXPIRED,
) -> Change:
    """Take the task back from `lease`'s holder, with a handoff.

    Refused (`Conflict`) before the lease's recover-after, for an ended lease
    and for a lease that is not the task's current one. The recovery that
    would be number `max_recoveries` dead-letters the task instead: `blocked`,
    reason `recovery_budget_exhausted`, flags `dead_letter` and `escalated`,
    the handoff still stored.
    """
    now = ensure_utc(now, "now")
    if reason not in RECOVERY_REASONS:
        raise InvalidInput(f"{reason} is not a recovery reason", details={"reason": str(reason)})
    if not lease.live or task.epoch != lease.epoch:
        raise Conflict(
            f"lease {lease.epoch} of {lease.task_id} is not the task's live lease",
            details={"task_id": lease.task_id, "epoch": lease.epoch, "task_epoch": task.epoch},
        )
    if now < lease.recover_after:
        raise Conflict(
            f"lease of {lease.agent_id} on {lease.task_id} is not due before "
            f"{lease.recover_after.isoformat()}",
            details={"task_id": lease.task_id, "recover_after": lease.recover_after.isoformat()},
        )
    handoff = build_handoff(task, lease, now, policy, reason)
    count = task.recovery_count + 1
    telemetry = {
        "event": "lease_expired",
        "board_id": task.board_id,
        "task_id": task.id,
        "agent_id": lease.agent_id,
        "reason": str(reason),
        "task_held_minutes": round(handoff.time_spent_minutes, 2),
        "progress_pct_at_expiry": handoff.previous_progress,
        "recovery_attempted": True,
        # Expiry to recovery, for the detection-latency histogram (never negative:
        # a suspect lease may be recovered before it expires).
        "detection_latency_s": round(max(0.0, (now - lease.expires_at).total_seconds()), 3),
    }
    fx = Effects()
    fx.counters.append(Counter(f"recoveries.{reason}"))
    if count >= policy.max_recoveries:
        ended = end_assignment(
            task,
            lease,
            now,
            policy,
            reason=EndReason.DEAD_LETTERED,
            status=TaskStatus.BLOCKED,
            handoff=handoff,
            blocked_reason=BUDGET_EXHAUSTED,
            data={"recovery_reason": str(reason), "recovery_count": count},
        )
        assert ended.task is not None  # the epochs match, checked above
        dead = evolve(
            ended.task,
            recovery_count=count,
            flags=ended.task.flags | {TaskFlag.DEAD_LETTER, TaskFlag.ESCALATED},
        )
        fx.events.extend(ended.events)
        fx.events.append(
            Event(
                type=EventType.TASK_DEAD_LETTERED,
                board_id=task.board_id,
                at=now,
                task_id=task.id,
                agent_id=lease.agent_id,
                epoch=lease.epoch,
                data={"recovery_count": count, "reason": BUDGET_EXHAUSTED},
            )
        )
        fx.counters.append(Counter.DEAD_LETTERS)
        fx.comments.append(handoff_comment(handoff, recovered=True))
        fx.comments.append(
            f"[tenure:dead-letter] Recovered {count} times; blocked ({BUDGET_EXHAUSTED}). "
            "A person should look at this task before it is requeued."
        )
        fx.hooks.append((HookKind.DEAD_LETTERED, _hook_payload(dead, lease, handoff, str(reason))))
        return fx.change(
            ChangeKind.DEAD_LETTERED,
            task=dead,
            lease=ended.lease,
            expected_version=ended.expected_version,
            telemetry=telemetry,
        )
    ended = end_assignment(
        task,
        lease,
        now,
        policy,
        reason=reason,
        status=TaskStatus.TODO,
        handoff=handoff,
        data={"recovery_count": count},
    )
    assert ended.task is not None
    back = evolve(ended.task, recovery_count=count)
    fx.events.extend(ended.events)
    fx.comments.append(handoff_comment(handoff, recovered=True))
    fx.hooks.append((HookKind.RECOVERED, _hook_payload(back, lease, handoff, str(reason))))
    return fx.change(
        ChangeKind.RECOVERED,
        task=back,
        lease=ended.lease,
        expected_version=ended.expected_version,
        telemetry=telemetry,
    )


def hand_back(task: Task, lease: Lease, now: datetime, policy: Policy, reason: EndReason) -> Change:
    """End `lease` with the task back to `todo` and a handoff, outside the budget."""
    handoff = build_handoff(task, lease, now, policy, reason)
    ended = end_assignment(
        task, lease, now, policy, reason=reason, status=TaskStatus.TODO, handoff=handoff
    )
    return evolve(ended, comments=(handoff_comment(handoff, recovered=False),))


def unassign(
    task: Task,
    live: Lease | None,
    now: datetime,
    policy: Policy,
    *,
    reason: EndReason = EndReason.UNASSIGNED,
) -> Change:
    """An admin takes the task from its holder: `todo` with a handoff, no budget spent."""
    now = ensure_utc(now, "now")
    if reason not in (EndReason.UNASSIGNED, EndReason.RELEASED):
        raise InvalidInput(
            f"unassign takes reason unassigned or released, not {reason}",
            details={"reason": str(reason)},
        )
    if live is None:
        raise Conflict(f"task {task.id} has no holder", details={"task_id": task.id})
    return hand_back(task, live, now, policy, reason)


def cancel(task: Task, live: Lease | None, now: datetime, policy: Policy) -> Change:
    """Stop work on a task: any lease ends (`cancelled`), the task goes `blocked`."""
    now = ensure_utc(now, "now")
    if task.status is TaskStatus.DONE:
        raise Conflict(f"task {task.id} is already done", details={"task_id": task.id})
    if live is not None:
        return end_assignment(
            task,
            live,
            now,
            policy,
            reason=EndReason.CANCELLED,
            status=TaskStatus.BLOCKED,
            blocked_reason="cancelled",
        )
    blocked = evolve(
        task,
        status=TaskStatus.BLOCKED,
        assignee=None,
        blocked_reason="cancelled",
        updated_at=now,
    )
    event = Event(
        type=EventType.TASK_UPDATED,
        board_id=task.board_id,
        at=now,
        task_id=task.id,
        data={"status": str(TaskStatus.BLOCKED), "reason": "cancelled"},
    )
    return Change(kind=ChangeKind.ENDED, task=blocked, events=(event,))


def requeue(task: Task, now: datetime, policy: Policy) -> Change:
    """A blocked or dead-lettered task back to `todo`, its recovery budget reset.

    The handoff stays, with a fresh expiry, so whoever takes the task next
    still finds the work done so far.
    """
    now = ensure_utc(now, "now")
    if task.status is not TaskStatus.BLOCKED:
        raise Conflict(
            f"only a blocked task can be requeued; {task.id} is {task.status}",
            details={"task_id": task.id, "status": str(task.status)},
        )
    handoff = task.handoff
    if handoff is not None:
        handoff = evolve(handoff, expires_at=now + timedelta(seconds=policy.handoff_ttl_s))
    back = evolve(
        task,
        status=TaskStatus.TODO,
        assignee=None,
        recovery_count=0,
        blocked_reason=None,
        flags=task.flags - {TaskFlag.DEAD_LETTER, TaskFlag.ESCALATED},
        handoff=handoff,
        updated_at=now,
    )
    event = Event(
        type=EventType.TASK_REQUEUED,
        board_id=task.board_id,
        at=now,
        task_id=task.id,
        data={"was_dead_lettered": task.dead_lettered, "recovery_count": task.recovery_count},
    )
    return Change(kind=ChangeKind.REQUEUED, task=back, events=(event,))
