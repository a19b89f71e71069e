"""SPEC's holder-rules table, row by row, and the touches every call makes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from corekit import Bench, at, with_task

from tenure.core import (
    UNCHANGED,
    ChangeKind,
    EndReason,
    Evidence,
    Report,
    Subject,
    TaskStatus,
    Wait,
    heartbeat,
    report,
    touch,
)
from tenure.core.errors import InvalidInput, LeaseLost, NotHolder

BRANCH_NOTE = "your branch is preserved; request your next task"


def recovered_bench(progress: int = 50) -> Bench:
    """a1 reported once at 30 s, then went silent and was recovered (at 360 s)."""
    bench = Bench()
    bench.add()
    bench.claim("a1")
    bench.set(30)
    bench.report("a1", progress=progress, message="half way")
    bench.recover_now()
    assert bench.task().status is TaskStatus.TODO
    return bench


# Holder, live lease -------------------------------------------------------------------


def test_late_report_during_grace_revives_the_lease() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(200)  # expired at 180, grace until 240
    change = bench.report(progress=20)
    lease = bench.live()
    assert change.kind is ChangeKind.REVIVED
    assert lease is not None and lease.expires_at == at(200 + 240)
    assert bench.counters["revivals"] == 1
    assert "lease.revived" in bench.event_types()


def test_late_report_after_recover_after_but_before_recovery_revives_the_lease() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(900)
    change = bench.report(progress=20)
    assert change.kind is ChangeKind.REVIVED
    lease = bench.live()
    assert lease is not None and lease.recover_after > bench.now
    assert isinstance(bench.decide(), Wait) and lease.epoch == 1


def test_a_late_touch_revives_the_lease_too() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(250)
    change = bench.heartbeat()
    assert change.kind is ChangeKind.REVIVED
    lease = bench.live()
    assert lease is not None and lease.expires_at == at(250 + 240)


def test_a_touch_extends_every_live_lease_of_the_caller() -> None:
    bench = Bench()
    bench.add("t1")
    bench.add("t2")
    bench.add("t3")
    bench.claim("a1", "t1")
    bench.claim("a1", "t2")
    bench.claim("a2", "t3")
    bench.set(100)
    changes = bench.touch_all("a1")
    assert len(changes) == 2
    for task_id in ("t1", "t2"):
        lease = bench.live(task_id)
        assert lease is not None and lease.expires_at == at(100 + 240)
        assert lease.progress_stamps == ()
    other = bench.live("t3")
    assert other is not None and other.expires_at == at(180)


def test_a_touch_never_shortens_a_validation_window() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.report(status="completed", validate=True)
    bench.set(20)
    bench.touch_all("a1")
    lease = bench.live()
    assert lease is not None and lease.expires_at == at(10 + 600)


def test_a_touch_never_shortens_a_conflict_extension() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.expire()
    bench.sweep(evidence=Evidence(conflict=True))
    extended = bench.live()
    assert extended is not None
    bench.advance(5)
    bench.touch_all("a1")
    lease = bench.live()
    assert lease is not None and lease.expires_at == extended.expires_at
    assert lease.version == extended.version + 1


def test_a_touch_of_an_ended_lease_changes_nothing() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.report(status="completed")
    assert touch(bench.lease(), at(20), bench.policy) is UNCHANGED


def test_every_write_bumps_the_version_and_expects_the_old_one() -> None:
    bench = Bench()
    bench.add()
    lease = bench.claim()
    assert lease.version == 1
    bench.set(10)
    change = bench.report(progress=1)
    assert change.expected_version == 1 and change.lease is not None
    assert change.lease.version == 2
    bench.set(20)
    (touched,) = bench.touch_all("a1")
    assert touched.expected_version == 2 and touched.lease is not None
    assert touched.lease.version == 3


def test_a_live_holder_may_lower_its_progress_but_the_handoff_keeps_the_highest() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.report(progress=60)
    bench.set(20)
    bench.report(progress=30)
    lease = bench.live()
    assert lease is not None and (lease.progress, lease.max_progress) == (30, 60)
    bench.recover_now()
    handoff = bench.task().handoff
    assert handoff is not None and handoff.previous_progress == 60


def test_a_report_keeps_the_last_message_branch_and_sha_when_it_sends_none() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.report(progress=5, message="started", branch="feat/x", head_sha="ABCDEF12")
    bench.set(20)
    bench.report(progress=6)
    lease = bench.live()
    assert lease is not None
    assert (lease.message, lease.branch, lease.head_sha) == ("started", "feat/x", "abcdef12")


# Old holder of a recovered task: claim-back ---------------------------------------------


def test_the_old_holder_claims_back_a_recovered_unclaimed_task() -> None:
    bench = recovered_bench()
    assert bench.task().recovery_count == 1
    bench.advance(10)
    change = bench.report("a1", progress=55)
    assert change.kind is ChangeKind.RECLAIMED and change.expected_version is None
    task = bench.task()
    lease = bench.live()
    assert lease is not None and lease.agent_id == "a1"
    assert lease.epoch == 2 and task.epoch == 2  # a new epoch
    assert task.handoff is None  # handoff cleared
    assert task.recovery_count == 0  # the recovery refunded to the budget
    assert task.status is TaskStatus.IN_PROGRESS and task.assignee == "a1"
    assert lease.progress == 55 and lease.renewal_count == 1  # the report applied
    assert lease.version == 1
    assert bench.counters["false_recovery.reclaimed"] == 1
    assert "lease.reclaimed" in bench.event_types()


def test_a_heartbeat_claims_back_too() -> None:
    bench = recovered_bench()
    change = bench.heartbeat("a1")
    assert change.kind is ChangeKind.RECLAIMED
    lease = bench.live()
    assert lease is not None and lease.progress == 50 and lease.max_progress == 50


def test_a_completion_claims_back_and_finishes_the_task() -> None:
    bench = recovered_bench()
    change = bench.report("a1", status="completed")
    assert change.kind is ChangeKind.ENDED
    assert bench.task().status is TaskStatus.DONE and bench.live() is None
    assert bench.lease().end_reason is EndReason.COMPLETED and bench.lease().epoch == 2


def test_no_claim_back_while_the_caller_holds_another_task() -> None:
    bench = recovered_bench()
    bench.add("t2")
    bench.claim("a1", "t2")
    with pytest.raises(LeaseLost, match="you hold another task"):
        bench.report("a1", progress=60)
    assert bench.task().status is TaskStatus.TODO


def test_no_claim_back_after_a_voluntary_release() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.release(message="handing over")
    with pytest.raises(LeaseLost):
        bench.report(progress=40)
    assert bench.task().status is TaskStatus.TODO


def test_no_claim_back_for_a_block_report() -> None:
    bench = recovered_bench()
    with pytest.raises(LeaseLost):
        bench.report("a1", status="blocked", message="cannot")
    assert bench.task().status is TaskStatus.TODO


# Old holder, task moved on: lease_lost -------------------------------------------------


def test_the_old_holder_of_a_task_taken_by_another_gets_lease_lost() -> None:
    bench = recovered_bench()
    bench.advance(10)
    bench.claim("a2")
    taken_at = bench.now
    bench.advance(60)
    with pytest.raises(LeaseLost) as caught:
        bench.report("a1", progress=30, message="I was still here\nsecond line")
    error = caught.value
    assert "held by a2" in error.message and taken_at.isoformat() in error.message
    assert BRANCH_NOTE in error.message
    assert error.details["holder"] == "a2" and error.details["current_epoch"] == 2
    handoff = bench.task().handoff
    assert handoff is not None
    assert handoff.previous_progress == 50  # 50 then 30 keeps 50
    assert len(handoff.late_notes) == 1 and "I was still here" in handoff.late_notes[0]
    assert "> second line" in handoff.instructions
    assert bench.counters["false_recovery.lost"] == 1
    assert "lease.stale_refused" in bench.event_types()
    live = bench.live()
    assert live is not None and live.agent_id == "a2" and live.version == 1


def test_a_late_report_with_higher_progress_raises_the_handoffs_progress() -> None:
    bench = recovered_bench()
    bench.claim("a2")
    with pytest.raises(LeaseLost):
        bench.report("a1", progress=70)
    handoff = bench.task().handoff
    assert handoff is not None and handoff.previous_progress == 70
    assert handoff.late_notes == ()


def test_a_late_report_long_after_the_recovery_counts_as_stale() -> None:
    bench = recovered_bench()
    bench.claim("a2")
    bench.advance(601)
    with pytest.raises(LeaseLost):
        bench.report("a1", progress=10)
    assert bench.counters["stale_refused"] == 1
    assert bench.counters["false_recovery.lost"] == 0


def test_the_old_holder_of_a_done_task_gets_lease_lost() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.report(status="completed")
    with pytest.raises(LeaseLost, match="is done"):
        bench.report(progress=100)
    assert bench.counters["stale_refused"] == 1


def test_the_old_holder_of_a_dead_lettered_task_gets_lease_lost() -> None:
    bench = Bench()
    bench.add()
    for agent in ("a1", "a2", "a3"):
        bench.claim(agent)
        bench.recover_now()
    assert bench.task().dead_lettered
    with pytest.raises(LeaseLost, match="dead-lettered"):
        bench.heartbeat("a3")


def test_the_old_holder_of_a_blocked_task_gets_lease_lost() -> None:
    bench = Bench()
    bench.add()
    bench.claim("a1")
    bench.set(10)
    bench.block("a1", reason="needs a key")
    with pytest.raises(LeaseLost, match="blocked"):
        bench.report("a1", progress=3)


def test_an_agent_that_never_held_the_task_is_not_the_holder() -> None:
    bench = Bench()
    bench.add()
    bench.claim("a1")
    before = bench.live()
    with pytest.raises(NotHolder):
        bench.report("stranger", progress=10)
    with pytest.raises(NotHolder):
        bench.heartbeat("stranger", epoch=1)
    assert bench.live() == before and not bench.events[1:]


def test_a_stale_quoted_epoch_is_lease_lost_and_changes_nothing() -> None:
    bench = Bench()
    bench.add()
    bench.claim("a1")
    bench.set(10)
    before = bench.live()
    with pytest.raises(LeaseLost, match="not the epoch 7 you quoted"):
        bench.report("a1", progress=10, epoch=7)
    assert bench.live() == before
    assert bench.counters["stale_refused"] == 1
    # the current epoch is accepted
    bench.report("a1", progress=10, epoch=1)


def test_an_old_holder_quoting_an_old_epoch_after_a_claim_back_is_refused() -> None:
    bench = recovered_bench()
    bench.report("a1", progress=60)  # claim-back: epoch 2
    with pytest.raises(LeaseLost):
        bench.heartbeat("a1", epoch=1)


def test_a_quoted_epoch_that_is_not_the_callers_last_is_refused_without_a_note() -> None:
    bench = recovered_bench()
    with pytest.raises(LeaseLost):
        bench.report("a1", progress=90, message="late", epoch=5)
    handoff = bench.task().handoff
    assert handoff is not None and handoff.late_notes == () and handoff.previous_progress == 50
    assert bench.task().status is TaskStatus.TODO


def test_lease_lost_without_a_handoff_writes_no_task() -> None:
    bench = Bench()
    bench.add()
    bench.claim("a1")
    bench.set(10)
    bench.report("a1", status="completed")
    subject = bench.subject("t1", "a1")
    change = report(subject, "a1", Report(progress=5, message="x"), bench.now, bench.policy)
    assert change.task is None and isinstance(change.error, LeaseLost)


def test_an_ended_assignment_on_a_todo_task_reads_back_on_the_board() -> None:
    bench = Bench()
    bench.add()
    bench.claim("a1")
    bench.set(10)
    bench.release("a1")
    with_task(bench, "t1", handoff=None)
    with pytest.raises(LeaseLost, match="back on the board"):
        bench.heartbeat("a1")


# Input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        Report(status="finished"),
        Report(progress=101),
        Report(progress=-1),
        Report(message="x" * (16 * 1024 + 1)),
        Report(branch="-rf"),
        Report(head_sha="not-a-sha"),
        Report(epoch="2"),  # type: ignore[arg-type]
        Report(epoch=True),
    ],
)
def test_reports_out_of_range_are_invalid_input(bad: Report) -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    with pytest.raises(InvalidInput):
        report(bench.subject("t1", "a1"), "a1", bad, bench.now, bench.policy)


def test_an_invalid_agent_id_is_invalid_input() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    subject = Subject(task=bench.task(), live=bench.live())
    with pytest.raises(InvalidInput):
        heartbeat(subject, "../etc", bench.now, bench.policy)


def test_the_revival_counts_the_lateness() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(190)
    bench.report(progress=1)
    revived = [e for e in bench.events if str(e.type) == "lease.revived"]
    assert revived[0].data["late_by_s"] == (at(190) - at(180)) / timedelta(seconds=1)
