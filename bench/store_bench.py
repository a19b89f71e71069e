"""Store throughput and the monitor's due query, at growing numbers of live leases.

For each size N it seeds N live leases (1 % of them due), then times claim,
renew, touch and complete units of work (several callers at once, as the
service runs them) and the due query (`due_leases`), and prints a table.
Figures, not a test: nothing here asserts.

    .venv/bin/python bench/store_bench.py                      # SQLite, 1k 10k 100k
    .venv/bin/python bench/store_bench.py --sizes 1000,10000 --ops 1000
    .venv/bin/python bench/store_bench.py --dsn postgresql://postgres@127.0.0.1/tenure_bench

With `--dsn` PostgreSQL runs too (on that database, which it migrates; use
a scratch database: the bench's boards are deleted at the end, best effort).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tenure.clock import SystemClock
from tenure.core.model import Board, EndReason, Event, EventType, Lease, Task, TaskStatus
from tenure.store.base import ClaimFilter, Store, Tx
from tenure.store.sqlite import SqliteStore

SEED_BATCH = 5000


def _lease(board_id: str, task_id: str, agent_id: str, now: datetime, due: bool) -> Lease:
    recover_after = now - timedelta(hours=1) if due else now + timedelta(days=1)
    return Lease(
        board_id=board_id,
        task_id=task_id,
        agent_id=agent_id,
        epoch=1,
        assigned_at=now,
        expires_at=recover_after - timedelta(seconds=60),
        grace_s=60.0,
        recover_after=recover_after,
        last_renewed_at=now,
        last_signal_at=now,
    )


async def _seed(store: Store, board_id: str, live: int, todo: int) -> None:
    """`live` in-progress tasks with a live lease (1 % due) and `todo` free tasks."""
    await store.run(lambda tx: tx.insert_board(Board(board_id, "bench", tx.now)))
    due_every = 100

    def batch(start: int, stop: int) -> Callable[[Tx], None]:
        def unit(tx: Tx) -> None:
            now = tx.now
            for n in range(start, stop):
                task_id = f"live-{n:06d}"
                tx.insert_task(
                    Task(board_id, task_id, "live", now, now, status=TaskStatus.IN_PROGRESS,
                         assignee=f"seed-{n}", epoch=1)
                )  # fmt: skip
                tx.insert_lease(_lease(board_id, task_id, f"seed-{n}", now, n % due_every == 0))

        return unit

    for start in range(0, live, SEED_BATCH):
        await store.run(batch(start, min(live, start + SEED_BATCH)))

    def free(tx: Tx) -> None:
        for n in range(todo):
            tx.insert_task(Task(board_id, f"todo-{n:06d}", "todo", tx.now, tx.now))

    await store.run(free)


# the units of work timed ----------------------------------------------------------


def _claim(board_id: str, agent_id: str) -> Callable[[Tx], bool]:
    def unit(tx: Tx) -> bool:
        if tx.live_leases_of_agent(board_id, agent_id):
            return False
        for task in tx.claim_candidates(ClaimFilter(board_id, limit=1)):
            epoch = task.epoch + 1
            lease = replace(_lease(board_id, task.id, agent_id, tx.now, False), epoch=epoch)
            tx.insert_lease(lease)
            tx.update_task(
                replace(task, status=TaskStatus.IN_PROGRESS, assignee=agent_id, epoch=epoch)
            )
            tx.append_event(Event(EventType.LEASE_CREATED, board_id, tx.now, task.id, agent_id))
            return True
        return False

    return unit


def _renew(board_id: str, agent_id: str) -> Callable[[Tx], bool]:
    def unit(tx: Tx) -> bool:
        (held,) = tx.live_leases_of_agent(board_id, agent_id)
        renewed = replace(
            held,
            version=held.version + 1,
            renewal_count=held.renewal_count + 1,
            progress=min(100, held.progress + 5),
            expires_at=tx.now + timedelta(seconds=240),
            recover_after=tx.now + timedelta(seconds=300),
            last_renewed_at=tx.now,
            last_signal_at=tx.now,
            progress_stamps=(*held.progress_stamps, tx.now)[-20:],
        )
        if not tx.update_lease(renewed, held.version):
            return False
        tx.append_event(
            Event(EventType.LEASE_RENEWED, board_id, tx.now, held.task_id, agent_id, held.epoch)
        )
        return True

    return unit


def _touch(board_id: str, agent_id: str) -> Callable[[Tx], bool]:
    def unit(tx: Tx) -> bool:
        touched = True
        for held in tx.live_leases_of_agent(board_id, agent_id):
            later = max(held.expires_at, tx.now + timedelta(seconds=240))
            new = replace(
                held,
                version=held.version + 1,
                expires_at=later,
                recover_after=later + timedelta(seconds=held.grace_s),
                last_signal_at=tx.now,
            )
            touched = tx.update_lease(new, held.version) and touched
        return touched

    return unit


def _complete(board_id: str, agent_id: str) -> Callable[[Tx], bool]:
    def unit(tx: Tx) -> bool:
        (held,) = tx.live_leases_of_agent(board_id, agent_id)
        ended = replace(
            held, version=held.version + 1, ended_at=tx.now, end_reason=EndReason.COMPLETED
        )
        if not tx.update_lease(ended, held.version):
            return False
        task = tx.get_task(board_id, held.task_id, for_update=True)
        assert task is not None
        tx.update_task(replace(task, status=TaskStatus.DONE, assignee=None, completed_at=tx.now))
        tx.append_event(
            Event(EventType.LEASE_RELEASED, board_id, tx.now, held.task_id, agent_id, held.epoch)
        )
        return True

    return unit


async def _rate(
    store: Store,
    make: Callable[[str, str], Callable[[Tx], bool]],
    board_id: str,
    agents: list[str],
    callers: int,
) -> float:
    """Operations per second: `callers` coroutines share the agents' operations."""
    queue = list(agents)

    async def caller() -> None:
        while queue:
            agent_id = queue.pop()
            if not await store.run(make(board_id, agent_id)):
                raise RuntimeError(f"{make.__name__} failed for {agent_id}")

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return len(agents) / (time.perf_counter() - start)


async def _due_query_ms(store: Store, repeats: int, limit: int) -> tuple[float, int]:
    """Median time of the due query through `store.read`, and the rows it returns."""
    times: list[float] = []
    found = 0
    for _ in range(repeats):
        start = time.perf_counter()
        found = len(await store.read(lambda tx: tx.due_leases(tx.now, limit)))
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), found


async def bench_one(
    name: str, open_store: Callable[[], Awaitable[Any]], size: int, ops: int, callers: int
) -> dict[str, Any]:
    store = await open_store()
    board_id = f"bench-{size}-{uuid.uuid4().hex[:8]}"
    try:
        started = time.perf_counter()
        await _seed(store, board_id, size, ops)
        seeded = time.perf_counter() - started
        agents = [f"bench-{n:05d}" for n in range(ops)]
        row: dict[str, Any] = {"backend": name, "live": size, "seed_s": seeded}
        row["claim"] = await _rate(store, _claim, board_id, agents, callers)
        row["renew"] = await _rate(store, _renew, board_id, agents, callers)
        row["touch"] = await _rate(store, _touch, board_id, agents, callers)
        row["complete"] = await _rate(store, _complete, board_id, agents, callers)
        row["due_ms"], row["due_rows"] = await _due_query_ms(store, 20, 1000)
        return row
    finally:
        if name != "sqlite":
            await _drop_board(store, board_id)
        await store.close()


async def _drop_board(store: Store, board_id: str) -> None:
    """Best effort: delete the bench's tasks (and their leases) from a shared database."""
    tasks = await store.read(lambda tx: [t.id for t in tx.list_tasks(board_id)])
    for start in range(0, len(tasks), SEED_BATCH):
        chunk = tasks[start : start + SEED_BATCH]

        def unit(tx: Tx, chunk: list[str] = chunk) -> None:
            for lease in tx.live_leases(board_id):
                if lease.task_id in chunk:
                    tx.update_lease(
                        replace(lease, version=lease.version + 1, ended_at=tx.now,
                                end_reason=EndReason.CANCELLED),
                        lease.version,
                    )  # fmt: skip
            for task_id in chunk:
                tx.delete_task(board_id, task_id)

        try:
            await store.run(unit)
        except Exception as exc:
            print(f"cleanup of {board_id} stopped: {exc}")
            return


def _print(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'backend':<9}{'live':>8}{'seed s':>8}{'claim/s':>9}{'renew/s':>9}"
        f"{'touch/s':>9}{'done/s':>9}{'due ms':>9}{'due rows':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['backend']:<9}{r['live']:>8}{r['seed_s']:>8.1f}{r['claim']:>9.0f}"
            f"{r['renew']:>9.0f}{r['touch']:>9.0f}{r['complete']:>9.0f}"
            f"{r['due_ms']:>9.2f}{r['due_rows']:>9}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="live leases, comma-separated")
    parser.add_argument("--ops", type=int, default=2000, help="operations per kind and size")
    parser.add_argument("--callers", type=int, default=8, help="concurrent callers")
    parser.add_argument("--dsn", help="also bench PostgreSQL at this DSN")
    parser.add_argument("--dir", help="where the SQLite files go (default: a temp dir)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",") if size]
    folder = Path(args.dir or tempfile.mkdtemp(prefix="tenure-bench-"))
    rows: list[dict[str, Any]] = []
    for size in sizes:
        path = folder / f"bench-{size}-{uuid.uuid4().hex[:6]}.db"

        async def sqlite(path: Path = path) -> Any:
            return await SqliteStore.open(path, SystemClock())

        rows.append(await bench_one("sqlite", sqlite, size, args.ops, args.callers))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        if args.dsn:
            from tenure.store.postgres import open_postgres

            async def postgres() -> Any:
                return await open_postgres(args.dsn, None, max_size=args.callers)

            rows.append(await bench_one("postgres", postgres, size, args.ops, args.callers))
        _print(rows)
        print()


if __name__ == "__main__":
    asyncio.run(main())
