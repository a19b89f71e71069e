"""Contract: the live leases counted by state and flag in the database agree
with the core's own count (`tenure.core.stats.summarize`), boundaries included."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from contract_records import BOARD, T0, agent, at, board, lease, seed, task

from tenure.core.model import LeaseFlag, LeaseState
from tenure.core.policy import Policy
from tenure.core.stats import LeaseSummary, summarize
from tenure.core.timing import expiring_soon_before

POLICY = Policy()
#: The moment the boundary leases are built around.
NOW = at(1000)
WARN = timedelta(seconds=POLICY.warning_threshold_s)


def _boundary_leases() -> list[dict[str, Any]]:
    """Leases on each edge of `lease_state`'s rules at NOW (fields beyond the task id)."""
    second = timedelta(seconds=1)
    tick = timedelta(microseconds=1)
    late = NOW + timedelta(hours=1)
    return [
        {"expires_at": late, "recover_after": late},  # active
        {"expires_at": NOW + WARN, "recover_after": late},  # active: not under the threshold
        {"expires_at": NOW + WARN - tick, "recover_after": late},  # expiring soon
        {"expires_at": NOW, "recover_after": late},  # expiring soon: not past expiry
        {"expires_at": NOW - tick, "recover_after": late},  # in grace
        {"expires_at": NOW - second, "recover_after": NOW + tick},  # in grace
        {"expires_at": NOW - second, "recover_after": NOW},  # expired: at recover_after
        {"expires_at": NOW - second, "recover_after": NOW - tick},  # expired
        {"expires_at": late, "recover_after": NOW + second, "suspect_since": NOW},  # suspect
        {"expires_at": late, "recover_after": NOW, "suspect_since": NOW},  # expired wins
        {"expires_at": NOW - tick, "recover_after": late, "suspect_since": NOW},  # suspect wins
        {"expires_at": late, "recover_after": late, "flags": frozenset({LeaseFlag.STALLED})},
        {
            "expires_at": NOW + tick,
            "recover_after": late,
            "flags": frozenset({LeaseFlag.ESCALATED, LeaseFlag.VALIDATING}),
            "renewal_count": 7,
        },
    ]


async def _seed_boundaries(store: Any) -> None:
    fields = _boundary_leases()
    ids = [f"t{i:02d}" for i in range(len(fields))]
    records: list[Any] = [board(), agent("a1"), *(task(t) for t in ids)]
    records += [
        lease(t, "a1", **{"renewal_count": i, **extra})
        for i, (t, extra) in enumerate(zip(ids, fields, strict=True))
    ]
    # An ended lease of the same task never counts: only live ones do.
    records.insert(-1, lease(ids[-1], "a1", epoch=0, ended_at=at(5)))
    await store.run(seed(*records))


async def _both(store: Any, board_id: str | None, now: datetime) -> tuple[LeaseSummary, ...]:
    soon = expiring_soon_before(now, POLICY)

    def unit(tx: Any) -> tuple[LeaseSummary, LeaseSummary]:
        counted = tx.lease_summary(board_id, now, soon)
        return counted, summarize(tx.live_leases(board_id), now, POLICY)

    return tuple(await store.read(unit))


async def test_every_state_boundary_is_counted_as_the_core_counts_it(store: Any) -> None:
    await _seed_boundaries(store)
    counted, expected = await _both(store, BOARD, NOW)
    assert counted == expected
    assert expected.by_state == {
        LeaseState.ACTIVE.value: 3,
        LeaseState.EXPIRING_SOON.value: 3,
        LeaseState.IN_GRACE.value: 2,
        LeaseState.EXPIRED.value: 3,
        LeaseState.SUSPECT.value: 2,
        LeaseState.ENDED.value: 0,
    }
    assert expected.by_flag == {"stalled": 1, "escalated": 1, "validating": 1}
    assert expected.live == 13 and expected.renewals == sum(range(12)) + 7


async def test_a_mixed_fleet_of_boards_is_counted_alike_at_any_moment(store: Any) -> None:
    chance = random.Random(11)
    flag_sets = [frozenset(), frozenset({LeaseFlag.STALLED}), frozenset(LeaseFlag)]
    records: list[Any] = []
    for board_id in ("b1", "b2"):
        records += [board(board_id), agent("a1", board_id)]
        for i in range(40):
            task_id = f"{board_id}-{i}"
            expires = T0 + timedelta(seconds=chance.randrange(0, 2000))
            fields: dict[str, Any] = {
                "expires_at": expires,
                "recover_after": expires + timedelta(seconds=chance.choice([0, 30, 60])),
                "flags": chance.choice(flag_sets),
                "renewal_count": chance.randrange(0, 12),
            }
            if chance.random() < 0.2:
                fields["suspect_since"] = T0
            records += [task(task_id, board_id), lease(task_id, "a1", board_id=board_id, **fields)]
    await store.run(seed(*records))
    for now in (T0, at(500), at(999.5), at(1800), at(5000)):
        for scope in (None, "b1", "b2"):
            counted, expected = await _both(store, scope, now)
            assert counted == expected, (now, scope)
    everything, _ = await _both(store, None, at(500))
    assert everything.live == 80


async def test_a_board_without_live_leases_counts_zero_everywhere(store: Any) -> None:
    await store.run(seed(board(), agent("a1"), task("t1"), lease("t1", "a1", ended_at=at(1))))
    counted, expected = await _both(store, BOARD, NOW)
    assert counted == expected == LeaseSummary()
