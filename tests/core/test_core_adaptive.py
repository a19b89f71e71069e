"""The `adaptive` detector in the pure core: the rhythm, the allowance, the decisions.

Every branch of `rhythm_allowance`, `learned`, a touch stamped by worktree
evidence, and `decide` under `adaptive`, on a `Bench` (tests/core/corekit.py).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from datetime import timedelta

import pytest
from corekit import Bench, at, make_task

from tenure.core import Evidence, Policy, decide
from tenure.core.decisions import Extend, Recover, Signal, Wait
from tenure.core.effects import learned
from tenure.core.lease import touch
from tenure.core.model import EndReason
from tenure.core.policy import DETECTOR_KINDS, DetectorPolicy, detector_policy
from tenure.core.timing import first_duration, rhythm_allowance, suspect_window

ADAPTIVE = Policy(detector=DetectorPolicy(kind="adaptive"))


def z(phi: float) -> float:
    return statistics.NormalDist().inv_cdf(1 - 10**-phi)


def steady(bench: Bench, every: float, reports: int, progress_step: int = 5) -> None:
    """The holder reports every `every` seconds, `reports` times."""
    for i in range(1, reports + 1):
        bench.advance(every)
        bench.report(progress=min(99, i * progress_step))


def test_adaptive_is_a_detector_kind_and_reads_the_worktree() -> None:
    assert "adaptive" in DETECTOR_KINDS
    assert detector_policy("adaptive").reads_worktree
    assert DetectorPolicy(kind="spec").reads_worktree
    assert not DetectorPolicy(kind="seed").reads_worktree
    assert not DetectorPolicy(kind="fixed").reads_worktree


def test_with_no_rhythm_the_allowance_is_the_priors_quantile() -> None:
    d = ADAPTIVE.detector
    quantile = d.prior_median_s * math.exp(z(d.phi_threshold) * d.prior_sigma)
    uncapped = Policy(detector=replace(d, max_silence_s=10_000.0))
    assert rhythm_allowance(None, uncapped) == pytest.approx(quantile)
    # With the default numbers the prior's quantile (711 s) is past the cap.
    expected = min(quantile, d.max_silence_s)
    assert rhythm_allowance(None, ADAPTIVE) == pytest.approx(expected)
    lease_s, grace_s = first_duration(make_task(), ADAPTIVE)
    assert grace_s == d.adaptive_grace_s and lease_s + grace_s == pytest.approx(expected)


def test_a_steady_holder_earns_a_tighter_allowance_than_the_prior() -> None:
    bench = Bench(policy=ADAPTIVE)
    bench.add()
    bench.claim()
    steady(bench, 40.0, 12)
    lease = bench.live()
    assert lease is not None and len(lease.signal_gaps) == 12
    d = ADAPTIVE.detector
    weight = d.prior_weight + 12
    mu = (d.prior_weight * math.log(d.prior_median_s) + 12 * math.log(40.0)) / weight
    spread = d.prior_weight * (d.prior_sigma**2 + (math.log(d.prior_median_s) - mu) ** 2)
    spread += 12 * (math.log(40.0) - mu) ** 2
    expected = math.exp(mu + z(d.phi_threshold) * math.sqrt(spread / weight))
    assert rhythm_allowance(lease, ADAPTIVE) == pytest.approx(expected)
    assert expected < rhythm_allowance(None, ADAPTIVE)
    # The lease runs for the allowance: expiry + grace = last signal + allowance.
    assert lease.recover_after == lease.last_signal_at + timedelta(seconds=expected)


def test_the_phase_widens_the_allowance_near_the_end_and_during_validators() -> None:
    bench = Bench(policy=ADAPTIVE)
    bench.add()
    lease = bench.claim()
    gaps = (60.0,) * 30
    body = replace(lease, signal_gaps=gaps, progress=50)
    finishing = replace(body, progress=80)
    done = replace(body, progress=100)
    d = ADAPTIVE.detector
    assert rhythm_allowance(body, ADAPTIVE) > d.min_silence_s
    assert rhythm_allowance(finishing, ADAPTIVE) == pytest.approx(
        rhythm_allowance(body, ADAPTIVE) * d.finishing_factor
    )
    assert rhythm_allowance(done, ADAPTIVE) >= d.validator_silence_s
    # Very quick rhythms are floored; an erratic one is capped.
    quick = Policy(detector=replace(d, kind="adaptive", prior_weight=0.001))
    assert rhythm_allowance(replace(body, signal_gaps=(2.0,) * 30), quick) == d.min_silence_s
    wild = replace(body, signal_gaps=(5.0, 3000.0) * 15)
    assert rhythm_allowance(wild, ADAPTIVE) == d.max_silence_s


def test_calls_are_learned_but_bursts_and_old_gaps_are_not() -> None:
    policy = Policy(detector=DetectorPolicy(kind="adaptive", rhythm_window=3, min_gap_s=5.0))
    bench = Bench(policy=policy)
    bench.add()
    lease = bench.claim()
    assert lease.last_call_at is None
    first = learned(lease, at(10), policy)  # measured from the assignment
    assert first.signal_gaps == (10.0,) and first.last_call_at == at(10)
    burst = learned(first, at(12), policy)  # 2 s later: one burst, not a gap
    assert burst.signal_gaps == (10.0,) and burst.last_call_at == at(12)
    more = learned(learned(learned(burst, at(30), policy), at(60), policy), at(100), policy)
    assert more.signal_gaps == (18.0, 30.0, 40.0)


def test_a_touch_stamped_by_worktree_evidence_runs_from_the_change() -> None:
    bench = Bench(policy=ADAPTIVE)
    bench.add()
    bench.claim()
    bench.advance(30)
    bench.touch_all("a1")
    lease = bench.live()
    assert lease is not None and lease.signal_gaps == (30.0,)
    wrote = lease.expires_at + timedelta(seconds=20)
    bench.now = wrote + timedelta(seconds=500)
    change = bench.apply(touch(lease, bench.now, ADAPTIVE, at=wrote))
    after = bench.live()
    assert after is not None
    # Stamped at the change, revived (the change came after expiry), rhythm untouched.
    assert after.last_signal_at == wrote and change.kind == "revived"
    assert after.signal_gaps == (30.0,) and after.last_call_at == lease.last_call_at
    allowance = rhythm_allowance(after, ADAPTIVE)
    assert after.recover_after == wrote + timedelta(seconds=allowance)
    # A stamp from the future (a skewed file system) counts as now.
    later = bench.apply(touch(after, bench.now, ADAPTIVE, at=bench.now + timedelta(hours=1)))
    assert later.lease is not None and later.lease.last_signal_at == bench.now


def test_adaptive_waits_out_the_allowance_then_recovers_a_silent_holder() -> None:
    bench = Bench(policy=ADAPTIVE)
    bench.add()
    bench.claim()
    steady(bench, 40.0, 6)
    bench.expire()
    assert bench.decide() == Recover(EndReason.LEASE_EXPIRED)
    # Reaching 100 % widened the allowance after the lease was last written:
    # the monitor then waits for the new deadline.
    lease = bench.live()
    assert lease is not None
    widened = replace(lease, progress=100)
    allowance = rhythm_allowance(widened, ADAPTIVE)
    assert decide(bench.task(), widened, bench.now, ADAPTIVE) == Wait(
        until=widened.last_signal_at + timedelta(seconds=allowance), why="rhythm"
    )


def test_adaptive_worktree_changes_signal_at_their_own_time() -> None:
    bench = Bench(policy=ADAPTIVE)
    bench.add()
    bench.claim()
    steady(bench, 40.0, 6)
    lease = bench.live()
    assert lease is not None
    allowance = rhythm_allowance(lease, ADAPTIVE)
    due = bench.expire()
    recent = due - timedelta(seconds=20)
    seen = Evidence(changed=True, observed_at=due, changed_at=recent)
    assert bench.decide(evidence=seen) == Signal(at=recent)
    bench.sweep(evidence=seen)
    after = bench.live()
    assert after is not None and after.last_signal_at == recent
    assert after.recover_after == recent + timedelta(seconds=allowance)
    # A change already older than the allowance cannot save a silent holder.
    bench.set((after.recover_after - at(0)).total_seconds() + allowance)
    stale = Evidence(changed=True, changed_at=after.recover_after - timedelta(seconds=5))
    assert bench.decide(evidence=stale) == Recover(EndReason.LEASE_EXPIRED)
    # Evidence without a time counts when observed, else now.
    assert bench.decide(evidence=Evidence(changed=True, observed_at=bench.now)) == Signal(
        at=bench.now
    )
    assert bench.decide(evidence=Evidence(changed=True)) == Signal(at=bench.now)
    # A change no later than the last signal is no news.
    old = Evidence(changed=True, changed_at=after.last_signal_at)
    assert bench.decide(evidence=old) == Recover(EndReason.LEASE_EXPIRED)
    assert bench.decide(evidence=Evidence(conflict=True)) == Extend()


@pytest.mark.parametrize("dropped", [False, True])
@pytest.mark.parametrize("kind", ["spec", "adaptive"])
def test_a_closed_session_is_judged_on_changes_made_after_it_closed(
    kind: str, dropped: bool
) -> None:
    bench = Bench(policy=Policy(detector=DetectorPolicy(kind=kind)))  # type: ignore[arg-type]
    bench.add()
    bench.claim()
    steady(bench, 40.0, 3)
    bench.advance(20)
    closed = bench.now
    bench.close_session(dropped=dropped)
    due = bench.expire()
    assert due == closed + suspect_window(bench.policy, dropped=dropped)
    before = Evidence(changed=True, changed_at=closed - timedelta(seconds=5))
    assert bench.decide(evidence=before) == Recover(EndReason.AGENT_DISCONNECTED)
    after = Evidence(changed=True, changed_at=closed + timedelta(seconds=5))
    assert bench.decide(evidence=after) == Signal(at=closed + timedelta(seconds=5))
    bench.sweep(evidence=after)
    lease = bench.live()
    assert lease is not None and lease.suspect_since is None


@pytest.mark.parametrize(
    ("kind", "closed_s", "dropped_s"),
    [("spec", 30, 30), ("fixed", 30, 30), ("adaptive", 30, 120)],
)
def test_the_window_after_a_close_depends_on_the_detector_and_how_the_session_ended(
    kind: str, closed_s: float, dropped_s: float
) -> None:
    policy = Policy(detector=DetectorPolicy(kind=kind))  # type: ignore[arg-type]
    assert suspect_window(policy) == timedelta(seconds=closed_s)
    assert suspect_window(policy, dropped=True) == timedelta(seconds=dropped_s)


def test_under_adaptive_an_explicit_close_never_waits_longer_than_a_drop() -> None:
    short = Policy(detector=DetectorPolicy(kind="adaptive", suspect_window_s=20.0))
    assert suspect_window(short) == suspect_window(short, dropped=True) == timedelta(seconds=20)
    bench = Bench(policy=short)
    bench.add()
    bench.claim()
    bench.set(10)
    bench.close_session(dropped=True)
    before = bench.lease().recover_after
    bench.set(25)
    bench.close_session()
    assert bench.lease().recover_after == before == at(30)


def test_under_adaptive_an_explicit_close_after_a_drop_brings_the_deadline_nearer() -> None:
    bench = Bench(policy=ADAPTIVE)
    bench.add()
    bench.claim()
    steady(bench, 40.0, 3)
    dropped_at = bench.now
    bench.close_session(dropped=True)
    assert bench.lease().recover_after == dropped_at + timedelta(seconds=120)
    bench.advance(50)
    bench.close_session()
    # Counted from the drop: no call came since, and now the agent has left.
    assert bench.lease().recover_after == dropped_at + timedelta(seconds=30) < bench.now
    assert bench.decide() == Recover(EndReason.AGENT_DISCONNECTED)


def test_a_failed_validation_under_adaptive_renews_by_the_rhythm() -> None:
    bench = Bench(policy=ADAPTIVE)
    bench.add()
    bench.claim()
    steady(bench, 40.0, 4)
    bench.advance(10)
    bench.report(status="completed", validate=True)
    bench.advance(30)
    bench.validation(passed=False)
    lease = bench.live()
    assert lease is not None
    allowance = rhythm_allowance(lease, ADAPTIVE)
    assert lease.recover_after == bench.now + timedelta(seconds=allowance)


def test_before_its_window_is_over_a_suspect_lease_is_judged_by_its_rhythm() -> None:
    bench = Bench(policy=ADAPTIVE)
    bench.add()
    bench.claim()
    steady(bench, 20.0, 20, progress_step=2)
    lease = bench.live()
    assert lease is not None
    last = bench.now
    allowance = timedelta(seconds=rhythm_allowance(lease, ADAPTIVE))
    window = suspect_window(ADAPTIVE, dropped=True)
    bench.advance(40)
    closed = bench.now
    bench.close_session(dropped=True)
    due = bench.expire()
    assert due == last + allowance < closed + window
    # A write made before the close still shows the holder alive until then...
    wrote = last + timedelta(seconds=30)
    seen = Evidence(changed=True, changed_at=wrote)
    assert bench.decide(evidence=seen) == Signal(at=wrote)
    bench.sweep(evidence=seen)
    after = bench.live()
    assert after is not None and after.last_signal_at == wrote
    # ...but not after it: the suspicion stays.
    assert after.suspect_since == closed
    assert after.recover_after == min(wrote + allowance, closed + window)
    bench.expire()
    assert bench.decide(evidence=seen) == Recover(EndReason.LEASE_EXPIRED)
