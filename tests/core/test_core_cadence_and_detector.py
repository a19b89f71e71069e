"""The monitor's detector: cadence, evidence, suspicion, terminal tasks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from corekit import Bench, at, with_task

from tenure.core import (
    UNCHANGED,
    DetectorPolicy,
    EndReason,
    Evidence,
    Extend,
    LeaseState,
    Phase,
    Policy,
    ProgressivePolicy,
    Recover,
    Release,
    Signal,
    TaskStatus,
    Wait,
    apply,
    decide,
    extend_for_conflict,
    lease_state,
    median_interval,
    needs_evidence,
    session_closed,
    touch,
)
from tenure.core.errors import Conflict

# Short phases so a lease is due well before its holder's cadence says "dead".
SHORT = ProgressivePolicy(
    unproven=Phase(1, 30, 10),
    working=Phase(2, 30, 10),
    proven=Phase(3, 30, 10),
    finishing=Phase(4, 30, 10),
    default=Phase(0, 30, 10),
)


def stamps(*seconds: float) -> tuple:  # type: ignore[type-arg]
    return tuple(at(s) for s in seconds)


# Median interval ------------------------------------------------------------------


def test_median_needs_two_stamps() -> None:
    assert median_interval(()) is None
    assert median_interval(stamps(0)) is None


def test_median_of_two_stamps_60_s_apart_is_60() -> None:
    assert median_interval(stamps(0, 60)) == 60.0


def test_median_of_intervals_40_80_60_is_60() -> None:
    assert median_interval(stamps(0, 40, 120, 180)) == 60.0


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    assert median_interval(stamps(0, 10, 30, 60, 100)) == 25.0


def test_median_sorts_its_stamps_first() -> None:
    assert median_interval(stamps(120, 0, 40, 180)) == 60.0


def test_the_cadence_window_keeps_the_last_20_progress_reports() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    for step in range(1, 26):
        bench.set(step * 10)
        bench.report(progress=step)
    lease = bench.live()
    assert lease is not None
    assert len(lease.progress_stamps) == 20
    assert lease.progress_stamps[0] == at(60) and lease.progress_stamps[-1] == at(250)


def test_touches_never_enter_the_cadence_window() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.report(progress=5)
    for step in range(2, 6):
        bench.set(step * 10)
        bench.touch_all("a1")
        bench.heartbeat()
    lease = bench.live()
    assert lease is not None and lease.progress_stamps == stamps(10)
    assert lease.last_signal_at == at(50)


# Cadence ---------------------------------------------------------------------------


def cadence_bench(multiplier: float = 5.0) -> Bench:
    """A holder that reported at 0, 60 and 120 s (median 60) on short leases."""
    policy = Policy(
        durations=SHORT, detector=DetectorPolicy(kind="spec", silence_multiplier=multiplier)
    )
    bench = Bench(policy=policy)
    bench.add()
    bench.claim()
    for second in (0, 60, 120):
        bench.set(second)
        bench.report(progress=second // 6)
    return bench


def test_cadence_waits_at_280_s_of_silence_and_recovers_after_300() -> None:
    bench = cadence_bench()
    lease = bench.live()
    assert lease is not None and lease.recover_after == at(160)
    bench.set(120 + 280)
    assert bench.decide() == Wait(until=at(420), why="cadence")
    bench.set(120 + 300)
    assert isinstance(bench.decide(), Wait)  # not more than 300 s yet
    bench.set(120 + 301)
    assert bench.decide() == Recover(EndReason.LEASE_EXPIRED)


def test_silence_is_measured_from_the_latest_signal_of_any_kind() -> None:
    bench = cadence_bench()
    bench.set(300)
    bench.touch_all("a1")  # not a progress report, but a sign of life
    bench.set(120 + 301)
    assert bench.decide() == Wait(until=at(600), why="cadence")
    bench.set(601)
    assert bench.decide() == Recover(EndReason.LEASE_EXPIRED)


def test_a_custom_silence_multiplier_changes_the_threshold() -> None:
    bench = cadence_bench(multiplier=2.0)
    bench.set(120 + 120)
    assert isinstance(bench.decide(), Wait)
    bench.set(120 + 121)
    assert bench.decide() == Recover(EndReason.LEASE_EXPIRED)


def test_fewer_than_two_progress_stamps_means_recover() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.expire()
    assert bench.decide() == Recover(EndReason.LEASE_EXPIRED)
    bench2 = Bench()
    bench2.add()
    bench2.claim()
    bench2.set(50)
    bench2.report(progress=10)
    bench2.expire()
    assert bench2.decide() == Recover(EndReason.LEASE_EXPIRED)


def test_a_larger_minimum_of_stamps_is_honoured() -> None:
    policy = Policy(durations=SHORT, detector=DetectorPolicy(kind="spec", min_stamps_for_cadence=4))
    bench = Bench(policy=policy)
    bench.add()
    bench.claim()
    for second in (0, 60, 120):
        bench.set(second)
        bench.report(progress=1 + second // 6)
    bench.set(200)
    assert bench.decide() == Recover(EndReason.LEASE_EXPIRED)


def test_the_detector_waits_before_recover_after_and_for_ended_leases() -> None:
    bench = Bench()
    bench.add()
    lease = bench.claim()
    assert decide(bench.task(), lease, at(10), bench.policy) == Wait(
        until=lease.recover_after, why="not due"
    )
    bench.set(10)
    bench.report(status="completed")
    ended = bench.lease()
    assert decide(bench.task(), ended, at(999), bench.policy) == Wait(why="ended")
    assert apply(Wait(), bench.task(), ended, at(999), bench.policy) is UNCHANGED


# Terminal tasks --------------------------------------------------------------------


@pytest.mark.parametrize("status", [TaskStatus.DONE, TaskStatus.BLOCKED])
def test_a_terminal_task_releases_its_stale_lease_and_is_never_recovered(
    status: TaskStatus,
) -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    with_task(bench, "t1", status=status, blocked_reason="waiting on a person")
    bench.expire()
    # terminal comes before any worktree evidence
    assert bench.decide(evidence=Evidence(conflict=True, changed=True)) == Release()
    change = bench.sweep()
    assert change.lease is not None and change.lease.end_reason is EndReason.STALE
    task = bench.task()
    assert task.status is status and task.recovery_count == 0 and task.handoff is None
    if status is TaskStatus.BLOCKED:
        assert task.blocked_reason == "waiting on a person"
    assert bench.counters["stale_leases_released"] == 1
    assert "lease.released" in bench.event_types()
    assert "lease.recovered" not in bench.event_types()


def test_a_stale_done_task_keeps_its_finish_time() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    with_task(bench, "t1", status=TaskStatus.DONE, completed_at=at(5))
    bench.expire()
    bench.sweep()
    assert bench.task().completed_at == at(5)


def test_releasing_a_lease_that_is_no_longer_the_tasks_leaves_the_task_alone() -> None:
    bench = Bench()
    bench.add()
    lease = bench.claim()
    newer = with_task(bench, "t1", status=TaskStatus.DONE, epoch=lease.epoch + 1)
    change = apply(Release(), newer, lease, at(500), bench.policy)
    assert change.task is None and change.lease is not None and not change.lease.live


def test_needs_evidence_only_for_live_leases_of_unfinished_tasks() -> None:
    bench = Bench()
    bench.add()
    lease = bench.claim()
    task = bench.task()
    assert needs_evidence(task, lease)
    assert needs_evidence(task, lease, bench.policy)
    assert not needs_evidence(task, lease, Policy(detector=DetectorPolicy(kind="fixed")))
    done = with_task(bench, "t1", status=TaskStatus.DONE)
    assert not needs_evidence(done, lease)
    with_task(bench, "t1", status=TaskStatus.IN_PROGRESS)
    bench.set(10)
    bench.report(status="completed")
    assert not needs_evidence(bench.task(), bench.lease())


# Evidence ---------------------------------------------------------------------------


def test_a_merge_conflict_extends_to_now_plus_300_s_at_most_twice() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    conflict = Evidence(conflict=True)
    bench.expire()
    assert bench.decide(evidence=conflict) == Extend()
    first = bench.sweep(evidence=conflict)
    assert first.lease is not None
    assert first.lease.expires_at == bench.now + timedelta(seconds=300)
    assert first.lease.conflict_extensions == 1
    assert lease_state(first.lease, bench.now, bench.policy) is LeaseState.ACTIVE
    bench.expire()
    second = bench.sweep(evidence=conflict)
    assert second.lease is not None and second.lease.conflict_extensions == 2
    bench.expire()
    assert bench.decide(evidence=conflict) == Recover(EndReason.LEASE_EXPIRED)
    assert bench.counters["extensions.merge_conflict"] == 2
    events = [e for e in bench.events if str(e.type) == "lease.extended"]
    assert [e.data["reason"] for e in events] == ["merge_conflict", "merge_conflict"]


def test_a_third_conflict_extension_is_refused() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    for _ in range(2):
        lease = bench.live()
        assert lease is not None
        bench.apply(extend_for_conflict(lease, bench.now, bench.policy))
    lease = bench.live()
    assert lease is not None
    with pytest.raises(Conflict):
        extend_for_conflict(lease, bench.now, bench.policy)


def test_an_ended_lease_is_never_extended() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.report(status="completed")
    with pytest.raises(Conflict):
        extend_for_conflict(bench.lease(), bench.now, bench.policy)


def test_changed_files_count_as_a_signal_and_the_lease_is_no_longer_due() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.expire()
    changed = Evidence(changed=True, observed_at=bench.now)
    assert bench.decide(evidence=changed) == Signal(at=bench.now)
    change = bench.sweep(evidence=changed)
    lease = bench.live()
    assert lease is not None and change.kind == "revived"
    assert lease.recover_after > bench.now and lease.last_signal_at == bench.now
    assert bench.counters["revivals"] == 1


def test_the_seed_and_fixed_detectors_ignore_what_they_never_knew() -> None:
    seed = Bench(policy=Policy(detector=DetectorPolicy(kind="seed")))
    seed.add()
    seed.claim()
    seed.expire()
    assert seed.decide(evidence=Evidence(changed=True)) == Recover(EndReason.LEASE_EXPIRED)
    assert seed.decide(evidence=Evidence(conflict=True)) == Extend()
    fixed = Bench(policy=Policy(detector=DetectorPolicy(kind="fixed")))
    fixed.add()
    fixed.claim()
    fixed.expire()
    assert fixed.decide(evidence=Evidence(conflict=True)) == Recover(EndReason.LEASE_EXPIRED)


def test_the_fixed_detector_recovers_as_soon_as_the_ttl_passes() -> None:
    bench = Bench(policy=Policy(durations=SHORT, detector=DetectorPolicy(kind="fixed")))
    bench.add()
    for second in (0, 60, 120):
        bench.set(second)
        if second == 0:
            bench.claim()
        bench.report(progress=10 + second // 6)
    bench.expire()
    assert bench.decide() == Recover(EndReason.LEASE_EXPIRED)


# Suspect ---------------------------------------------------------------------------


def test_a_closed_session_makes_the_lease_suspect_with_a_30_s_deadline() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    change = bench.close_session()
    lease = bench.live()
    assert lease is not None and change.kind == "suspected"
    assert lease.suspect_since == at(10) and lease.recover_after == at(40)
    assert "lease.suspect" in bench.event_types()


def test_the_suspect_deadline_never_passes_expiry_plus_grace() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(230)
    bench.close_session()
    lease = bench.live()
    assert lease is not None and lease.recover_after == at(240)


def test_a_suspect_lease_skips_the_cadence_check() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    for second in (10, 20, 30, 40):
        bench.set(second)
        bench.report(progress=second)
    bench.close_session()
    bench.set(71)
    assert bench.decide() == Recover(EndReason.AGENT_DISCONNECTED)
    change = bench.sweep()
    assert change.task is not None and change.task.handoff is not None
    assert change.task.handoff.recovery_reason == "agent_disconnected"
    assert bench.counters["recoveries.agent_disconnected"] == 1


def test_a_later_signal_clears_the_suspicion() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.close_session()
    bench.set(20)
    bench.report(progress=5)
    lease = bench.live()
    assert lease is not None and lease.suspect_since is None
    assert lease.recover_after == lease.expires_at + timedelta(seconds=lease.grace_s)
    bench.close_session()
    bench.set(30)
    bench.touch_all("a1")
    lease = bench.live()
    assert lease is not None and lease.suspect_since is None


def test_session_close_is_ignored_when_ended_already_suspect_or_under_seed() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.close_session()
    lease = bench.live()
    assert lease is not None
    assert session_closed(lease, at(20), bench.policy) is UNCHANGED
    seed = Policy(detector=DetectorPolicy(kind="seed"))
    assert session_closed(bench.history["t1"][0], at(20), seed) is UNCHANGED
    bench.set(20)
    bench.report(status="completed")
    assert session_closed(bench.lease(), at(30), bench.policy) is UNCHANGED


def test_a_dropped_connection_is_recorded_and_judged_as_spec_s_30_s() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    change = bench.close_session(dropped=True)
    lease = bench.live()
    assert lease is not None and change.kind == "suspected"
    assert lease.suspect_since == at(10) and lease.suspect_dropped
    assert lease.recover_after == at(40)
    assert change.events[0].data["how"] == "dropped"


def test_an_explicit_close_after_a_drop_makes_the_suspicion_explicit_from_the_drop() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.close_session(dropped=True)
    bench.set(25)
    dropped_again = session_closed(bench.lease(), at(25), bench.policy, dropped=True)
    assert dropped_again is UNCHANGED
    change = bench.close_session()
    lease = bench.live()
    assert lease is not None and change.kind == "suspected"
    assert change.events[0].data["how"] == "closed"
    assert lease.suspect_since == at(10) and not lease.suspect_dropped
    assert lease.recover_after == at(40)
    # Explicit already: neither another close nor a drop changes anything.
    assert session_closed(lease, at(30), bench.policy) is UNCHANGED
    assert session_closed(lease, at(30), bench.policy, dropped=True) is UNCHANGED


@pytest.mark.parametrize("sign", ["report", "touch", "conflict"])
def test_any_sign_of_life_clears_a_drop_too(sign: str) -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.close_session(dropped=True)
    bench.set(40)
    if sign == "report":
        bench.report(progress=5)
    elif sign == "touch":
        bench.touch_all("a1")
    else:
        bench.sweep(evidence=Evidence(conflict=True))
    lease = bench.live()
    assert lease is not None and lease.suspect_since is None and not lease.suspect_dropped


def test_a_worktree_change_before_the_drop_keeps_the_drop_recorded() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.close_session(dropped=True)
    bench.set(40)
    early = Evidence(changed=True, changed_at=at(5), observed_at=at(40))
    assert bench.decide(evidence=early) == Recover(EndReason.AGENT_DISCONNECTED)
    signalled = bench.apply(touch(bench.lease(), at(40), bench.policy, at=at(5)))
    assert signalled.lease is not None and signalled.lease.suspect_dropped
    assert signalled.lease.suspect_since == at(10)


def test_a_conflict_extension_lifts_the_suspect_deadline() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.close_session()
    bench.set(40)
    conflict = Evidence(conflict=True)
    assert bench.decide(evidence=conflict) == Extend()
    bench.sweep(evidence=conflict)
    lease = bench.live()
    assert lease is not None and lease.suspect_since is None
    assert lease.recover_after == at(40 + 300 + 60)
