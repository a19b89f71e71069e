"""In process, one caller: claim, renew, touch and complete per second through
the real Coordinator, on SQLite and PostgreSQL, beside N seeded live leases.

The N live leases (held by seed agents on the same board as the bench's
agents, so every per-board and per-agent query meets them) are bulk-inserted.
Ten bench agents then, one call at a time:
- claim and complete, alternating (each claim takes a fresh todo task);
- hold one lease each and renew (a progress report) in turn;
- touch (any other authenticated call) in turn;
and the statistics of every lease (what the dashboard and /metrics ask for)
are read once per run, before the calls. A short cycle, not counted, warms
each fresh database first.

    .venv/bin/python bench/inprocess.py --backend sqlite --sizes 10,1000,10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Bench, Deadline, open_bench, seed_agents, seed_live, seed_todo, summary

from tenure.auth import ADMIN
from tenure.core.decisions import Report

AGENTS = 10


async def _renew_concurrently(
    bench: Bench, agents: list[Any], held: list[str], ops: int, seconds: float, callers: int
) -> float:
    """Renewals per second by `callers` coroutines, each renewing its own agents' leases."""
    c = bench.coordinator
    limit = Deadline(seconds)
    done = 0

    async def caller(j: int) -> None:
        nonlocal done
        mine = list(range(j, len(agents), callers))
        i = 0
        while done < ops and not limit.passed:
            k = mine[i % len(mine)]
            await c.report_progress(agents[k], held[k], Report(progress=i % 100, message="step"))
            done += 1
            i += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller(j) for j in range(callers)))
    return done / (time.perf_counter() - start)


async def _cycle(
    bench: Bench, agents: list[Any], run: int, ops: int, seconds: float, callers: int = 1
) -> dict[str, float]:
    """One run of the four operations; per-second rates (with `callers` > 1: renewals
    by that many concurrent callers only)."""
    c = bench.coordinator
    await seed_todo(bench, f"todo{run}", ops + len(agents))
    rates: dict[str, float] = {}
    if callers > 1:
        held = [(await c.request_next_task(agent))["task"]["id"] for agent in agents]
        rates["renew"] = await _renew_concurrently(bench, agents, held, ops, seconds, callers)
        for agent, task_id in zip(agents, held, strict=True):
            await c.report_progress(agent, task_id, Report(status="completed", progress=100))
        return rates

    # claim and complete, alternating, one agent after another
    claim_s = complete_s = 0.0
    done = 0
    limit = Deadline(seconds)
    for i in range(ops):
        agent = agents[i % len(agents)]
        t0 = time.perf_counter()
        got = await c.request_next_task(agent)
        t1 = time.perf_counter()
        task_id = got["task"]["id"]
        await c.report_progress(agent, task_id, Report(status="completed", progress=100))
        t2 = time.perf_counter()
        claim_s += t1 - t0
        complete_s += t2 - t1
        done += 1
        if limit.passed:
            break
    rates["claim"] = done / claim_s
    rates["complete"] = done / complete_s

    # each agent holds one lease: renew, then touch, round robin
    held = []
    for agent in agents:
        got = await c.request_next_task(agent)
        held.append(got["task"]["id"])
    for name in ("renew", "touch"):
        limit = Deadline(seconds)
        done = 0
        start = time.perf_counter()
        for i in range(ops):
            k = i % len(agents)
            if name == "renew":
                report = Report(progress=(i // len(agents)) % 100, message="step")
                await c.report_progress(agents[k], held[k], report)
            else:
                await c.touch(agents[k])
            done += 1
            if limit.passed:
                break
        rates[name] = done / (time.perf_counter() - start)
    for agent, task_id in zip(agents, held, strict=True):
        await c.report_progress(agent, task_id, Report(status="completed", progress=100))
    return rates


async def bench_size(
    kind: str, size: int, runs: int, ops: int, seconds: float, folder: Path, callers: int = 1
) -> dict[str, Any]:
    """Rates at `size` live leases: median and min-max over `runs`."""
    bench = await open_bench(kind, folder)
    try:
        seeded = time.perf_counter()
        await seed_live(bench, 0, size)
        seeded = time.perf_counter() - seeded
        agents = await seed_agents(bench, "agent", max(AGENTS, 2 * callers))
        # One short cycle first, not counted: a fresh database's first calls
        # (cold caches, new connections, the first plans) would otherwise
        # weigh on the first run, at the first size most of all.
        await _cycle(bench, agents, -1, max(ops // 4, 1), seconds, callers)
        per_run: dict[str, list[float]] = {}
        for run in range(runs):
            if callers == 1:
                started = time.perf_counter()
                await bench.coordinator.admin.statistics(ADMIN)
                per_run.setdefault("statistics_ms", []).append(
                    (time.perf_counter() - started) * 1000
                )
            for name, rate in (await _cycle(bench, agents, run, ops, seconds, callers)).items():
                per_run.setdefault(name, []).append(rate)
        return {
            "backend": kind,
            "live": size,
            "seed_s": seeded,
            **{name: summary(values) for name, values in per_run.items()},
        }
    finally:
        await bench.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--sizes", default="10,1000,10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0, help="time bound per operation")
    parser.add_argument("--callers", type=int, default=1, help=">1: concurrent renewals only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tenure-bench-"))
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        row = await bench_size(
            args.backend, size, args.runs, args.ops, args.seconds, folder, args.callers
        )
        rows.append(row)
        if not args.json:
            print(
                f"{row['backend']:<9}{size:>8}  "
                + "  ".join(
                    f"{k} {row[k]['median']:.0f}/s ({row[k]['min']:.0f}-{row[k]['max']:.0f})"
                    for k in ("claim", "renew", "touch", "complete")
                    if k in row
                ),
                flush=True,
            )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    asyncio.run(main())
