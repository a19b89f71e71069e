"""Lease transitions: SPEC's lease rules and holder rules as pure functions.

Each function takes the records as loaded, `now` (aware UTC) and the
`Policy`, and returns a `Change` (see `tenure.core.decisions`), or raises a
`TenureError` when nothing at all is to be written. Refusals that still
record something (a late note, a counter) return a `Change` whose `error`
the service raises after commit.

API CONTRACT (the service is written against these signatures):

    lease_state(lease, now, policy) -> LeaseState
    seconds_left(lease, now) -> float
    phase_of(lease, policy) -> int                 # progressive phase number (0 default)
    compute_recover_after(expires_at, grace_s, suspect_since, policy) -> datetime
    median_interval(stamps) -> float | None

    create(task, agent_id, now, policy, *, branch=None) -> Change
        task must be `todo` (else Conflict); new epoch = task.epoch + 1; task ->
        in_progress, assignee = agent; lease.created event; `lease` inserted
        (expected_version None).
    touch(lease, now, policy) -> Change
        any other authenticated call: expiry = max(current, now + phase duration,
        at least phase 2); never shortens; revives an expired lease (spec);
        UNCHANGED for an ended lease (or for `seed` past expiry); clears suspect.
    report(subject, agent_id, report, now, policy) -> Change
        a progress report (Report.status in_progress | completed | blocked) by
        `agent_id`, applying SPEC's holder rules: renew / revive / complete /
        validate / block for the holder; claim-back for the old holder of a
        recovered, unclaimed task; refusal with LeaseLost (late note kept,
        handoff progress never lowered, counted lost or stale_refused);
        NotHolder for an agent that never held it; LeaseLost for a stale epoch.
    heartbeat(subject, agent_id, now, policy, *, epoch=None) -> Change
        a touch aimed at one task, with the same holder rules (claim-back too).
    release(subject, agent_id, now, policy, *, message="") -> Change
        the holder gives the task back: task todo, reason `released`, a handoff.
    block(subject, agent_id, now, policy, *, reason) -> Change
        the holder reports a blocker: lease ends, task `blocked`.
    validation_result(subject, now, policy, *, passed, note="", by_holder) -> Change
    unassign(task, live, now, policy, *, reason=EndReason.UNASSIGNED) -> Change
        admin: end the live lease, task back to todo with a handoff.
    cancel(task, live, now, policy) -> Change
        end any lease (reason `cancelled`), task `done`? no: task `blocked`
        with blocked_reason "cancelled" (the service decides deletion).
    requeue(task, now, policy) -> Change
        a dead-lettered or blocked task back to `todo`, budget reset.
    session_closed(lease, now, policy, *, dropped=False) -> Change
        mark suspect: recover_after = min(expiry + grace, now + 30 s); `dropped`
        records a connection that dropped rather than an explicit close.
    extend_for_conflict(lease, now, policy) -> Change
    recover(task, lease, now, policy, reason) -> Change
        end the lease, handoff, recovery count + 1, or dead letter at the budget.
    end_assignment(task, lease, now, policy, *, reason, status, handoff=None, ...) -> Change
        the one function every ending path goes through.
    statistics(leases, now, policy, counters) -> dict

Additions beyond that contract (keyword arguments with defaults only):
`touch(..., task=None)` gives the conservative policy the task's estimate;
`end_assignment(..., blocked_reason=None, data=None)` sets a blocked task's
reason and adds data to the ending event. `unassign` accepts reason
`unassigned` or `released`. The time arithmetic lives in
`tenure.core.timing`, the ending paths in `tenure.core.ending`, both
re-exported here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tenure.core.decisions import UNCHANGED, Change, ChangeKind, Report, Subject
from tenure.core.effects import (
    Effects,
    bumped,
    check_stall,
    deadline,
    escalate,
    learned,
    lease_event,
    new_lease,
    report_changes,
    revival,
    rhythm_changes,
    with_deadline,
)
from tenure.core.ending import (
    BUDGET_EXHAUSTED,
    cancel,
    end_assignment,
    hand_back,
    recover,
    requeue,
    unassign,
)
from tenure.core.errors import Conflict, InvalidInput, LeaseLost, NotHolder
from tenure.core.evolve import evolve
from tenure.core.holder import judge, refuse, task_event
from tenure.core.model import (
    Counter,
    EndReason,
    EventType,
    Lease,
    LeaseFlag,
    Task,
    TaskFlag,
    TaskStatus,
    check_id,
    ensure_utc,
)
from tenure.core.policy import Policy
from tenure.core.stats import statistics
from tenure.core.timing import (
    compute_recover_after,
    finishing_duration,
    lease_state,
    median_interval,
    phase_of,
    renewal_duration,
    seconds_left,
    touch_duration,
)
from tenure.core.validate import check_branch, check_head_sha, check_progress, check_text

__all__ = [
    "BUDGET_EXHAUSTED",
    "block",
    "cancel",
    "compute_recover_after",
    "create",
    "end_assignment",
    "extend_for_conflict",
    "heartbeat",
    "lease_state",
    "median_interval",
    "phase_of",
    "recover",
    "release",
    "report",
    "requeue",
    "seconds_left",
    "session_closed",
    "statistics",
    "touch",
    "unassign",
    "validation_result",
]

REPORT_STATUSES = ("in_progress", "completed", "blocked")


# Creating and extending ------------------------------------------------------


def create(
    task: Task, agent_id: str, now: datetime, policy: Policy, *, branch: str | None = None
) -> Change:
    """Give `task` to `agent_id`: a new lease with the next epoch, the task `in_progress`."""
    now = ensure_utc(now, "now")
    check_id(agent_id, "agent_id")
    if branch is not None:
        check_branch(branch)
    if task.status is not TaskStatus.TODO:
        raise Conflict(
            f"task {task.id} is {task.status}, not todo",
            details={"task_id": task.id, "status": str(task.status)},
        )
    lease = new_lease(task, agent_id, now, policy, branch)
    claimed = evolve(
        task,
        status=TaskStatus.IN_PROGRESS,
        assignee=agent_id,
        epoch=lease.epoch,
        updated_at=now,
    )
    event = lease_event(
        EventType.LEASE_CREATED,
        lease,
        now,
        expires_at=lease.expires_at.isoformat(),
        grace_s=lease.grace_s,
        recovered=task.handoff is not None,
    )
    return Change(kind=ChangeKind.CREATED, task=claimed, lease=lease, events=(event,))


def touch(
    lease: Lease,
    now: datetime,
    policy: Policy,
    *,
    task: Task | None = None,
    at: datetime | None = None,
) -> Change:
    """Any other authenticated call by the holder: extend the lease, never shorten it.

    Expiry becomes max(current, now + the current phase's duration, at least
    phase 2); the grace never shrinks; suspicion clears; a lease past expiry
    revives. Unchanged for an ended lease, and under the `seed` detector for a
    lease past expiry. `task` (optional) gives the conservative policy the
    task's estimate. `at` (worktree evidence) stamps the signal with the time
    the holder was last seen alive instead of `now`: the lease runs from then,
    and the gap does not enter the holder's rhythm (only calls do).
    """
    now = ensure_utc(now, "now")
    if not lease.live:
        return UNCHANGED
    if now > lease.expires_at and policy.detector.refuses_after_expiry:
        return UNCHANGED
    stamp = now if at is None else min(ensure_utc(at, "at"), now)
    fx = Effects()
    kind = revival(lease, stamp, fx) or ChangeKind.TOUCHED
    rhythm = learned(lease, now, policy) if at is None else lease
    lease_s, grace_s = touch_duration(rhythm, policy, task.estimated_hours if task else None)
    stamps = lease.progress_stamps
    if policy.detector.touches_enter_cadence:
        stamps = (*stamps, now)[-policy.cadence_window :]
    # A change made before the session closed says nothing of after.
    suspect_since = _still_suspect(lease, stamp)
    dropped = lease.suspect_dropped and suspect_since is not None
    expires_at = max(lease.expires_at, stamp + timedelta(seconds=lease_s))
    grace_s = max(lease.grace_s, grace_s)
    new = bumped(
        rhythm,
        expires_at=expires_at,
        grace_s=grace_s,
        recover_after=compute_recover_after(
            expires_at, grace_s, suspect_since, policy, dropped=dropped
        ),
        last_signal_at=max(lease.last_signal_at, stamp),
        suspect_since=suspect_since,
        suspect_dropped=dropped,
        progress_stamps=stamps,
    )
    new = check_stall(new, now, policy, fx)
    return fx.change(kind, lease=new, expected_version=lease.version)


def _still_suspect(lease: Lease, stamp: datetime) -> datetime | None:
    closed = lease.suspect_since
    return closed if closed is not None and stamp < closed else None


def session_closed(lease: Lease, now: datetime, policy: Policy, *, dropped: bool = False) -> Change:
    """The holder's last session closed: the lease turns suspect.

    `dropped`: the session's connection dropped (its stream ended with no
    DELETE) rather than being closed by its client (a DELETE, or a stdio
    proxy whose agent process exited); the lease records which. recover-after
    becomes min(expiry + grace, the close + the detector's window for that
    kind, `timing.suspect_window`). Unchanged for an ended lease, under the
    `seed` detector (which knew nothing of sessions), and for a lease already
    suspect (the first close sets the deadline), except that an explicit
    close of a lease suspect by a drop makes the suspicion explicit, still
    counted from the drop: its deadline can only come earlier.
    """
    now = ensure_utc(now, "now")
    if not lease.live or policy.detector.kind == "seed":
        return UNCHANGED
    if lease.suspect_since is None:
        since = now
    elif lease.suspect_dropped and not dropped:
        # No call came since the drop (a call clears the suspicion): the
        # silence since then is the agent's, and now its process has left.
        since = lease.suspect_since
    else:
        return UNCHANGED
    new = with_deadline(bumped(lease, suspect_since=since, suspect_dropped=dropped), policy)
    event = lease_event(
        EventType.LEASE_SUSPECT,
        lease,
        now,
        recover_after=new.recover_after.isoformat(),
        how="dropped" if dropped else "closed",
    )
    return Change(
        kind=ChangeKind.SUSPECTED, lease=new, expected_version=lease.version, events=(event,)
    )


def extend_for_conflict(lease: Lease, now: datetime, policy: Policy) -> Change:
    """A merge conflict in the holder's worktree: expiry = now + 300 s, at most twice.

    The extension is a deliberate grant of time, so it also lifts the suspect
    deadline (an unmerged worktree shows work in flight).
    """
    now = ensure_utc(now, "now")
    if not lease.live:
        raise Conflict(
            f"the lease on {lease.task_id} has ended", details={"task_id": lease.task_id}
        )
    if lease.conflict_extensions >= policy.max_conflict_extensions:
        raise Conflict(
            f"the lease on {lease.task_id} already had "
            f"{lease.conflict_extensions} merge-conflict extensions",
            details={"task_id": lease.task_id, "extensions": lease.conflict_extensions},
        )
    new = bumped(
        lease,
        expires_at=max(lease.expires_at, now + timedelta(seconds=policy.conflict_extension_s)),
        conflict_extensions=lease.conflict_extensions + 1,
        suspect_since=None,
        suspect_dropped=False,
    )
    new = with_deadline(new, policy)
    event = lease_event(
        EventType.LEASE_EXTENDED,
        lease,
        now,
        reason="merge_conflict",
        expires_at=new.expires_at.isoformat(),
        extensions=new.conflict_extensions,
    )
    return Change(
        kind=ChangeKind.EXTENDED,
        lease=new,
        expected_version=lease.version,
        events=(event,),
        counters=(Counter.EXTENSIONS_MERGE_CONFLICT,),
    )


# The holder's acts on its live lease --------------------------------------------


def _renew(task: Task, lease: Lease, rep: Report, now: datetime, policy: Policy) -> Change:
    fx = Effects()
    progress = lease.progress if rep.progress is None else rep.progress
    if now > lease.expires_at and policy.detector.refuses_after_expiry:
        # The seed refused a renewal once past expiry, yet kept a higher progress.
        best = max(lease.progress, progress)
        kept = bumped(lease, progress=best, max_progress=max(lease.max_progress, best))
        fx.events.append(lease_event(EventType.LEASE_STALE_REFUSED, lease, now, reason="expired"))
        fx.counters.append(Counter.STALE_REFUSED)
        error = LeaseLost(
            f"your lease on {lease.task_id} expired at {lease.expires_at.isoformat()}; "
            "your branch is preserved; request your next task",
            details={"task_id": lease.task_id, "expired_at": lease.expires_at.isoformat()},
        )
        return fx.change(
            ChangeKind.REFUSED, lease=kept, expected_version=lease.version, error=error
        )
    kind = revival(lease, now, fx) or ChangeKind.RENEWED
    moved = progress != lease.progress
    # Two copies of the lease rather than five: the report, the rhythm and the
    # renewal change disjoint fields, and a renewal is the hottest write.
    new = bumped(
        lease,
        **report_changes(lease, rep, now, progress),
        **rhythm_changes(lease, now, policy),
        renewal_count=lease.renewal_count + 1,
        progress_stamps=(*lease.progress_stamps, now)[-policy.cadence_window :],
        last_renewed_at=now,
        renewals_without_progress=0 if moved else lease.renewals_without_progress + 1,
    )
    lease_s, grace_s = renewal_duration(new, policy, task.estimated_hours)
    expires_at = now + timedelta(seconds=lease_s)
    new = evolve(
        new,
        expires_at=expires_at,
        grace_s=grace_s,
        recover_after=deadline(expires_at, grace_s, new, policy),
    )
    fx.events.append(
        lease_event(
            EventType.LEASE_RENEWED,
            new,
            now,
            progress=new.progress,
            phase=phase_of(new, policy),
            expires_at=new.expires_at.isoformat(),
        )
    )
    if new.renewal_count >= policy.max_renewals:
        new = escalate(new, now, "max_renewals", fx)
    new = check_stall(new, now, policy, fx)
    return fx.change(kind, lease=new, expected_version=lease.version)


def _complete(task: Task, lease: Lease, rep: Report, now: datetime, policy: Policy) -> Change:
    progress = 100 if rep.progress is None else rep.progress
    reported = evolve(lease, **report_changes(lease, rep, now, progress))
    if not rep.validate:
        return end_assignment(
            task, reported, now, policy, reason=EndReason.COMPLETED, status=TaskStatus.DONE
        )
    # Validation: the window is anchored on now, so repeats never stack.
    fx = Effects()
    revival(lease, now, fx)
    new = bumped(
        reported,
        expires_at=now + timedelta(seconds=policy.validation_window_s),
        flags=reported.flags | {LeaseFlag.VALIDATING},
    )
    new = with_deadline(new, policy)
    fx.events.append(
        lease_event(
            EventType.LEASE_EXTENDED,
            new,
            now,
            reason="validation",
            expires_at=new.expires_at.isoformat(),
        )
    )
    fx.counters.append(Counter.EXTENSIONS_VALIDATION)
    validating = evolve(task, flags=task.flags | {TaskFlag.VALIDATING}, updated_at=now)
    return fx.change(
        ChangeKind.VALIDATING, task=validating, lease=new, expected_version=lease.version
    )


def _block(task: Task, lease: Lease, reason: str, now: datetime, policy: Policy) -> Change:
    why = reason.strip() or "blocked by its holder"
    ended = end_assignment(
        task,
        lease,
        now,
        policy,
        reason=EndReason.BLOCKED,
        status=TaskStatus.BLOCKED,
        blocked_reason=why,
    )
    return evolve(ended, comments=(f"[tenure:blocked] `{lease.agent_id}` is blocked:\n\n{why}",))


def _release(task: Task, lease: Lease, message: str, now: datetime, policy: Policy) -> Change:
    noted = evolve(lease, message=message) if message else lease
    return hand_back(task, noted, now, policy, EndReason.RELEASED)


def _check_report(rep: Report) -> None:
    if rep.status not in REPORT_STATUSES:
        raise InvalidInput(
            f"status must be one of {', '.join(REPORT_STATUSES)}",
            details={"field": "status", "value": str(rep.status)[:80]},
        )
    if rep.progress is not None:
        check_progress(rep.progress)
    check_text(rep.message)
    if rep.branch is not None:
        check_branch(rep.branch)
    if rep.head_sha is not None:
        check_head_sha(rep.head_sha)
    if rep.epoch is not None and (isinstance(rep.epoch, bool) or not isinstance(rep.epoch, int)):
        raise InvalidInput("epoch must be an integer", details={"field": "epoch"})


def report(
    subject: Subject, agent_id: str, report: Report, now: datetime, policy: Policy
) -> Change:
    """A progress report by `agent_id`, under SPEC's holder rules.

    `in_progress` renews (or revives) the lease, `completed` ends it with the
    task done (or opens the validation window when `validate`), `blocked`
    ends it with the task blocked. The old holder of a recovered, unclaimed
    task claims it back first; anyone else gets `lease_lost` or `not_holder`.
    """
    rep = report
    _check_report(rep)
    now = ensure_utc(now, "now")

    def act(task: Task, lease: Lease) -> Change:
        if rep.status == "completed":
            return _complete(task, lease, rep, now, policy)
        if rep.status == "blocked":
            return _block(task, lease, rep.message, now, policy)
        return _renew(task, lease, rep, now, policy)

    return judge(
        subject,
        agent_id,
        now,
        policy,
        epoch=rep.epoch,
        act=act,
        claim_back=rep.status != "blocked",
        progress=rep.progress,
        message=rep.message,
    )


def heartbeat(
    subject: Subject, agent_id: str, now: datetime, policy: Policy, *, epoch: int | None = None
) -> Change:
    """A touch aimed at one task, under the holder rules (a claim-back included)."""
    now = ensure_utc(now, "now")
    return judge(
        subject,
        agent_id,
        now,
        policy,
        epoch=epoch,
        act=lambda task, lease: touch(lease, now, policy, task=task),
        claim_back=True,
    )


def release(
    subject: Subject, agent_id: str, now: datetime, policy: Policy, *, message: str = ""
) -> Change:
    """The holder gives the task back: `todo`, reason `released`, a handoff, no budget."""
    check_text(message)
    now = ensure_utc(now, "now")
    return judge(
        subject,
        agent_id,
        now,
        policy,
        epoch=None,
        act=lambda task, lease: _release(task, lease, message, now, policy),
        claim_back=False,
        message=message,
    )


def block(subject: Subject, agent_id: str, now: datetime, policy: Policy, *, reason: str) -> Change:
    """The holder reports a blocker: the lease ends, the task is `blocked` with `reason`."""
    check_text(reason, "reason")
    now = ensure_utc(now, "now")
    return judge(
        subject,
        agent_id,
        now,
        policy,
        epoch=None,
        act=lambda task, lease: _block(task, lease, reason, now, policy),
        claim_back=False,
        message=reason,
    )


def validation_result(
    subject: Subject,
    now: datetime,
    policy: Policy,
    *,
    passed: bool,
    note: str = "",
    by_holder: bool,
) -> Change:
    """The verdict on a completion under validation.

    `passed` marks the task done. Failed keeps the holder: the flag clears,
    the lease renews as the finishing phase, the note becomes the lease's
    message. With `by_holder`, `subject.callers_last` is the caller's lease
    and the holder rules apply; otherwise an admin or checker gives it.
    """
    check_text(note, "note")
    now = ensure_utc(now, "now")
    live = subject.live
    if by_holder:
        last = subject.callers_last
        if last is None:
            raise NotHolder(
                f"the caller never held task {subject.task.id}",
                details={"task_id": subject.task.id},
            )
        if live is None or live.agent_id != last.agent_id or live.epoch != last.epoch:
            return refuse(subject, last.agent_id, now, policy, progress=None, message=note)
    if live is None or LeaseFlag.VALIDATING not in live.flags:
        raise Conflict(
            f"task {subject.task.id} has no validation pending",
            details={"task_id": subject.task.id},
        )
    task = subject.task
    verdict = task_event(
        EventType.TASK_VALIDATION, task, live.agent_id, live.epoch, now, passed=passed, note=note
    )
    if passed:
        done = end_assignment(
            task, live, now, policy, reason=EndReason.COMPLETED, status=TaskStatus.DONE
        )
        return evolve(done, events=(verdict, *done.events))
    lease_s, grace_s = finishing_duration(live, policy, task.estimated_hours)
    new = bumped(
        live,
        flags=live.flags - {LeaseFlag.VALIDATING},
        message=note or live.message,
        expires_at=now + timedelta(seconds=lease_s),
        grace_s=grace_s,
        last_renewed_at=now,
        # The holder gets the task back to fix it, so its silence starts now.
        last_signal_at=now,
    )
    new = with_deadline(new, policy)
    back = evolve(task, flags=task.flags - {TaskFlag.VALIDATING}, updated_at=now)
    return Change(
        kind=ChangeKind.RENEWED,
        task=back,
        lease=new,
        expected_version=live.version,
        events=(verdict,),
    )
