"""The monitor: one pass at N live leases with 0 %, 1 % and 10 % of them due.

Each run seeds a fresh fleet (bulk SQL), then times one `Monitor.run_pass()`:
with leases due, every one of them is recovered with a handoff, an event, a
board comment and a hook in the outbox. A pass judges at most
`monitor.max_per_pass` leases (50 batches); a backlog larger than that is
worked off over several passes, so at 10 % of 100k the figure is the first
pass and the number it recovered.

    .venv/bin/python bench/monitor_bench.py --backend sqlite --sizes 1000,10000,100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from common import open_bench, seed_live, summary

PERCENTS = (0, 1, 10)


async def one_pass(kind: str, size: int, percent: int, folder: Path) -> tuple[float, int, int]:
    """(milliseconds, leases due, leases recovered) of one pass on a fresh fleet."""
    bench = await open_bench(kind, folder)
    try:
        every = 0 if percent == 0 else 100 // percent
        await seed_live(bench, 0, size, every)
        await bench.monitor.run_pass()  # warm: the 0 % case measures a steady pass
        if percent:
            # the warm-up recovered them: seed the same fleet again, fresh
            await bench.close()
            bench = await open_bench(kind, folder)
            await seed_live(bench, 0, size, every)
        start = time.perf_counter()
        result = await bench.monitor.run_pass()
        elapsed = (time.perf_counter() - start) * 1000
        recovered = result.recovered + result.dead_lettered
        if recovered != result.due:
            # The figure is the cost of recoveries: a pass that judged the
            # seeded leases otherwise (a detector that waits) measures nothing.
            raise RuntimeError(f"{recovered} of {result.due} due leases recovered: {result}")
        return elapsed, result.due, recovered
    finally:
        await bench.close()


async def bench_monitor(
    kind: str, sizes: list[int], runs: int, folder: Path, percents: tuple[int, ...] = PERCENTS
) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        for percent in percents:
            times, due, recovered = [], 0, 0
            for _ in range(runs):
                ms, due, recovered = await one_pass(kind, size, percent, folder)
                times.append(ms)
            rows.append(
                {
                    "backend": kind,
                    "live": size,
                    "percent": percent,
                    "due": due,
                    "recovered": recovered,
                    "ms": summary(times),
                }
            )
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tenure-bench-"))
    rows = await bench_monitor(
        args.backend, [int(s) for s in args.sizes.split(",")], args.runs, folder
    )
    if args.json:
        print(json.dumps(rows))
        return
    for r in rows:
        ms = r["ms"]
        print(
            f"{r['backend']:<9}{r['live']:>8} {r['percent']:>3}% due {r['due']:>6} "
            f"recovered {r['recovered']:>6}  "
            f"{ms['median']:.1f} ms ({ms['min']:.1f}-{ms['max']:.1f})"
        )


if __name__ == "__main__":
    asyncio.run(main())
