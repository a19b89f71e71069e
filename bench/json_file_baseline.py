"""The old figure, measured on this machine: renewals per second of a lease
manager that keeps every assignment in one JSON file.

Issue 11 sets the SQLite renewal goals as multiples of "the old figure": the
seed's lease manager rewrote one JSON file holding every assignment on each
renewal (about 320 renewals per second at 1,000 live leases and 53 at 5,000 on
the machine the issue was measured on). Absolute rates move with the machine,
so this bench measures that storage pattern here, in the same run as Tenure:

- every assignment lives in a dict in memory, one small entry per agent
  (task id, assignment time, and the text the seed's lease module handed its
  persistence layer);
- a renewal updates its entry, then writes the whole dict as indented JSON to
  a temporary file on a worker thread (the seed used aiofiles) and renames it
  over the old file: what the seed's persistence layer did on every save.

It is a model of the pattern, written for this bench, not the seed's code:
no locks, logging or lease arithmetic, so it is if anything faster than the
seed was.

    .venv/bin/python bench/json_file_baseline.py --sizes 1000,5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import summary


def _entry(i: int, moment: str) -> dict[str, Any]:
    return {"task_id": f"task-{i:07d}", "assigned_at": moment, "task_data": moment}


async def renew_rate(size: int, ops: int, seconds: float, folder: Path) -> float:
    """Renewals per second with `size` assignments in the file."""
    path = folder / f"assignments-{size}.json"
    now = datetime.now(UTC).isoformat()
    assignments = {f"agent-{i:07d}": _entry(i, now) for i in range(size)}

    def save() -> None:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(assignments, indent=2))
        temporary.replace(path)

    await asyncio.to_thread(save)
    done = 0
    start = time.perf_counter()
    while done < ops and time.perf_counter() - start < seconds:
        agent = f"agent-{done % size:07d}"
        assignments[agent] = _entry(done % size, datetime.now(UTC).isoformat())
        await asyncio.to_thread(save)
        done += 1
    return done / (time.perf_counter() - start)


async def bench_baseline(
    sizes: list[int], runs: int, ops: int, seconds: float, folder: Path
) -> list[dict[str, Any]]:
    """Median and min-max renewals per second at each size."""
    rows = []
    for size in sizes:
        rates = [await renew_rate(size, ops, seconds, folder) for _ in range(runs)]
        rows.append({"live": size, "renew": summary(rates)})
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ops", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tenure-bench-"))
    sizes = [int(s) for s in args.sizes.split(",")]
    for row in await bench_baseline(sizes, args.runs, args.ops, args.seconds, folder):
        s = row["renew"]
        print(f"{row['live']:>7} live: {s['median']:.0f}/s ({s['min']:.0f}-{s['max']:.0f})")


if __name__ == "__main__":
    asyncio.run(main())
