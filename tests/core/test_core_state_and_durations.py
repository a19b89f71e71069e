"""Lease state by time, and how long each lease and renewal runs."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from corekit import T0, Bench, at, make_task

from tenure.core import (
    ConservativePolicy,
    DetectorPolicy,
    Lease,
    LeaseState,
    Policy,
    Priority,
    ProgressivePolicy,
    create,
    lease_state,
    phase_of,
    seconds_left,
)
from tenure.core.errors import InvalidInput

HOUR = 3600.0
#: SPEC's detector: these tests check SPEC's durations.
SPEC = DetectorPolicy(kind="spec")


def fresh_lease(policy: Policy | None = None) -> Lease:
    lease = create(make_task(), "a1", T0, policy or Policy(detector=SPEC)).lease
    assert lease is not None
    return lease


# Lease state -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "state"),
    [
        (0, LeaseState.ACTIVE),
        (120, LeaseState.ACTIVE),  # exactly 60 s left is not "less than" 60 s
        (121, LeaseState.EXPIRING_SOON),
        (180, LeaseState.EXPIRING_SOON),  # expiry itself: nothing left, not yet past
        (181, LeaseState.IN_GRACE),
        (239, LeaseState.IN_GRACE),
        (240, LeaseState.EXPIRED),  # recover-after reached
        (10_000, LeaseState.EXPIRED),
    ],
)
def test_lease_state_follows_the_remaining_time(elapsed: float, state: LeaseState) -> None:
    assert lease_state(fresh_lease(), at(elapsed), Policy(detector=SPEC)) is state


def test_expiring_soon_is_relative_to_the_warning_threshold() -> None:
    policy = Policy(warning_threshold_s=150, detector=SPEC)
    lease = fresh_lease(policy)
    assert lease_state(lease, at(29), policy) is LeaseState.ACTIVE
    assert lease_state(lease, at(31), policy) is LeaseState.EXPIRING_SOON


def test_a_suspect_lease_is_suspect_until_its_deadline_and_an_ended_one_ended() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.close_session()
    lease = bench.live()
    assert lease is not None
    assert lease_state(lease, at(39), bench.policy) is LeaseState.SUSPECT
    assert lease_state(lease, at(40), bench.policy) is LeaseState.EXPIRED
    ended = replace(lease, ended_at=at(41))
    assert lease_state(ended, at(41), bench.policy) is LeaseState.ENDED


def test_seconds_left_counts_down_and_stops_at_zero() -> None:
    lease = fresh_lease()
    assert seconds_left(lease, at(30)) == 150.0
    assert seconds_left(lease, at(500)) == 0.0


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(InvalidInput):
        lease_state(fresh_lease(), datetime(2026, 1, 1), Policy(detector=SPEC))
    with pytest.raises(InvalidInput):
        create(make_task(), "a1", datetime(2026, 1, 1), Policy(detector=SPEC))


# Progressive phases -------------------------------------------------------------


@pytest.mark.parametrize(
    ("reports", "progress", "number", "lease_s", "grace_s"),
    [
        (0, 0, 1, 180, 60),
        (0, 90, 1, 180, 60),
        (1, 0, 2, 240, 60),
        (1, 90, 2, 240, 60),  # exactly one report: working, whatever the progress
        (2, 0, 0, 240, 60),
        (2, 24, 0, 240, 60),
        (2, 25, 3, 300, 60),
        (2, 74, 3, 300, 60),
        (2, 75, 4, 360, 90),
        (7, 100, 4, 360, 90),
    ],
)
def test_progressive_phase_by_reports_and_progress(
    reports: int, progress: int, number: int, lease_s: float, grace_s: float
) -> None:
    phase = ProgressivePolicy().phase(reports, progress)
    assert (phase.number, phase.lease_s, phase.grace_s) == (number, lease_s, grace_s)


def test_the_finishing_phase_is_never_shorter_than_the_proven_one() -> None:
    policy = ProgressivePolicy()
    assert policy.finishing.lease_s >= policy.proven.lease_s
    assert policy.finishing.grace_s >= policy.proven.grace_s


def test_renewals_follow_the_phase_reached_after_counting_the_report() -> None:
    bench = Bench()
    bench.add()
    first = bench.claim()
    assert first.expires_at == at(180) and first.grace_s == 60
    assert first.recover_after == at(240)
    assert phase_of(first, bench.policy) == 1

    bench.set(100)
    lease = bench.report(progress=10).lease
    assert lease is not None and lease.expires_at == at(100 + 240)
    assert phase_of(lease, bench.policy) == 2

    bench.set(200)
    lease = bench.report(progress=74).lease
    assert lease is not None and lease.expires_at == at(200 + 300)
    assert phase_of(lease, bench.policy) == 3

    bench.set(300)
    lease = bench.report(progress=75).lease
    assert lease is not None and lease.expires_at == at(300 + 360)
    assert lease.grace_s == 90 and lease.recover_after == at(300 + 360 + 90)
    assert phase_of(lease, bench.policy) == 4

    bench.set(400)
    lease = bench.report(progress=10).lease  # a holder may go back down
    assert lease is not None and lease.expires_at == at(400 + 240)
    assert lease.progress == 10 and lease.max_progress == 75
    assert phase_of(lease, bench.policy) == 0


# Conservative ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("progress", "before", "estimate", "hours"),
    [
        (0, 0, None, 4.0),
        (80, 0, None, 2.0),
        (76, 0, None, 2.0),
        (75, 0, None, 3.0),
        (60, 0, None, 3.0),
        (51, 0, None, 3.0),
        (50, 0, None, 4.0),
        (20, 3, None, 2.0),
        (20, 2, None, 4.0),
        (25, 3, None, 4.0),
        (50, 0, 10.0, 6.0),
        (50, 0, 8.0, 4.0),
    ],
)
def test_conservative_renewal_before_decay_and_clamping(
    progress: int, before: int, estimate: float | None, hours: float
) -> None:
    assert ConservativePolicy().renewal_base(progress, before, estimate) == hours


def test_conservative_renewal_decays_caps_after_five_and_clamps() -> None:
    policy = ConservativePolicy()
    assert policy.renewal_h(50, 2, None) == pytest.approx(4.0 * 0.9**2)
    assert policy.renewal_h(60, 5, 10.0) == pytest.approx(3.0 * 1.5 * 0.9**5)
    # past five renewals: at most 2 h, even for a long task
    assert policy.renewal_h(60, 6, 10.0) == 2.0
    # the clamp: never below 0.5 h, never above 24 h
    assert policy.renewal_h(80, 30, None) == 0.5
    assert ConservativePolicy(renewal_base_h=40.0).renewal_h(50, 0, None) == 24.0


@pytest.mark.parametrize(
    ("estimate", "priority", "labels", "hours"),
    [
        (None, Priority.MEDIUM, (), 4.0),
        (None, Priority.URGENT, (), 2.0),
        (None, Priority.HIGH, (), 3.0),
        (None, Priority.LOW, (), 6.0),
        (2.0, Priority.MEDIUM, ("simple",), 1.0),
        (2.0, Priority.MEDIUM, ("Complex",), 3.0),
        (2.0, Priority.MEDIUM, ("research",), 4.0),
        (2.0, Priority.MEDIUM, ("ui", "epic", "simple"), 6.0),  # first matching label
        (20.0, Priority.LOW, ("epic",), 24.0),  # clamped high
        (0.5, Priority.URGENT, ("simple",), 0.5),  # clamped low
    ],
)
def test_conservative_first_lease_from_estimate_priority_and_labels(
    estimate: float | None, priority: Priority, labels: tuple[str, ...], hours: float
) -> None:
    policy = Policy(durations=ConservativePolicy(), detector=SPEC)
    task = make_task(estimated_hours=estimate, priority=priority, labels=labels)
    lease = create(task, "a1", T0, policy).lease
    assert lease is not None
    assert lease.expires_at == T0 + timedelta(hours=hours)
    assert lease.grace_s == 60
    assert phase_of(lease, policy) == 0


def test_conservative_renewals_count_the_renewals_before_this_one() -> None:
    bench = Bench(policy=Policy(durations=ConservativePolicy(), detector=SPEC))
    bench.add(estimated_hours=10.0)
    bench.claim()
    bench.set(60)
    lease = bench.report(progress=50).lease  # n = 0: 4 h x 1.5
    assert lease is not None and lease.expires_at == at(60) + timedelta(hours=6)
    bench.set(120)
    lease = bench.report(progress=80).lease  # n = 1: 2 h x 1.5 x 0.9
    assert lease is not None
    assert lease.expires_at == at(120) + timedelta(hours=2 * 1.5 * 0.9)


def test_conservative_touch_uses_the_current_renewal_and_the_task_estimate() -> None:
    bench = Bench(policy=Policy(durations=ConservativePolicy(), detector=SPEC))
    bench.add(estimated_hours=1.0, labels=("simple",))  # first lease 0.5 h
    bench.claim()
    bench.set(60)
    (change,) = bench.touch_all("a1")
    assert change.lease is not None
    assert change.lease.expires_at == at(60) + timedelta(hours=4)


def test_the_fixed_detector_gives_every_lease_one_ttl_and_no_grace() -> None:
    policy = Policy(detector=DetectorPolicy(kind="fixed", fixed_ttl_s=90))
    bench = Bench(policy=policy)
    bench.add()
    lease = bench.claim()
    assert (lease.expires_at, lease.grace_s, lease.recover_after) == (at(90), 0, at(90))
    bench.set(30)
    lease2 = bench.report(progress=80).lease
    assert lease2 is not None and lease2.expires_at == at(120)
    bench.set(60)
    (touched,) = bench.touch_all("a1")
    assert touched.lease is not None and touched.lease.expires_at == at(150)
    bench.set(70)
    bench.report(status="completed", validate=True)
    bench.set(80)
    failed = bench.validation(False)
    assert failed.lease is not None and failed.lease.expires_at == at(80 + 90)
