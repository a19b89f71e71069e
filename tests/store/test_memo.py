"""The SQLite store's memo of decoded rows (tenure.store.memo).

A remembered record must be exactly what decoding its row gives: equal in
every field and of the same type, since answers render it as JSON. These
tests drive real leases through the Coordinator on a real SQLite file, then
compare what the store hands back with a fresh decode of the stored row.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tests.support.world import World, make_world

from tenure.auth import Caller
from tenure.core.model import EndReason, Lease, LeaseFlag
from tenure.store.memo import Memo, lease_round_trips
from tenure.store.rows import LEASE_COLUMNS, columns, lease_from_row, lease_to_row
from tenure.store.sqlite_tx import _LEASES

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _lease(**changes: Any) -> Lease:
    base = Lease(
        board_id="b1",
        task_id="t1",
        agent_id="a1",
        epoch=1,
        assigned_at=NOW,
        expires_at=NOW + timedelta(seconds=30),
        grace_s=30.0,
        recover_after=NOW + timedelta(seconds=60),
        last_renewed_at=NOW,
        last_signal_at=NOW,
        progress_stamps=(NOW, NOW + timedelta(seconds=3)),
        signal_gaps=(1.5, 2.25),
        flags=frozenset({LeaseFlag.STALLED}),
    )
    return dataclasses.replace(base, **changes)


def _same(a: Lease, b: Lease) -> None:
    """Equal field by field, and of the same type (what a JSON view would show)."""
    for f in dataclasses.fields(Lease):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x == y, f.name
        assert type(x) is type(y), f.name
    for x, y in zip(a.progress_stamps, b.progress_stamps, strict=True):
        assert x.tzinfo is y.tzinfo


def _stored(path: Path, task_id: str) -> list[Lease]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            f"SELECT {columns(LEASE_COLUMNS)} FROM leases WHERE task_id = ? ORDER BY epoch",
            (task_id,),
        ).fetchall()
    conn.close()
    return [lease_from_row(row) for row in rows]


async def _one_claim(tmp_path: Path) -> tuple[World, Caller]:
    """A World on a real SQLite file where agent a1 holds task t1."""
    world = await make_world("sqlite", tmp_path)
    await world.setup_board()
    agent = await world.add_agent("a1")
    await world.add_task("t1")
    await world.claim(agent)
    return world, agent


def test_a_row_is_decoded_once_and_the_memo_empties_when_full() -> None:
    calls: list[tuple[Any, ...]] = []

    def decode(row: tuple[Any, ...]) -> str:
        calls.append(row)
        return "-".join(map(str, row))

    memo: Memo[tuple[Any, ...], str] = Memo(decode, size=2)
    assert memo.of((1, "a")) == "1-a"
    assert memo.of((1, "a")) == "1-a"
    assert calls == [(1, "a")]
    memo.of((2, "b"))
    assert len(memo) == 2
    memo.of((3, "c"))  # full: emptied, then kept
    assert len(memo) == 1
    memo.of((1, "a"))
    assert calls == [(1, "a"), (2, "b"), (3, "c"), (1, "a")]


def test_a_lease_the_core_builds_round_trips_exactly() -> None:
    lease = _lease(suspect_since=NOW, suspect_dropped=True, end_reason=EndReason.RELEASED)
    assert lease_round_trips(lease)
    _same(lease_from_row(lease_to_row(lease)), lease)


def test_a_lease_that_would_not_come_back_the_same_is_not_vouched_for() -> None:
    # Each of these decodes to an equal lease of other types (or another zone).
    plus_one = NOW.astimezone(timezone(timedelta(hours=1)))
    for odd in (
        _lease(grace_s=30),
        _lease(signal_gaps=(1, 2.0)),
        _lease(expires_at=plus_one),
        _lease(progress_stamps=(plus_one,)),
        _lease(flags=frozenset({"stalled"})),  # type: ignore[arg-type]
        _lease(end_reason="completed"),  # type: ignore[arg-type]
        _lease(progress=True),
        _lease(suspect_dropped=0),  # type: ignore[arg-type]
        _lease(last_call_at=plus_one),
    ):
        assert not lease_round_trips(odd)
        assert lease_from_row(lease_to_row(odd)) == odd  # equal, yet not the same


async def test_what_the_store_hands_back_is_what_decoding_its_row_gives(tmp_path: Path) -> None:
    world, agent = await _one_claim(tmp_path)
    try:
        for step in range(1, 6):
            world.clock.advance(7)
            await world.report(agent, "t1", progress=step * 10, message=f"step {step}")
        await world.coordinator.heartbeat(agent, "t1")
        # the renewals above were read back from the memo: the live lease the
        # store hands out now must be what its stored row decodes to
        held = await world.store.read(lambda tx: tx.live_lease("b1", "t1"))
        assert held is not None
        (stored,) = _stored(tmp_path / "tenure.db", "t1")
        _same(held, stored)
        assert held.renewal_count == 5 and held.progress == 50
        # the next read of the unchanged row is the very same object
        again = await world.store.read(lambda tx: tx.live_lease("b1", "t1"))
        assert again is held
        await world.report(agent, "t1", status="completed")
        ended = await world.store.read(lambda tx: tx.lease_history("b1", "t1"))
        _same(ended[-1], _stored(tmp_path / "tenure.db", "t1")[-1])
    finally:
        await world.store.close()


async def test_a_written_lease_is_remembered_only_when_it_round_trips(tmp_path: Path) -> None:
    world, _ = await _one_claim(tmp_path)
    try:
        lease = await world.store.read(lambda tx: tx.live_lease("b1", "t1"))
        assert lease is not None
        odd = dataclasses.replace(lease, version=lease.version + 1, grace_s=45)

        def write(tx: Any) -> bool:
            return bool(tx.update_lease(odd, lease.version))

        assert await world.store.run(write)
        back = await world.store.read(lambda tx: tx.live_lease("b1", "t1"))
        assert back is not odd and back == odd
        assert type(back.grace_s) is float  # decoded, not the int it was written with
        assert _LEASES.of(lease_to_row(odd)) is back
    finally:
        await world.store.close()
