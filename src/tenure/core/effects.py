"""Building blocks shared by the transitions: lease writes, events, escalations.

Every transition collects what it implies (events, counters, comments, hooks)
in an `Effects` and turns it into one `Change` at the end, so the service
writes all of it in the same transaction as the lease.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tenure.core.decisions import Change, ChangeKind, HookKind, Report
from tenure.core.errors import TenureError
from tenure.core.evolve import evolve
from tenure.core.model import Counter, Event, EventType, Lease, LeaseFlag, Task
from tenure.core.policy import Policy
from tenure.core.timing import compute_recover_after, first_duration

__all__ = [
    "Effects",
    "bumped",
    "check_stall",
    "escalate",
    "learned",
    "lease_event",
    "new_lease",
    "revival",
    "with_deadline",
]


@dataclass
class Effects:
    """What a transition implies besides its rows, gathered while it runs."""

    events: list[Event] = field(default_factory=list)
    counters: list[Counter] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    hooks: list[tuple[HookKind, dict[str, Any]]] = field(default_factory=list)

    def change(
        self,
        kind: ChangeKind,
        *,
        task: Task | None = None,
        lease: Lease | None = None,
        expected_version: int | None = None,
        telemetry: dict[str, Any] | None = None,
        error: TenureError | None = None,
    ) -> Change:
        """The `Change` carrying these effects and the given rows."""
        return Change(
            kind=kind,
            task=task,
            lease=lease,
            expected_version=expected_version,
            events=tuple(self.events),
            counters=tuple(self.counters),
            comments=tuple(self.comments),
            hooks=tuple(self.hooks),
            telemetry=telemetry,
            error=error,
        )

    def absorb(self, change: Change) -> None:
        """Add another change's effects after these ones."""
        self.events.extend(change.events)
        self.counters.extend(change.counters)
        self.comments.extend(change.comments)
        self.hooks.extend(change.hooks)


def lease_event(kind: EventType, lease: Lease, now: datetime, **data: Any) -> Event:
    """An event about `lease` at `now`."""
    return Event(
        type=kind,
        board_id=lease.board_id,
        at=now,
        task_id=lease.task_id,
        agent_id=lease.agent_id,
        epoch=lease.epoch,
        data=data,
    )


def bumped(lease: Lease, **changes: Any) -> Lease:
    """`lease` with `changes` and its version one higher: every write goes through here."""
    return evolve(lease, version=lease.version + 1, **changes)


def with_deadline(lease: Lease, policy: Policy) -> Lease:
    """`lease` with recover-after recomputed from its expiry, grace and suspicion."""
    return evolve(lease, recover_after=deadline(lease.expires_at, lease.grace_s, lease, policy))


def deadline(expires_at: datetime, grace_s: float, lease: Lease, policy: Policy) -> datetime:
    """Recover-after for `lease` given a new expiry and grace (its suspicion as is)."""
    return compute_recover_after(
        expires_at, grace_s, lease.suspect_since, policy, dropped=lease.suspect_dropped
    )


def escalate(lease: Lease, now: datetime, why: str, fx: Effects) -> Lease:
    """Ask a human to look: flag, event, hook and comment, once per lease."""
    if LeaseFlag.ESCALATED in lease.flags:
        return lease
    fx.events.append(lease_event(EventType.LEASE_ESCALATED, lease, now, reason=why))
    fx.counters.append(Counter.ESCALATIONS)
    fx.comments.append(
        f"[tenure:escalated] `{lease.agent_id}` needs a look on this task ({why}): "
        f"{lease.renewal_count} renewals, progress {lease.progress}%."
    )
    fx.hooks.append(
        (
            HookKind.ESCALATED,
            {
                "board_id": lease.board_id,
                "task_id": lease.task_id,
                "agent_id": lease.agent_id,
                "epoch": lease.epoch,
                "reason": why,
                "renewal_count": lease.renewal_count,
                "progress": lease.progress,
            },
        )
    )
    return evolve(lease, flags=lease.flags | {LeaseFlag.ESCALATED})


def check_stall(lease: Lease, now: datetime, policy: Policy, fx: Effects) -> Lease:
    """Flag a lease whose holder signals but whose progress stands still, once.

    Stalled means `stuck_threshold_renewals` renewals without a change of
    progress, or `stall_after_s` since progress last changed (since the
    assignment when it never did).
    """
    if LeaseFlag.STALLED in lease.flags:
        return lease
    since = lease.progress_changed_at or lease.assigned_at
    stuck = lease.renewals_without_progress >= policy.stuck_threshold_renewals
    slow = (now - since).total_seconds() >= policy.stall_after_s
    if not (stuck or slow):
        return lease
    lease = evolve(lease, flags=lease.flags | {LeaseFlag.STALLED})
    fx.events.append(
        lease_event(
            EventType.LEASE_STALLED,
            lease,
            now,
            progress=lease.progress,
            renewals_without_progress=lease.renewals_without_progress,
            since=since.isoformat(),
        )
    )
    return escalate(lease, now, "stalled", fx)


def new_lease(
    task: Task, agent_id: str, now: datetime, policy: Policy, branch: str | None
) -> Lease:
    """A fresh lease of `task` for `agent_id`: the next epoch, the first duration."""
    lease_s, grace_s = first_duration(task, policy)
    expires = now + timedelta(seconds=lease_s)
    return Lease(
        board_id=task.board_id,
        task_id=task.id,
        agent_id=agent_id,
        epoch=task.epoch + 1,
        assigned_at=now,
        expires_at=expires,
        grace_s=grace_s,
        recover_after=compute_recover_after(expires, grace_s, None, policy),
        last_renewed_at=now,
        last_signal_at=now,
        branch=branch,
        progress_changed_at=now,
    )


def learned(lease: Lease, now: datetime, policy: Policy) -> Lease:
    """`lease` after a call of its holder at `now`: the gap since its previous
    call joins the rhythm (the last `rhythm_window`), unless shorter than
    `min_gap_s` (a burst of calls is one moment of activity)."""
    return evolve(lease, **rhythm_changes(lease, now, policy))


def report_changes(lease: Lease, rep: Report, now: datetime, progress: int) -> dict[str, Any]:
    """The fields a progress report changes on `lease` (not yet bumped):
    progress, note, branch, a signal now, no suspicion, stalled no more if
    progress moved."""
    moved = progress != lease.progress
    return {
        "progress": progress,
        "max_progress": max(lease.max_progress, progress),
        "message": rep.message or lease.message,
        "branch": rep.branch or lease.branch,
        "head_sha": rep.head_sha.lower() if rep.head_sha else lease.head_sha,
        "last_signal_at": now,
        "suspect_since": None,
        "suspect_dropped": False,
        "progress_changed_at": now if moved else lease.progress_changed_at,
        "flags": lease.flags - {LeaseFlag.STALLED} if moved else lease.flags,
    }


def rhythm_changes(lease: Lease, now: datetime, policy: Policy) -> dict[str, Any]:
    """The fields `learned` changes, for a caller that folds them into a write
    of its own (one `replace` of a lease costs more than its arithmetic)."""
    detector = policy.detector
    gap = (now - (lease.last_call_at or lease.assigned_at)).total_seconds()
    gaps = lease.signal_gaps
    if gap >= detector.min_gap_s:
        gaps = (*gaps, round(gap, 3))[-detector.rhythm_window :]
    return {"last_call_at": now, "signal_gaps": gaps}


def revival(lease: Lease, now: datetime, fx: Effects) -> ChangeKind | None:
    """Record a revival when `now` is past the lease's expiry (a late signal keeps it)."""
    if now <= lease.expires_at:
        return None
    fx.events.append(
        lease_event(
            EventType.LEASE_REVIVED,
            lease,
            now,
            late_by_s=(now - lease.expires_at).total_seconds(),
        )
    )
    fx.counters.append(Counter.REVIVALS)
    return ChangeKind.REVIVED
