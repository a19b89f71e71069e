"""Statistics over a set of leases and a board's counters (SPEC, Statistics).

Pure. The leases are counted into a `LeaseSummary` (by state, by flag, live,
renewals), here by `summarize` or by the store in SQL (`Tx.lease_summary`,
which must agree with `summarize`: a contract test holds both to it), and
`summary_statistics` shapes the figures from it. `statistics` does both;
`tenure.core.lease.statistics` is that same function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tenure.core.model import RECOVERY_REASONS, Counter, Lease, LeaseFlag, LeaseState
from tenure.core.policy import Policy
from tenure.core.timing import lease_state

__all__ = ["LeaseSummary", "statistics", "summarize", "summary_statistics"]


def _zero_by_state() -> dict[str, int]:
    return {state.value: 0 for state in LeaseState}


def _zero_by_flag() -> dict[str, int]:
    return {flag.value: 0 for flag in LeaseFlag}


@dataclass
class LeaseSummary:
    """Leases counted by state, and live ones by flag, with their renewals.

    Every state and flag is a key from the start (0 when no lease has it), so
    dashboards and metrics see a stable shape.
    """

    by_state: dict[str, int] = field(default_factory=_zero_by_state)
    by_flag: dict[str, int] = field(default_factory=_zero_by_flag)
    #: Live leases, and the sum of their renewal counts.
    live: int = 0
    renewals: int = 0

    def add_live(
        self, state: LeaseState, flags: Iterable[str], count: int = 1, renewals: int = 0
    ) -> None:
        """Count `count` live leases in `state` with `flags` and `renewals` in all."""
        self.by_state[state.value] += count
        self.live += count
        self.renewals += renewals
        for flag in flags:
            self.by_flag[str(flag)] += count


def summarize(leases: Iterable[Lease], now: datetime, policy: Policy) -> LeaseSummary:
    """`leases` counted at `now`: every one by state; live ones by flag, with renewals."""
    summary = LeaseSummary()
    for lease in leases:
        state = lease_state(lease, now, policy)
        if lease.live:
            summary.add_live(state, lease.flags, renewals=lease.renewal_count)
        else:
            summary.by_state[state.value] += 1
    return summary


def summary_statistics(
    summary: LeaseSummary, counters: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The statistics SPEC names, from counted leases and the counters."""
    counted = {str(name): int(value) for name, value in (counters or {}).items()}

    def get(counter: Counter) -> int:
        return counted.get(counter.value, 0)

    live = summary.live
    return {
        "live": live,
        "by_state": dict(summary.by_state),
        "by_flag": dict(summary.by_flag),
        "average_renewals": summary.renewals / live if live else 0.0,
        "recoveries": {
            reason.value: counted.get(f"recoveries.{reason.value}", 0)
            for reason in sorted(RECOVERY_REASONS)
        },
        "revivals": get(Counter.REVIVALS),
        "false_recoveries": {
            "reclaimed": get(Counter.FALSE_RECOVERY_RECLAIMED),
            "lost": get(Counter.FALSE_RECOVERY_LOST),
        },
        "stale_refused": get(Counter.STALE_REFUSED),
        "stale_leases_released": get(Counter.STALE_LEASES_RELEASED),
        "extensions": {
            "merge_conflict": get(Counter.EXTENSIONS_MERGE_CONFLICT),
            "validation": get(Counter.EXTENSIONS_VALIDATION),
        },
        "dead_letters": get(Counter.DEAD_LETTERS),
        "escalations": get(Counter.ESCALATIONS),
        "counters": counted,
    }


def statistics(
    leases: Iterable[Lease],
    now: datetime,
    policy: Policy,
    counters: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Leases by state and flag, average renewals of live leases, and the counters."""
    return summary_statistics(summarize(leases, now, policy), counters)
