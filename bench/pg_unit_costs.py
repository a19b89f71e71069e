"""Where a PostgreSQL unit of work's time goes: one agent claiming and
completing N tasks, each unit's worker-thread wall clock and CPU time split
into BEGIN with its reads, the reads sent on their own, the writes with
COMMIT, and the rest (the core, the views, the pool).

The parts are timed by wrapping the store's own methods for this process
only; the figures include the wrappers' few microseconds.

    .venv/bin/python bench/pg_unit_costs.py --tasks 2000 --runs 3 [--together]

`--together`: the agent finishes each task with a report that claims the
next (`claim_next`), one unit of work a task.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import pg_available
from queue_bench import queue_rate

from tenure.store import postgres, postgres_tx

#: (what is wrapped, the name of the method, how the figures name it)
PARTS: list[tuple[Any, str, str]] = [
    (postgres.PostgresStore, "_run_sync", "the unit"),
    (postgres.PostgresStore, "_begin", "BEGIN with its reads"),
    (postgres_tx.PostgresTx, "_exec", "reads and writes on their own"),
    (postgres_tx.PostgresTx, "commit", "the kept writes and COMMIT"),
]


def _timed(method: Callable[..., Any], name: str, totals: Counter[str]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return method(*args, **kwargs)
        finally:
            totals[f"{name}|wall"] += time.perf_counter() - wall
            totals[f"{name}|cpu"] += time.thread_time() - cpu
            totals[f"{name}|calls"] += 1

    return timed


async def one_run(
    tasks: int, *, together: bool = False
) -> tuple[float, dict[str, tuple[float, float]], float]:
    """Tasks per second; per part, (wall us, CPU us) per unit of work; and
    the statements sent on their own per unit."""
    totals: Counter[str] = Counter()
    originals = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in PARTS]
    for owner, attr, name in PARTS:
        setattr(owner, attr, _timed(getattr(owner, attr), name, totals))
    try:
        folder = Path(tempfile.mkdtemp(prefix="tenure-bench-"))
        rate = await queue_rate(tasks, 1, folder, together=together)
    finally:
        for owner, attr, original in originals:
            setattr(owner, attr, original)
    units = totals["the unit|calls"] or 1
    parts = {
        name: (totals[f"{name}|wall"] / units * 1e6, totals[f"{name}|cpu"] / units * 1e6)
        for _, _, name in PARTS
    }
    wall, cpu = parts["the unit"]
    named = [parts[name] for _, _, name in PARTS[1:]]
    parts["the rest"] = (wall - sum(w for w, _ in named), cpu - sum(c for _, c in named))
    return rate, parts, totals[f"{PARTS[2][2]}|calls"] / units


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--together", action="store_true", help="complete with claim_next")
    args = parser.parse_args()
    if not pg_available():
        raise SystemExit("PostgreSQL at 127.0.0.1:5432 is not reachable")
    for run in range(args.runs):
        rate, parts, alone = await one_run(args.tasks, together=args.together)
        print(
            f"run {run + 1}: {rate:,.0f} claim+complete/s, one agent; per unit of work "
            f"({alone:.2f} statements on their own):"
        )
        for name, (wall, cpu) in parts.items():
            print(f"  {name:32} wall {wall:7.1f} us   CPU {cpu:7.1f} us")


if __name__ == "__main__":
    asyncio.run(main())
