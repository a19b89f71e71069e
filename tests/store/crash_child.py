"""Claims, renewals and completions in a loop, for the crash test to kill.

Run as `python crash_child.py DB_PATH`. It seeds the file on first use, then
runs several workers at once against one `SqliteStore` and prints one JSON
line per acknowledged operation (after `store.run` returned, so after
COMMIT, its own or its group's), flushed at once: the parent kills this process with SIGKILL at a
random moment and checks that every printed operation is in the file.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from dataclasses import replace
from datetime import timedelta
from typing import Any

from tenure.clock import SystemClock
from tenure.core.model import Agent, Board, EndReason, Lease, Task, TaskStatus
from tenure.store.base import ClaimFilter
from tenure.store.sqlite import SqliteStore

BOARD = "crash"
AGENTS = 8
TASKS = 20_000


def _say(**record: Any) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _seed(tx: Any) -> None:
    if tx.get_board(BOARD) is not None:
        return
    tx.insert_board(Board(BOARD, "Crash test", tx.now))
    for n in range(AGENTS):
        tx.insert_agent(Agent(BOARD, f"a{n}", f"Agent {n}", f"token-{n}", tx.now))
    for n in range(TASKS):
        tx.insert_task(Task(BOARD, f"t{n:05d}", f"Task {n}", tx.now, tx.now))


def _claim(agent_id: str) -> Any:
    def unit(tx: Any) -> Lease | None:
        if tx.live_leases_of_agent(BOARD, agent_id):
            return None
        for task in tx.claim_candidates(ClaimFilter(BOARD, limit=1)):
            epoch = task.epoch + 1
            lease = Lease(
                BOARD, task.id, agent_id, epoch, tx.now, tx.now + timedelta(seconds=180),
                60.0, tx.now + timedelta(seconds=240), tx.now, tx.now,
            )  # fmt: skip
            tx.insert_lease(lease)
            tx.update_task(
                replace(task, status=TaskStatus.IN_PROGRESS, assignee=agent_id, epoch=epoch)
            )
            return lease
        return None

    return unit


def _renew(agent_id: str) -> Any:
    def unit(tx: Any) -> Lease | None:
        (held,) = tx.live_leases_of_agent(BOARD, agent_id)
        renewed = replace(
            held,
            version=held.version + 1,
            renewal_count=held.renewal_count + 1,
            progress=min(100, held.progress + 10),
            expires_at=tx.now + timedelta(seconds=240),
            recover_after=tx.now + timedelta(seconds=300),
            last_renewed_at=tx.now,
            last_signal_at=tx.now,
            progress_stamps=(*held.progress_stamps, tx.now)[-20:],
        )
        return renewed if tx.update_lease(renewed, held.version) else None

    return unit


def _complete(agent_id: str) -> Any:
    def unit(tx: Any) -> Lease | None:
        (held,) = tx.live_leases_of_agent(BOARD, agent_id)
        ended = replace(
            held, version=held.version + 1, ended_at=tx.now, end_reason=EndReason.COMPLETED
        )
        if not tx.update_lease(ended, held.version):
            return None
        task = tx.get_task(BOARD, held.task_id)
        tx.update_task(replace(task, status=TaskStatus.DONE, assignee=None, completed_at=tx.now))
        return ended

    return unit


async def _worker(store: SqliteStore, agent_id: str, rng: random.Random) -> None:
    holding = False
    while True:
        # Claims go to the writer thread; renewals and completions are quick
        # units, committed in groups on the event loop's thread: both paths
        # run at once, as in the server.
        if not holding:
            lease = await store.run(_claim(agent_id))
            op = "claim"
        elif rng.random() < 0.2:
            lease = await store.run(_complete(agent_id), quick=True)
            op = "complete"
        else:
            lease = await store.run(_renew(agent_id), quick=True)
            op = "renew"
        if lease is None:
            await asyncio.sleep(0)
            continue
        holding = op != "complete"
        _say(op=op, task=lease.task_id, agent=agent_id, epoch=lease.epoch, version=lease.version)


async def main(path: str) -> None:
    store = await SqliteStore.open(path, SystemClock())
    await store.run(_seed)
    _say(op="ready")
    rng = random.Random()
    await asyncio.gather(*(_worker(store, f"a{n}", rng) for n in range(AGENTS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
