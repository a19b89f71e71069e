"""Statistics over a set of leases and a board's counters (SPEC, Statistics).

Pure: the service loads the leases and counters and asks for the summary;
`tenure.core.lease.statistics` is this same function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from tenure.core.model import RECOVERY_REASONS, Counter, Lease, LeaseFlag, LeaseState
from tenure.core.policy import Policy
from tenure.core.timing import lease_state

__all__ = ["statistics"]


def statistics(
    leases: Iterable[Lease],
    now: datetime,
    policy: Policy,
    counters: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Leases by state and flag, average renewals of live leases, and the counters.

    Every state and flag appears, with 0 when no lease has it, so dashboards
    and metrics see a stable shape.
    """
    by_state = {state.value: 0 for state in LeaseState}
    by_flag = {flag.value: 0 for flag in LeaseFlag}
    live = 0
    renewals = 0
    for lease in leases:
        by_state[lease_state(lease, now, policy).value] += 1
        if lease.live:
            live += 1
            renewals += lease.renewal_count
            for flag in lease.flags:
                by_flag[flag.value] += 1
    counted = {str(name): int(value) for name, value in (counters or {}).items()}

    def get(counter: Counter) -> int:
        return counted.get(counter.value, 0)

    return {
        "live": live,
        "by_state": by_state,
        "by_flag": by_flag,
        "average_renewals": renewals / live if live else 0.0,
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
