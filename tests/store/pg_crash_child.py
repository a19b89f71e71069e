"""The child of the PostgreSQL crash test: claims, renewals and completions in a loop.

Run as `python pg_crash_child.py DSN AGENTS`. The board `b1` with agents
`a0..a{AGENTS-1}` and its tasks exist already. Each agent loops: claim a task
when it holds none, else renew its lease, sometimes complete it. After each
unit of work commits, one line is printed and flushed (an acknowledgement):

    claim <agent> <task> <epoch>
    renew <agent> <task> <epoch> <version>
    done <agent> <task> <epoch> <version>

The parent SIGKILLs this process at a random moment and checks that every
acknowledged operation is in the database.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

from tenure.core.model import EndReason, Event, EventType, Lease, TaskStatus
from tenure.store.base import ClaimFilter, Store, Tx
from tenure.store.postgres import open_postgres

BOARD = "b1"


def claim(agent_id: str) -> Callable[[Tx], Lease | None]:
    def unit(tx: Tx) -> Lease | None:
        for task in tx.claim_candidates(ClaimFilter(board_id=BOARD, limit=1)):
            now = tx.now
            epoch = task.epoch + 1
            tx.update_task(
                replace(
                    task,
                    status=TaskStatus.IN_PROGRESS,
                    assignee=agent_id,
                    epoch=epoch,
                    updated_at=now,
                )
            )
            lease = Lease(
                board_id=BOARD,
                task_id=task.id,
                agent_id=agent_id,
                epoch=epoch,
                assigned_at=now,
                expires_at=now + timedelta(seconds=180),
                grace_s=60.0,
                recover_after=now + timedelta(seconds=240),
                last_renewed_at=now,
                last_signal_at=now,
            )
            tx.insert_lease(lease)
            tx.append_event(Event(EventType.LEASE_CREATED, BOARD, now, task.id, agent_id, epoch))
            return lease
        return None

    return unit


def renew(lease: Lease, finish: bool) -> Callable[[Tx], Lease | None]:
    def unit(tx: Tx) -> Lease | None:
        now = tx.now
        current = tx.live_lease(BOARD, lease.task_id)
        if current is None or current.epoch != lease.epoch:
            return None
        progress = min(100, current.progress + 7)
        if finish:
            new = replace(
                current,
                version=current.version + 1,
                ended_at=now,
                end_reason=EndReason.COMPLETED,
                progress=progress,
            )
        else:
            new = replace(
                current,
                version=current.version + 1,
                renewal_count=current.renewal_count + 1,
                progress=progress,
                last_renewed_at=now,
                last_signal_at=now,
                expires_at=now + timedelta(seconds=240),
                recover_after=now + timedelta(seconds=300),
                progress_stamps=(*current.progress_stamps, now)[-20:],
            )
        if not tx.update_lease(new, current.version):
            return None
        if finish:
            task = tx.get_task(BOARD, lease.task_id, for_update=True)
            assert task is not None
            tx.update_task(replace(task, status=TaskStatus.DONE, assignee=None, completed_at=now))
        kind = EventType.LEASE_RELEASED if finish else EventType.LEASE_RENEWED
        tx.append_event(Event(kind, BOARD, now, lease.task_id, lease.agent_id, lease.epoch))
        return new

    return unit


async def agent_loop(store: Store, agent_id: str, rng: random.Random) -> None:
    run = store.run
    held: Lease | None = None
    while True:
        if held is None:
            held = await run(claim(agent_id))
            if held is None:
                return
            print(f"claim {agent_id} {held.task_id} {held.epoch}", flush=True)
            continue
        finish = rng.random() < 0.15
        new = await run(renew(held, finish))
        if new is None:
            held = None
            continue
        word = "done" if finish else "renew"
        print(f"{word} {agent_id} {new.task_id} {new.epoch} {new.version}", flush=True)
        held = None if finish else new


async def main(dsn: str, agents: int) -> None:
    store = await open_postgres(dsn, max_size=agents, migrate=False)
    print("ready", flush=True)
    rng = random.Random()
    await asyncio.gather(*(agent_loop(store, f"a{i}", rng) for i in range(agents)))
    print("finished", flush=True)
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
