"""Time arithmetic of a lease: its state, its durations, its deadlines, its cadence.

Pure functions of a lease, a moment and the policy. `tenure.core.lease`
re-exports the public ones; the transitions, the detector and the statistics
all judge time through this one module so they can never disagree.
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from datetime import datetime, timedelta

from tenure.core.model import Lease, LeaseState, Task, ensure_utc
from tenure.core.policy import ConservativePolicy, Policy, ProgressivePolicy

__all__ = [
    "compute_recover_after",
    "expiring_soon_before",
    "first_duration",
    "lease_state",
    "median_interval",
    "phase_of",
    "renewal_duration",
    "rhythm_allowance",
    "seconds_left",
    "suspect_window",
    "touch_duration",
]

HOUR_S = 3600.0


def lease_state(lease: Lease, now: datetime, policy: Policy) -> LeaseState:
    """SPEC's state of `lease` at `now` (first matching rule wins)."""
    now = ensure_utc(now, "now")
    if lease.ended_at is not None:
        return LeaseState.ENDED
    if now >= lease.recover_after:
        return LeaseState.EXPIRED
    if lease.suspect_since is not None:
        return LeaseState.SUSPECT
    if now > lease.expires_at:
        return LeaseState.IN_GRACE
    if (lease.expires_at - now).total_seconds() < policy.warning_threshold_s:
        return LeaseState.EXPIRING_SOON
    return LeaseState.ACTIVE


def expiring_soon_before(now: datetime, policy: Policy) -> datetime:
    """`lease_state`'s warning rule as a moment: a live lease that is not
    expired, suspect or in grace at `now` is expiring soon exactly when it
    expires before this (for a store that counts states in SQL)."""
    return ensure_utc(now, "now") + timedelta(seconds=policy.warning_threshold_s)


def seconds_left(lease: Lease, now: datetime) -> float:
    """Seconds until the lease expires, never below 0 (an answer shown to agents)."""
    now = ensure_utc(now, "now")
    return max(0.0, (lease.expires_at - now).total_seconds())


def phase_of(lease: Lease, policy: Policy) -> int:
    """The progressive phase number of `lease` (0 for the default row, and for
    the conservative policy, which has no phases)."""
    if isinstance(policy.durations, ProgressivePolicy):
        return policy.durations.phase(lease.renewal_count, lease.progress).number
    return 0


def suspect_window(policy: Policy, *, dropped: bool = False) -> timedelta:
    """How long after its last session closed a silent holder keeps its lease.

    SPEC's `suspect_after_close_s` (30 s) for an explicit close (a DELETE, a
    stdio proxy whose agent exited), and for every close under `spec` and
    `fixed`. Under `adaptive`, a `dropped` connection (no DELETE) is given
    `suspect_window_s`: a live agent whose connection blipped shows nothing
    for longer than 30 s often enough that waiting less takes work from live
    agents (docs/detection.md). An explicit close never waits longer than a
    drop, so making a drop explicit can only bring its deadline nearer.
    """
    detector = policy.detector
    close = policy.suspect_after_close_s
    if detector.kind == "adaptive":
        drop = detector.suspect_window_s
        return timedelta(seconds=drop if dropped else min(close, drop))
    return timedelta(seconds=close)


def compute_recover_after(
    expires_at: datetime,
    grace_s: float,
    suspect_since: datetime | None,
    policy: Policy,
    *,
    dropped: bool = False,
) -> datetime:
    """When the monitor may act: expiry + grace, or the suspect deadline if earlier.

    `dropped`: the suspicion came from a dropped connection, not an explicit close.
    """
    deadline = expires_at + timedelta(seconds=grace_s)
    if suspect_since is not None:
        deadline = min(deadline, suspect_since + suspect_window(policy, dropped=dropped))
    return deadline


def median_interval(stamps: tuple[datetime, ...] | list[datetime]) -> float | None:
    """Median seconds between consecutive stamps, or None below two stamps."""
    if len(stamps) < 2:
        return None
    ordered = sorted(stamps)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ordered)]
    return float(statistics.median(gaps))


@functools.lru_cache(maxsize=16)
def _phi_quantile(phi: float) -> float:
    """The standard normal quantile exceeded with probability 10^-phi (a
    policy's constant, asked at every call of a holder: computed once)."""
    return statistics.NormalDist().inv_cdf(1.0 - 10.0 ** (-phi))


def rhythm_allowance(lease: Lease | None, policy: Policy) -> float:
    """Seconds of silence the `adaptive` detector allows `lease`'s holder.

    Phi accrual over the holder's own gaps between calls: the logs of the
    gaps are taken as normal, their mean and spread shrunk towards the
    prior's (`prior_weight` pseudo-gaps of median `prior_median_s`, spread
    `prior_sigma`) so a few gaps cannot make the detector jumpy; the
    allowance is the gap exceeded with probability 10^-`phi_threshold`. The
    task's phase then widens it: reports thin out from `finishing_at` %
    (x `finishing_factor`) and validators run silently after 100 % (at least
    `validator_silence_s`). The result stays within [`min_silence_s`,
    `max_silence_s`]. With no lease (a task not yet held) only the prior speaks.
    """
    d = policy.detector
    logs = [math.log(gap) for gap in lease.signal_gaps] if lease else []
    prior_mu = math.log(d.prior_median_s)
    weight = d.prior_weight + len(logs)
    mu = (d.prior_weight * prior_mu + sum(logs)) / weight
    spread = d.prior_weight * (d.prior_sigma**2 + (prior_mu - mu) ** 2)
    spread += sum((x - mu) ** 2 for x in logs)
    z = _phi_quantile(d.phi_threshold)
    allowance = math.exp(mu + z * math.sqrt(spread / weight))
    progress = lease.progress if lease else 0
    if progress >= d.finishing_at:
        allowance *= d.finishing_factor
    if progress >= 100:
        allowance = max(allowance, d.validator_silence_s)
    return min(d.max_silence_s, max(d.min_silence_s, allowance))


def _fixed(policy: Policy, lease: Lease | None = None) -> tuple[float, float] | None:
    # The `fixed` detector is a plain queue: one TTL for every lease, no grace.
    # The `adaptive` one sizes every lease from its holder's rhythm instead.
    detector = policy.detector
    if detector.kind == "fixed":
        return detector.fixed_ttl_s, 0.0
    if detector.kind == "adaptive":
        allowance = rhythm_allowance(lease, policy)
        grace = min(detector.adaptive_grace_s, allowance / 2)
        return allowance - grace, grace
    return None


def first_duration(task: Task, policy: Policy) -> tuple[float, float]:
    """(lease seconds, grace seconds) of a new lease on `task`."""
    fixed = _fixed(policy)
    if fixed:
        return fixed
    durations = policy.durations
    if isinstance(durations, ConservativePolicy):
        hours = durations.first_lease_h(task.estimated_hours, task.priority, task.labels)
        return hours * HOUR_S, durations.grace_s
    phase = durations.phase(0, 0)
    return phase.lease_s, phase.grace_s


def renewal_duration(lease: Lease, policy: Policy, estimate_h: float | None) -> tuple[float, float]:
    """(lease, grace) seconds for a renewal, `lease` already counting this report.

    Progressive: the phase of (reports, progress). Conservative: the decaying
    renewal with n = the renewals before this one. Adaptive: the rhythm's allowance.
    """
    fixed = _fixed(policy, lease)
    if fixed:
        return fixed
    durations = policy.durations
    if isinstance(durations, ConservativePolicy):
        before = max(0, lease.renewal_count - 1)
        return durations.renewal_h(lease.progress, before, estimate_h) * HOUR_S, durations.grace_s
    phase = durations.phase(lease.renewal_count, lease.progress)
    return phase.lease_s, phase.grace_s


def touch_duration(lease: Lease, policy: Policy, estimate_h: float | None) -> tuple[float, float]:
    """(lease, grace) seconds a touch grants: the current phase, at least phase 2.

    A live holder that touches before its first report is working, so it gets
    phase 2's time rather than the unproven phase's.
    """
    fixed = _fixed(policy, lease)
    if fixed:
        return fixed
    durations = policy.durations
    if isinstance(durations, ConservativePolicy):
        hours = durations.renewal_h(lease.progress, lease.renewal_count, estimate_h)
        return hours * HOUR_S, durations.grace_s
    phase = durations.phase(max(lease.renewal_count, 1), lease.progress)
    return phase.lease_s, phase.grace_s


def finishing_duration(
    lease: Lease, policy: Policy, estimate_h: float | None
) -> tuple[float, float]:
    """(lease, grace) seconds of the finishing phase (a failed validation's renewal)."""
    fixed = _fixed(policy, lease)
    if fixed:
        return fixed
    durations = policy.durations
    if isinstance(durations, ConservativePolicy):
        hours = durations.renewal_h(max(lease.progress, 76), lease.renewal_count, estimate_h)
        return hours * HOUR_S, durations.grace_s
    return durations.finishing.lease_s, durations.finishing.grace_s
