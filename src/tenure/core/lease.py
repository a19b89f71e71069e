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
    session_closed(lease, now, policy) -> Change
        mark suspect: recover_after = min(expiry + grace, now + 30 s).
    extend_for_conflict(lease, now, policy) -> Change
    recover(task, lease, now, policy, reason) -> Change
        end the lease, handoff, recovery count + 1, or dead letter at the budget.
    end_assignment(task, lease, now, policy, *, reason, status, handoff=None, ...) -> Change
        the one function every ending path goes through.
    statistics(leases, now, policy, counters) -> dict
"""

from __future__ import annotations
