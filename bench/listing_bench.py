"""Reading a board with a long history: what the dashboard opens with, and
task listings whole and in pages, on a board of N done tasks beside a
working fleet (1,000 live leases, 100 todo tasks).

- `whole`: every task with its lease (`GET /boards/{id}/tasks` with no
  `limit`, and what the dashboard read before it showed only the tasks
  done last);
- `dashboard`: what the dashboard opens with now (every task not done, the
  200 done last, the count of done ones);
- `first page` and `deep page`: 100 tasks, from the start and from the middle
  (`limit=100`, `after`).

Milliseconds per read through the Coordinator, medians over the runs.

    .venv/bin/python bench/listing_bench.py --backend sqlite --history 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common import open_bench, seed_history, seed_live, seed_todo, summary

from tenure.auth import ADMIN

LIVE = 1000
TODO = 100
PAGE = 100


async def _timed(read: Callable[[], Awaitable[Any]], runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await read()
        samples.append((time.perf_counter() - start) * 1000)
    return summary(samples)


async def bench_history(kind: str, history: int, runs: int, folder: Path) -> dict[str, Any]:
    """The four reads on one board of `history` done tasks."""
    bench = await open_bench(kind, folder)
    try:
        await seed_history(bench, history, "old", 10)
        await seed_live(bench, 0, LIVE)
        await seed_todo(bench, "todo", TODO)
        c, board = bench.coordinator, bench.board_id
        admin = c.admin
        middle = await admin.list_tasks(ADMIN, board, limit=PAGE)
        for _ in range(history // (2 * PAGE)):
            middle = await admin.list_tasks(ADMIN, board, limit=PAGE, after=middle["next"])
        after = middle["next"]
        reads: dict[str, Callable[[], Awaitable[Any]]] = {
            "whole": lambda: admin.list_tasks(ADMIN, board),
            "dashboard": lambda: admin.overview(ADMIN, board),
            "first page": lambda: admin.list_tasks(ADMIN, board, limit=PAGE),
            "deep page": lambda: admin.list_tasks(ADMIN, board, limit=PAGE, after=after),
        }
        return {
            "backend": kind,
            "history": history,
            **{name: await _timed(read, runs) for name, read in reads.items()},
        }
    finally:
        await bench.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--history", default="10000,100000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(x) for x in args.history.split(",")):
            row = await bench_history(args.backend, size, args.runs, Path(tmp))
            rows.append(row)
            if not args.json:
                cells = "  ".join(
                    f"{name} {row[name]['median']:.1f} ms"
                    for name in ("whole", "dashboard", "first page", "deep page")
                )
                print(f"{args.backend:8} {size:>7,} done  {cells}", flush=True)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    asyncio.run(main())
