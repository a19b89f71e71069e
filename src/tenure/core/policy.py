"""Lease-duration and detector policies: SPEC's numbers as frozen data.

A policy is chosen by name in the settings. Duration policies say how long a
lease runs and how much grace follows it; detector policies say when the
monitor may take a task back. `Policy` bundles both with the escalation and
budget numbers, so the core receives every number it uses as one value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tenure.core.errors import InvalidInput

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Phase:
    """One row of the progressive table: a phase number, lease and grace in seconds."""

    number: int
    lease_s: float
    grace_s: float


@dataclass(frozen=True, slots=True)
class ProgressivePolicy:
    """SPEC's default durations: short while unproven, longest near the end."""

    name: Literal["progressive"] = "progressive"
    unproven: Phase = Phase(1, 180.0, 60.0)
    working: Phase = Phase(2, 240.0, 60.0)
    proven: Phase = Phase(3, 300.0, 60.0)
    finishing: Phase = Phase(4, 360.0, 90.0)
    default: Phase = Phase(0, 240.0, 60.0)
    proven_at: int = 25
    finishing_at: int = 75

    def phase(self, reports: int, progress: int) -> Phase:
        """The phase of a lease with `reports` progress reports at `progress` %."""
        if reports <= 0:
            return self.unproven
        if reports == 1:
            return self.working
        if progress >= self.finishing_at:
            return self.finishing
        if progress >= self.proven_at:
            return self.proven
        return self.default


@dataclass(frozen=True, slots=True)
class ConservativePolicy:
    """The seed's task-based first lease and its decaying renewals, in hours."""

    name: Literal["conservative"] = "conservative"
    default_estimate_h: float = 4.0
    priority_multipliers: tuple[tuple[str, float], ...] = (
        ("urgent", 0.5),
        ("high", 0.75),
        ("medium", 1.0),
        ("low", 1.5),
    )
    label_multipliers: tuple[tuple[str, float], ...] = (
        ("simple", 0.5),
        ("complex", 1.5),
        ("research", 2.0),
        ("epic", 3.0),
    )
    min_h: float = 0.5
    max_h: float = 24.0
    renewal_base_h: float = 4.0
    decay: float = 0.9
    grace_s: float = 60.0

    def clamp_h(self, hours: float) -> float:
        """Hours bounded to [min_h, max_h]."""
        return max(self.min_h, min(self.max_h, hours))

    def first_lease_h(
        self, estimate_h: float | None, priority: str, labels: tuple[str, ...]
    ) -> float:
        """The first lease of a task, in hours (before nothing: clamped)."""
        hours = estimate_h if estimate_h else self.default_estimate_h
        hours *= dict(self.priority_multipliers).get(priority.lower(), 1.0)
        label_table = dict(self.label_multipliers)
        for label in labels:
            if label.lower() in label_table:
                hours *= label_table[label.lower()]
                break
        return self.clamp_h(hours)

    def renewal_base(self, progress: int, renewals_before: int, estimate_h: float | None) -> float:
        """A renewal's hours before decay and clamping (SPEC's worked examples)."""
        hours = self.renewal_base_h
        if progress > 75:
            hours = 2.0
        elif progress > 50:
            hours = 3.0
        elif progress < 25 and renewals_before > 2:
            hours = 2.0
        if estimate_h is not None and estimate_h > 8:
            hours *= 1.5
        return hours

    def renewal_h(self, progress: int, renewals_before: int, estimate_h: float | None) -> float:
        """A renewal's hours: base, then decay 0.9^n, the 2 h cap past 5, the clamp."""
        hours = self.renewal_base(progress, renewals_before, estimate_h)
        hours *= self.decay**renewals_before
        if renewals_before > 5:
            hours = min(hours, 2.0)
        return self.clamp_h(hours)


DurationPolicy = ProgressivePolicy | ConservativePolicy


@dataclass(frozen=True, slots=True)
class DetectorPolicy:
    """When the monitor may recover a lease past its recover-after.

    `kind`:
    - `spec`: SPEC's detector (evidence, cadence over the progress window,
      suspect skips cadence, signals revive).
    - `seed`: the seed's behaviour, defects included: renewals and touches
      refused once past expiry, touches enter the cadence window.
    - `fixed`: one TTL; no cadence, recover as soon as recover-after passes.
    - `adaptive`: a phi-accrual detector (docs/detection.md). Each lease
      learns its holder's rhythm (the gaps between its calls: reports and
      every other call); the silence allowed after the latest sign of life
      (a call, or a worktree change at the time it happened) is the gap this
      holder exceeds with probability 10^-`phi_threshold` under a lognormal
      fitted to those gaps (shrunk towards a prior while few are known),
      x `finishing_factor` from `finishing_at` % on, at least
      `validator_silence_s` at 100 %, within [`min_silence_s`,
      `max_silence_s`]. The lease's duration is that allowance (minus
      `adaptive_grace_s` of grace), so an agent's `expires_at` tells the truth.
      A session its client closed (a DELETE, a stdio proxy whose agent
      exited) is given `Policy.suspect_after_close_s` to show a sign of life
      made after the close, as under `spec`; a connection that dropped with
      no DELETE (a blip, or a killed process tree) `suspect_window_s`.
    """

    kind: Literal["spec", "seed", "fixed", "adaptive"] = "adaptive"
    silence_multiplier: float = 5.0
    min_stamps_for_cadence: int = 2
    fixed_ttl_s: float = 300.0
    # The adaptive detector's numbers (docs/detection.md has the curve).
    phi_threshold: float = 3.0
    prior_median_s: float = 60.0
    prior_sigma: float = 0.8
    prior_weight: float = 4.0
    rhythm_window: int = 32
    min_gap_s: float = 10.0
    finishing_at: int = 75
    finishing_factor: float = 1.5
    validator_silence_s: float = 180.0
    min_silence_s: float = 90.0
    # No rhythm excuses more silence (no call, no worktree change) than this:
    # the lab's live agents are rarely that silent, even slow ones, while a
    # slow holder's fitted allowance would otherwise reach 900 s and more.
    max_silence_s: float = 500.0
    adaptive_grace_s: float = 30.0
    suspect_window_s: float = 120.0

    @property
    def refuses_after_expiry(self) -> bool:
        """The seed refused every renewal and touch once the lease expired."""
        return self.kind == "seed"

    @property
    def touches_enter_cadence(self) -> bool:
        """The seed let touches enter the cadence window (SPEC departure 5)."""
        return self.kind == "seed"

    @property
    def reads_worktree(self) -> bool:
        """Whether worktree changes count as signals (`spec` and `adaptive`)."""
        return self.kind in ("spec", "adaptive")


@dataclass(frozen=True, slots=True)
class Policy:
    """Every number the core uses, with SPEC's defaults."""

    durations: DurationPolicy = field(default_factory=ProgressivePolicy)
    detector: DetectorPolicy = field(default_factory=DetectorPolicy)
    warning_threshold_s: float = 60.0
    conflict_extension_s: float = 300.0
    max_conflict_extensions: int = 2
    suspect_after_close_s: float = 30.0
    validation_window_s: float = 600.0
    max_renewals: int = 10
    stuck_threshold_renewals: int = 5
    stall_after_s: float = 1200.0
    max_recoveries: int = 3
    handoff_ttl_s: float = 24 * HOUR
    false_recovery_window_s: float = 600.0
    branch_template: str = "tenure/{agent_id}"
    cadence_window: int = 20


DURATION_POLICIES: dict[str, type[ProgressivePolicy] | type[ConservativePolicy]] = {
    "progressive": ProgressivePolicy,
    "conservative": ConservativePolicy,
}

DETECTOR_KINDS = ("spec", "seed", "fixed", "adaptive")


def duration_policy(name: str) -> DurationPolicy:
    """The duration policy called `name`, with SPEC's defaults."""
    try:
        return DURATION_POLICIES[name]()
    except KeyError:
        raise InvalidInput(
            f"unknown lease policy {name!r}; choose one of {sorted(DURATION_POLICIES)}",
            details={"field": "lease.policy", "value": name},
        ) from None


def detector_policy(name: str, silence_multiplier: float = 5.0) -> DetectorPolicy:
    """The detector policy called `name`."""
    if name not in DETECTOR_KINDS:
        raise InvalidInput(
            f"unknown detector policy {name!r}; choose one of {list(DETECTOR_KINDS)}",
            details={"field": "detector.policy", "value": name},
        )
    return DetectorPolicy(kind=name, silence_multiplier=silence_multiplier)  # type: ignore[arg-type]
