"""The monitor's passes start one interval apart however long each pass takes.

Found by the chaos runs on a loaded machine: the loop paused a full interval
after each pass, so passes came `interval + pass duration` apart and a dead
agent's task could be recovered later than SPEC's bound (the detector's
deadline plus one interval) by the length of a pass."""

from __future__ import annotations

from pathlib import Path

from tenure.clock import FakeClock
from tenure.monitor import Monitor, PassResult
from tenure.service import Coordinator
from tenure.store.sqlite import open_sqlite


class TimedMonitor(Monitor):
    """A monitor whose passes take the durations given, recording its pauses."""

    def __init__(self, coordinator: Coordinator, durations: list[float]) -> None:
        super().__init__(coordinator, interval=1.0)
        self.durations = durations
        self.pauses: list[float] = []

    async def run_pass(self) -> PassResult:
        return PassResult(duration_s=self.durations[len(self.pauses)])

    async def _pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        if len(self.pauses) == len(self.durations):
            self.stop()


async def test_a_slow_pass_shortens_the_pause_after_it(tmp_path: Path) -> None:
    store = await open_sqlite(tmp_path / "tenure.db", FakeClock())
    try:
        monitor = TimedMonitor(Coordinator(store), [0.0, 0.3, 0.999, 2.5])
        await monitor.run()
        assert monitor.pauses == [1.0, 0.7, 1.0 - 0.999, 0.0]
    finally:
        await store.close()
