"""Completion, validation, blocking, release, recovery, dead letters, admin acts."""

from __future__ import annotations

from dataclasses import replace

import pytest
from corekit import Bench, at, with_task

from tenure.core import (
    BUDGET_EXHAUSTED,
    RECOVERED_MARKER,
    ChangeKind,
    EndReason,
    LeaseFlag,
    Recover,
    TaskFlag,
    TaskStatus,
    cancel,
    end_assignment,
    recover,
    requeue,
    unassign,
)
from tenure.core.errors import Conflict, InvalidInput, LeaseLost, NotHolder

# Completion and validation ----------------------------------------------------------------


def test_completion_ends_the_lease_and_marks_the_task_done() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(60)
    change = bench.report(status="completed", message="all green")
    assert change.kind is ChangeKind.ENDED
    lease = bench.lease()
    assert lease.end_reason is EndReason.COMPLETED and lease.ended_at == at(60)
    assert lease.progress == 100 and lease.message == "all green"
    task = bench.task()
    assert task.status is TaskStatus.DONE and task.completed_at == at(60)
    assert task.assignee == "a1"
    released = [e for e in bench.events if str(e.type) == "lease.released"]
    assert released[0].data["reason"] == "completed"


def test_validation_holds_the_task_for_600_s_from_now_and_repeats_do_not_stack() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(60)
    change = bench.report(status="completed", validate=True)
    assert change.kind is ChangeKind.VALIDATING
    lease = bench.live()
    task = bench.task()
    assert lease is not None and lease.expires_at == at(660)
    assert LeaseFlag.VALIDATING in lease.flags and TaskFlag.VALIDATING in task.flags
    assert task.status is TaskStatus.IN_PROGRESS
    extended = [e for e in bench.events if str(e.type) == "lease.extended"]
    assert extended[0].data["reason"] == "validation"
    bench.set(100)
    bench.report(status="completed", validate=True)
    lease = bench.live()
    assert lease is not None and lease.expires_at == at(700)
    assert bench.counters["extensions.validation"] == 2


def test_a_validation_asked_past_expiry_counts_as_a_revival() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(200)
    bench.report(status="completed", validate=True)
    assert bench.counters["revivals"] == 1


def test_a_passed_validation_marks_the_task_done() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(60)
    bench.report(status="completed", validate=True)
    bench.set(300)
    bench.validation(True, note="checks passed")
    task = bench.task()
    assert task.status is TaskStatus.DONE and TaskFlag.VALIDATING not in task.flags
    assert bench.lease().end_reason is EndReason.COMPLETED
    assert LeaseFlag.VALIDATING not in bench.lease().flags
    verdicts = [e for e in bench.events if str(e.type) == "task.validation"]
    assert verdicts[0].data == {"passed": True, "note": "checks passed"}


def test_a_failed_validation_keeps_the_holder_in_the_finishing_phase() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(60)
    bench.report(status="completed", validate=True)
    bench.set(300)
    change = bench.validation(False, agent_id="a1", note="tests fail on py3.13")
    assert change.kind is ChangeKind.RENEWED
    lease = bench.live()
    assert lease is not None and lease.agent_id == "a1"
    assert LeaseFlag.VALIDATING not in lease.flags
    assert TaskFlag.VALIDATING not in bench.task().flags
    assert lease.expires_at == at(300 + 360) and lease.grace_s == 90
    assert lease.message == "tests fail on py3.13"
    assert bench.task().status is TaskStatus.IN_PROGRESS


def test_a_validation_window_that_runs_out_is_recovered_as_validation_timeout() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    for second in (10, 20, 30):
        bench.set(second)
        bench.report(progress=second * 3)
    bench.report(status="completed", validate=True)
    bench.expire()
    assert bench.decide() == Recover(EndReason.VALIDATION_TIMEOUT)
    bench.sweep()
    handoff = bench.task().handoff
    assert handoff is not None and handoff.recovery_reason == "validation_timeout"
    assert TaskFlag.VALIDATING not in bench.task().flags
    assert bench.counters["recoveries.validation_timeout"] == 1


def test_a_validation_result_needs_a_pending_validation() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    with pytest.raises(Conflict):
        bench.validation(True)
    bench.set(10)
    bench.report(status="completed")
    with pytest.raises(Conflict):
        bench.validation(True)


def test_a_validation_result_from_someone_who_never_held_the_task_is_refused() -> None:
    bench = Bench()
    bench.add()
    bench.claim("a1")
    bench.set(10)
    bench.report("a1", status="completed", validate=True)
    with pytest.raises(NotHolder):
        bench.validation(True, agent_id="a2")


def test_a_validation_result_from_a_former_holder_is_lease_lost() -> None:
    bench = Bench()
    bench.add()
    bench.claim("a1")
    bench.recover_now()
    bench.claim("a2")
    bench.advance(10)
    bench.report("a2", status="completed", validate=True)
    with pytest.raises(LeaseLost):
        bench.validation(True, agent_id="a1")
    assert bench.task().status is TaskStatus.IN_PROGRESS


# Blocking and release ----------------------------------------------------------------------


def test_a_blocked_report_ends_the_lease_and_blocks_the_task() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(30)
    change = bench.report(status="blocked", message="needs the API key")
    assert change.lease is not None and change.lease.end_reason is EndReason.BLOCKED
    task = bench.task()
    assert task.status is TaskStatus.BLOCKED and task.blocked_reason == "needs the API key"
    assert any("needs the API key" in comment for comment in bench.comments)
    assert bench.live() is None


def test_a_blocker_without_words_still_says_why() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.block(reason="  ")
    assert bench.task().blocked_reason == "blocked by its holder"


def test_a_release_hands_the_task_back_without_spending_the_budget() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(30)
    bench.report(progress=40)
    bench.set(60)
    bench.release(message="out of my depth")
    task = bench.task()
    assert task.status is TaskStatus.TODO and task.assignee is None
    assert task.recovery_count == 0
    assert task.handoff is not None and task.handoff.recovery_reason == "released"
    assert task.handoff.last_progress_message == "out of my depth"
    assert bench.lease().end_reason is EndReason.RELEASED
    assert not bench.hooks and not bench.telemetry


def test_a_release_without_a_message_keeps_the_last_one() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(30)
    bench.report(progress=40, message="wip")
    bench.release()
    handoff = bench.task().handoff
    assert handoff is not None and handoff.last_progress_message == "wip"


def test_only_the_holder_releases() -> None:
    bench = Bench()
    bench.add()
    bench.claim("a1")
    with pytest.raises(NotHolder):
        bench.release("a2")


# Recovery and the budget -------------------------------------------------------------------


def test_a_recovery_puts_the_task_back_with_a_handoff_comment_hook_and_telemetry() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(30)
    bench.report(progress=40, message="parser done")
    change = bench.recover_now()
    assert change.kind is ChangeKind.RECOVERED
    task = bench.task()
    assert task.status is TaskStatus.TODO and task.assignee is None
    assert task.recovery_count == 1 and task.handoff is not None
    assert bench.lease().end_reason is EndReason.LEASE_EXPIRED
    assert any(RECOVERED_MARKER in comment for comment in bench.comments)
    assert [kind for kind, _ in bench.hooks] == ["recovered"]
    (telemetry,) = bench.telemetry
    assert telemetry["task_held_minutes"] == pytest.approx(330 / 60)  # claimed at 0, due at 330
    assert telemetry["progress_pct_at_expiry"] == 40
    assert telemetry["recovery_attempted"] is True
    assert bench.counters["recoveries.lease_expired"] == 1
    assert "lease.recovered" in bench.event_types()


def test_no_recovery_before_recover_after() -> None:
    bench = Bench()
    bench.add()
    lease = bench.claim()
    with pytest.raises(Conflict):
        recover(bench.task(), lease, at(239), bench.policy)


def test_recovery_refuses_other_reasons_ended_leases_and_stale_leases() -> None:
    bench = Bench()
    bench.add()
    lease = bench.claim()
    with pytest.raises(InvalidInput):
        recover(bench.task(), lease, at(999), bench.policy, EndReason.COMPLETED)
    newer = replace(bench.task(), epoch=5)
    with pytest.raises(Conflict):
        recover(newer, lease, at(999), bench.policy)
    bench.set(10)
    bench.report(status="completed")
    with pytest.raises(Conflict):
        recover(bench.task(), bench.lease(), at(999), bench.policy)
    with pytest.raises(Conflict):
        end_assignment(
            bench.task(),
            bench.lease(),
            at(999),
            bench.policy,
            reason=EndReason.STALE,
            status=TaskStatus.DONE,
        )


def test_the_third_recovery_dead_letters_the_task() -> None:
    bench = Bench()
    bench.add()
    for agent in ("a1", "a2"):
        bench.claim(agent)
        bench.recover_now()
        assert bench.task().status is TaskStatus.TODO
    bench.claim("a3")
    change = bench.recover_now()
    assert change.kind is ChangeKind.DEAD_LETTERED
    task = bench.task()
    assert task.status is TaskStatus.BLOCKED and task.blocked_reason == BUDGET_EXHAUSTED
    assert task.recovery_count == 3 and task.dead_lettered
    assert TaskFlag.ESCALATED in task.flags
    assert task.handoff is not None and task.handoff.recovered_from_agent == "a3"
    assert bench.lease().end_reason is EndReason.DEAD_LETTERED
    assert "task.dead_lettered" in bench.event_types()
    assert [kind for kind, _ in bench.hooks] == ["recovered", "recovered", "dead_lettered"]
    assert bench.counters["dead_letters"] == 1
    assert bench.counters["recoveries.lease_expired"] == 3


def test_a_claim_back_refund_keeps_the_budget_from_running_out() -> None:
    bench = Bench()
    bench.add()
    bench.claim("a1")
    for _ in range(4):
        bench.recover_now()
        bench.report("a1", progress=10)  # claim-back refunds
    assert bench.task().recovery_count == 0
    assert bench.task().status is TaskStatus.IN_PROGRESS


# Admin acts ----------------------------------------------------------------------------------


def test_unassign_hands_the_task_back_with_a_handoff() -> None:
    bench = Bench()
    bench.add()
    lease = bench.claim()
    bench.set(20)
    bench.apply(unassign(bench.task(), lease, bench.now, bench.policy))
    task = bench.task()
    assert task.status is TaskStatus.TODO and task.recovery_count == 0
    assert task.handoff is not None and task.handoff.recovery_reason == "unassigned"
    assert bench.lease().end_reason is EndReason.UNASSIGNED
    assert any("[tenure:handed-back]" in comment for comment in bench.comments)


def test_unassign_needs_a_holder_and_a_handing_back_reason() -> None:
    bench = Bench()
    bench.add()
    with pytest.raises(Conflict):
        unassign(bench.task(), None, bench.now, bench.policy)
    lease = bench.claim()
    with pytest.raises(InvalidInput):
        unassign(bench.task(), lease, bench.now, bench.policy, reason=EndReason.STALE)


def test_cancel_ends_the_lease_and_blocks_the_task() -> None:
    bench = Bench()
    bench.add()
    lease = bench.claim()
    bench.apply(cancel(bench.task(), lease, bench.now, bench.policy))
    assert bench.task().status is TaskStatus.BLOCKED
    assert bench.task().blocked_reason == "cancelled"
    assert bench.lease().end_reason is EndReason.CANCELLED


def test_cancel_without_a_lease_blocks_the_task_and_a_done_task_is_refused() -> None:
    bench = Bench()
    bench.add()
    change = bench.apply(cancel(bench.task(), None, bench.now, bench.policy))
    assert change.task is not None and change.task.status is TaskStatus.BLOCKED
    assert [str(e.type) for e in change.events] == ["task.updated"]
    done = with_task(bench, "t1", status=TaskStatus.DONE)
    with pytest.raises(Conflict):
        cancel(done, None, bench.now, bench.policy)


def test_requeue_brings_a_dead_letter_back_with_its_budget_reset() -> None:
    bench = Bench()
    bench.add()
    for agent in ("a1", "a2", "a3"):
        bench.claim(agent)
        bench.recover_now()
    bench.advance(3 * 86400)
    bench.apply(requeue(bench.task(), bench.now, bench.policy))
    task = bench.task()
    assert task.status is TaskStatus.TODO and task.recovery_count == 0
    assert not task.dead_lettered and TaskFlag.ESCALATED not in task.flags
    assert task.blocked_reason is None
    assert task.handoff is not None and task.handoff.expires_at > bench.now
    assert "task.requeued" in bench.event_types()
    bench.claim("a4")


def test_requeue_needs_a_blocked_task() -> None:
    bench = Bench()
    bench.add()
    with pytest.raises(Conflict):
        requeue(bench.task(), bench.now, bench.policy)
    blocked = with_task(bench, "t1", status=TaskStatus.BLOCKED)
    change = requeue(blocked, bench.now, bench.policy)
    assert change.task is not None and change.task.handoff is None


def test_a_claimed_task_is_not_claimed_twice() -> None:
    from tenure.core import create

    bench = Bench()
    bench.add()
    bench.claim("a1")
    with pytest.raises(Conflict):
        create(bench.task(), "a2", bench.now, bench.policy)
    with pytest.raises(InvalidInput):
        create(
            with_task(bench, "t1", status=TaskStatus.TODO),
            "a2",
            bench.now,
            bench.policy,
            branch="bad..name",
        )
