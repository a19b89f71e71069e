"""A process killed with SIGKILL loses no acknowledged operation.

The child (crash_child.py) runs claims, renewals and completions against a
SQLite file and prints each one after its COMMIT returned; this test kills
it at a random moment, reopens the file and checks that every printed
operation is there, and that tasks and leases agree.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tenure.clock import FakeClock
from tenure.core.model import EndReason, TaskStatus
from tenure.store.sqlite import SqliteStore

CHILD = Path(__file__).with_name("crash_child.py")
BOARD = "crash"


def _run_and_kill(path: Path, rng: random.Random) -> list[dict[str, Any]]:
    """Start the child, let it work for a random while, SIGKILL it; the acked ops."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.stdout is not None
    ready = child.stdout.readline()
    if not ready:
        raise AssertionError(f"the child died before it was ready: {child.stderr.read()}")
    assert json.loads(ready) == {"op": "ready"}
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
    reader.start()
    # The moment of the kill is what this test randomises; nothing waits for it.
    killed = threading.Event()
    killed.wait(rng.uniform(0.3, 1.5))
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    reader.join(timeout=30)
    assert child.returncode == -signal.SIGKILL
    # A line cut by the kill was never fully acknowledged; drop it.
    return [json.loads(line) for line in lines if line.endswith("\n")]


@pytest.mark.slow
async def test_every_acknowledged_operation_survives_a_sigkill(tmp_path: Path) -> None:
    rng = random.Random()
    path = tmp_path / "crash.db"
    acked: list[dict[str, Any]] = []
    for _ in range(2):  # a second run starts on the file the first one left
        acked += _run_and_kill(path, rng)
    assert len(acked) > 50, "the child acknowledged too few operations to test anything"

    store = await SqliteStore.open(path, FakeClock())

    def load(tx: Any) -> Any:
        tasks = {t.id: t for t in tx.list_tasks(BOARD)}
        leases = {t: tx.lease_history(BOARD, t) for t in tasks if tasks[t].epoch}
        return tasks, leases

    tasks, histories = await store.read(load)
    await store.close()
    by_key = {(x.task_id, x.epoch): x for history in histories.values() for x in history}

    for op in acked:
        stored = by_key.get((op["task"], op["epoch"]))
        assert stored is not None, f"acknowledged {op} is missing"
        assert stored.agent_id == op["agent"]
        assert stored.version >= op["version"], f"acknowledged {op}, stored v{stored.version}"
        if op["op"] == "complete":
            assert stored.end_reason == EndReason.COMPLETED
            assert tasks[op["task"]].status == TaskStatus.DONE

    live = [x for history in histories.values() for x in history if x.live]
    assert len({x.task_id for x in live}) == len(live)
    assert len({x.agent_id for x in live}) == len(live)
    for lease in live:
        assert tasks[lease.task_id].status == TaskStatus.IN_PROGRESS
        assert tasks[lease.task_id].epoch == lease.epoch
    for task in tasks.values():
        held = [x for x in histories.get(task.id, []) if x.live]
        if task.status == TaskStatus.IN_PROGRESS:
            assert len(held) == 1, f"{task.id} is in progress with {len(held)} live leases"
        else:
            assert held == []
