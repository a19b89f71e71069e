"""The `seed` detector policy reproduces the seed's behaviour, defects included."""

from __future__ import annotations

import pytest
from corekit import Bench, at

from tenure.core import UNCHANGED, DetectorPolicy, EndReason, Policy, Recover, Wait, touch
from tenure.core.errors import LeaseLost

SEED = Policy(detector=DetectorPolicy(kind="seed"))


def test_seed_refuses_a_renewal_once_past_expiry_even_in_grace_but_keeps_progress() -> None:
    bench = Bench(policy=SEED)
    bench.add()
    bench.claim()
    bench.set(10)
    bench.report(progress=20)
    bench.set(10 + 241)  # in grace
    with pytest.raises(LeaseLost, match="expired"):
        bench.report(progress=35)
    lease = bench.live()
    assert lease is not None and lease.progress == 35 and lease.max_progress == 35
    assert lease.expires_at == at(250)  # not extended
    assert bench.counters["stale_refused"] == 1 and bench.counters["revivals"] == 0
    with pytest.raises(LeaseLost):
        bench.report(progress=5)
    lease = bench.live()
    assert lease is not None and lease.progress == 35  # a lower one is not kept


def test_seed_refuses_touches_past_expiry() -> None:
    bench = Bench(policy=SEED)
    bench.add()
    lease = bench.claim()
    assert touch(lease, at(181), SEED) is UNCHANGED
    assert bench.touch_all("a1")  # before expiry a touch still works


def test_seed_lets_touches_into_the_cadence_window() -> None:
    bench = Bench(policy=SEED)
    bench.add()
    bench.claim()
    bench.set(60)
    bench.report(progress=10)
    bench.set(70)
    bench.touch_all("a1")
    bench.set(80)
    bench.touch_all("a1")
    lease = bench.live()
    assert lease is not None and lease.progress_stamps == (at(60), at(70), at(80))


def test_seed_recovers_after_grace_when_silence_exceeds_five_medians() -> None:
    bench = Bench(policy=SEED)
    bench.add()
    bench.claim()
    for second in (0, 100, 200):
        bench.set(second)
        bench.report(progress=second // 10)
    # median 100 s, threshold 500 s from the last stamp at 200 s
    lease = bench.live()
    assert lease is not None and lease.recover_after == at(200 + 240 + 60)
    bench.set(500)
    assert bench.decide() == Wait(until=at(700), why="cadence")
    bench.set(701)
    assert bench.decide() == Recover(EndReason.LEASE_EXPIRED)


def test_seed_measures_silence_from_the_latest_stamp_and_touches_shrink_the_median() -> None:
    bench = Bench(policy=SEED)
    bench.add()
    bench.claim()
    for second in (0, 100, 200):
        bench.set(second)
        bench.report(progress=1 + second // 10)
    for second in (205, 210, 215):
        bench.set(second)
        bench.touch_all("a1")
    # stamps 0, 100, 200, 205, 210, 215: median 5 s; silence from 215
    bench.set(520)
    assert bench.decide() == Recover(EndReason.LEASE_EXPIRED)


def test_the_spec_detector_at_the_same_point_still_waits() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    for second in (0, 100, 200):
        bench.set(second)
        bench.report(progress=1 + second // 10)
    for second in (205, 210, 215):
        bench.set(second)
        bench.touch_all("a1")
    bench.set(520)  # median 100 s over progress only; silence 305 s from the last touch
    assert bench.decide() == Wait(until=at(715), why="cadence")
