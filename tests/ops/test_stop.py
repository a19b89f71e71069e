"""The server's stop finishes the monitor pass in flight before closing the store.

In-process: a Runtime on a SQLite file whose leases are due at once, and a
worktree probe that holds the monitor's pass until the test lets it go.
`Runtime.stop()` must wait for that pass (its judgement is written), not cut
it off, and the store closes only after it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tenure.auth import ADMIN
from tenure.core.decisions import Evidence
from tenure.core.model import Agent, Board, Lease
from tenure.server import Runtime
from tenure.settings import load_settings

QUICK = {
    # SPEC's detector, whose phases these are (the default, `adaptive`, allows 90 s at least).
    "TENURE_DETECTOR_POLICY": "spec",
    **{f"TENURE_LEASE_PHASE{n}_LEASE": "0.01" for n in (1, 2, 3, 4)},
    **{f"TENURE_LEASE_PHASE{n}_GRACE": "0.01" for n in (1, 2, 3, 4)},
    "TENURE_LEASE_DEFAULT_LEASE": "0.01",
    "TENURE_LEASE_DEFAULT_GRACE": "0.01",
    "TENURE_MONITOR_INTERVAL": "0.05",
}


class HeldProbe:
    """Worktree evidence that answers only when the test says so."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def probe(self, lease: Lease, agent: Agent | None, board: Board | None) -> Evidence:
        self.entered.set()
        await self.release.wait()
        return Evidence()


async def test_stop_waits_for_the_monitor_pass_in_flight(tmp_path: Path) -> None:
    settings = load_settings(
        {**QUICK, "TENURE_STORE_DATABASE_URL": f"sqlite:///{tmp_path / 'tenure.db'}"}
    )
    runtime = await Runtime.open(settings)
    probe = HeldProbe()
    runtime.monitor.evidence = probe
    admin = runtime.coordinator.admin
    await admin.create_board(ADMIN, "b")
    await admin.register_agent(ADMIN, {"agent_id": "a"}, "b")
    await admin.add_task(ADMIN, "b", {"id": "t", "title": "Held"})
    await runtime.coordinator.assign(ADMIN, "b", "t", "a")
    await runtime.start()

    async with asyncio.timeout(30):
        await probe.entered.wait()  # a pass is judging the due lease right now
    stopping = asyncio.create_task(runtime.stop())
    await asyncio.sleep(0.3)
    assert not stopping.done(), "stop() returned with a monitor pass still in flight"
    assert runtime.stopping.is_set()
    passes = runtime.monitor.statistics().passes
    probe.release.set()
    async with asyncio.timeout(30):
        await stopping
    stats = runtime.monitor.statistics()
    assert stats.passes == passes + 1, "the pass in flight ran to its end"
    assert stats.totals.get("recovered", 0) == 1, stats.totals
    assert runtime.failure is None
