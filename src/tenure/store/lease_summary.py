"""Counting live leases by state and flag in SQL, for the statistics.

`tenure.core.stats.summarize` counts leases it is given; loading every live
lease to count them cost seconds at 100k live leases (1.6-1.9 s on SQLite,
3-4.6 s on PostgreSQL, at each dashboard refresh and metrics scrape). Here
the database counts them, grouped by state and flag set (a handful of
groups), under the same rules as `tenure.core.timing.lease_state`; the
contract suite holds both stores to `summarize`'s answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tenure.core.model import LeaseState
from tenure.core.stats import LeaseSummary

#: The state of a live lease, `lease_state`'s rules in order; the three
#: parameters are now, now again, and `expiring_soon_before(now)`.
_STATE = (
    "CASE WHEN recover_after <= {mark} THEN 'expired' "
    "WHEN suspect_since IS NOT NULL THEN 'suspect' "
    "WHEN expires_at < {mark} THEN 'in_grace' "
    "WHEN expires_at < {mark} THEN 'expiring_soon' "
    "ELSE 'active' END"
)


def summary_sql(mark: str, *, scoped: bool, index_hint: str = "") -> str:
    """The counting query in a dialect whose placeholder is `mark`; with
    `scoped`, one board's leases (its id the last parameter)."""
    where = "ended_at IS NULL" + (f" AND board_id = {mark}" if scoped else "")
    return (
        f"SELECT {_STATE.format(mark=mark)}, flags, count(*), sum(renewal_count) "
        f"FROM leases {index_hint}WHERE {where} GROUP BY 1, 2"
    )


def summary_params(now: Any, soon: Any, board_id: str | None) -> Sequence[Any]:
    """The query's parameters, in the order of `summary_sql`."""
    return (now, now, soon) if board_id is None else (now, now, soon, board_id)


def summary_of(
    rows: Iterable[Sequence[Any]], flags_of: Callable[[Any], Iterable[str]]
) -> LeaseSummary:
    """The summary from the query's rows; `flags_of` reads a stored flag set."""
    summary = LeaseSummary()
    for state, flags, count, renewals in rows:
        summary.add_live(LeaseState(state), flags_of(flags), int(count), int(renewals or 0))
    return summary
