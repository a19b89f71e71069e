"""The monitor's judgement on one lease past its recover-after (SPEC, The monitor).

`decide` looks at the task, the lease and any worktree evidence and returns a
`Decision`; `apply` turns that decision into the `Change` to write. The
detector policy picks the rules: `spec` (SPEC's cadence), `adaptive` (phi
accrual over the holder's own rhythm, docs/detection.md), `seed` (the seed's
behaviour, its defects included, as a baseline) or `fixed` (one TTL).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from tenure.core.decisions import (
    UNCHANGED,
    Change,
    Decision,
    Evidence,
    Extend,
    Recover,
    Release,
    Signal,
    Wait,
)
from tenure.core.ending import end_assignment, recover
from tenure.core.lease import extend_for_conflict, touch
from tenure.core.model import Counter, EndReason, Lease, LeaseFlag, Task, TaskStatus, ensure_utc
from tenure.core.policy import Policy
from tenure.core.timing import median_interval, rhythm_allowance, suspect_window

__all__ = ["apply", "decide", "needs_evidence"]

_TERMINAL = (TaskStatus.DONE, TaskStatus.BLOCKED)


def needs_evidence(task: Task, lease: Lease, policy: Policy | None = None) -> bool:
    """Whether a worktree probe could change the decision on this lease.

    False for an ended lease, a finished or blocked task (released whatever
    the worktree shows) and the `fixed` detector (which ignores evidence).
    """
    if not lease.live or task.status in _TERMINAL:
        return False
    return policy is None or policy.detector.kind != "fixed"


def _seen_alive(
    lease: Lease, now: datetime, evidence: Evidence, closed: datetime | None
) -> datetime | None:
    """When the worktree last showed the holder alive, if that is news.

    The change counts at the time it happened (else when it was observed;
    never later than `now`, whatever a file system's clock says), and only
    when later than the last signal and than `closed` (the close of a
    session whose window is over: a write made before the agent's process
    exited says nothing about whether it still lives).
    """
    if not evidence.changed:
        return None
    at = min(ensure_utc(evidence.changed_at or evidence.observed_at or now, "changed_at"), now)
    floor = lease.last_signal_at if closed is None else max(lease.last_signal_at, closed)
    return at if at > floor else None


def decide(
    task: Task, lease: Lease, now: datetime, policy: Policy, evidence: Evidence | None = None
) -> Decision:
    """What the monitor should do with `lease` at `now`.

    In order: not due (or ended) -> wait; task done or blocked -> release;
    evidence of a merge conflict under the cap -> extend; files changed after
    the last signal -> a signal stamped when they changed (for a suspect
    lease past its window, only changes after the close count; `adaptive`:
    not a change already older than the holder's allowance); suspect ->
    recover (agent disconnected; `adaptive`: once its window is over, else
    its rhythm decides); validation window over -> recover (validation
    timeout); `fixed` -> recover; `adaptive` -> recover once the silence
    since the last signal reaches the holder's allowance
    (`rhythm_allowance`); then the cadence: fewer than 2 progress stamps ->
    recover, else recover only when the silence exceeds the median interval
    x `silence_multiplier`.
    """
    now = ensure_utc(now, "now")
    if not lease.live:
        return Wait(why="ended")
    if now < lease.recover_after:
        return Wait(until=lease.recover_after, why="not due")
    if task.status in _TERMINAL:
        return Release()
    detector = policy.detector
    adaptive = detector.kind == "adaptive"
    closed = lease.suspect_since
    if (
        closed is not None
        and adaptive
        and now < closed + suspect_window(policy, dropped=lease.suspect_dropped)
    ):
        closed = None  # due by its rhythm before its window is over
    allowance = timedelta(seconds=rhythm_allowance(lease, policy)) if adaptive else None
    if evidence is not None and detector.kind != "fixed":
        if evidence.conflict and lease.conflict_extensions < policy.max_conflict_extensions:
            return Extend()
        alive_at = _seen_alive(lease, now, evidence, closed) if detector.reads_worktree else None
        if alive_at is not None and (allowance is None or alive_at + allowance > now):
            return Signal(at=alive_at)
    if closed is not None:
        return Recover(EndReason.AGENT_DISCONNECTED)
    if LeaseFlag.VALIDATING in lease.flags:
        return Recover(EndReason.VALIDATION_TIMEOUT)
    if detector.kind == "fixed":
        return Recover(EndReason.LEASE_EXPIRED)
    if allowance is not None:
        if now - lease.last_signal_at < allowance:
            return Wait(until=lease.last_signal_at + allowance, why="rhythm")
        return Recover(EndReason.LEASE_EXPIRED)
    stamps = lease.progress_stamps
    median = median_interval(stamps)
    if median is None or len(stamps) < detector.min_stamps_for_cadence:
        return Recover(EndReason.LEASE_EXPIRED)
    # The seed measured silence from its last stamp; SPEC from any signal.
    since = max(stamps) if detector.kind == "seed" else lease.last_signal_at
    threshold = median * detector.silence_multiplier
    if (now - since).total_seconds() > threshold:
        return Recover(EndReason.LEASE_EXPIRED)
    return Wait(until=since + timedelta(seconds=threshold), why="cadence")


def apply(decision: Decision, task: Task, lease: Lease, now: datetime, policy: Policy) -> Change:
    """The `Change` that carries out `decision` on `lease`."""
    if isinstance(decision, Release):
        ended = end_assignment(task, lease, now, policy, reason=decision.reason, status=task.status)
        return replace(ended, counters=(*ended.counters, Counter.STALE_LEASES_RELEASED))
    if isinstance(decision, Extend):
        return extend_for_conflict(lease, now, policy)
    if isinstance(decision, Signal):
        return touch(lease, now, policy, task=task, at=decision.at)
    if isinstance(decision, Recover):
        return recover(task, lease, now, policy, decision.reason)
    return UNCHANGED
