"""Tenure as a queue: C agents in process claim and complete N tasks on PostgreSQL.

The counterpart of `procrastinate_side.py` (fetch and finish N no-op jobs):
same PostgreSQL server, same connection kind (TCP 127.0.0.1). Each agent
loops `request_next_task` then a `completed` report until nothing is left;
with `--together`, it claims once, then finishes each task with a report
that claims the next (`claim_next`): one call and one commit per task. The
rate is tasks finished per second of the whole run.

With `--cpu`, it also prints the CPU time a task cost this process and the
PostgreSQL server (every process of its binary on this machine, backends
and background workers alike, so run it on a quiet server): on two cores
shared with the server, their sum bounds the rate. With `--history N`,
the board first holds N tasks done before, with their ended leases, as a
board that has worked a while does (a fresh database's first minute is
slower: see docs/performance.md, "The tenth machine").

    .venv/bin/python bench/queue_bench.py --tasks 2000 --concurrency 1,8 [--together]
        [--cpu] [--history 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from common import open_bench, seed_agents, seed_history, seed_todo

from tenure.core.decisions import Report


async def queue_rate(
    tasks: int,
    concurrency: int,
    folder: Path,
    kind: str = "postgres",
    *,
    together: bool = False,
    costs: dict[str, float] | None = None,
    history: int = 0,
) -> float:
    """Tasks claimed and completed per second by `concurrency` agents; with
    `together`, each completion claims the next task in the same call. Given
    `costs`, fills in the CPU seconds a task cost this process (`python`) and
    the PostgreSQL server (`postgres`). `history`: that many tasks done
    before, with their ended leases, on the board first."""
    bench = await open_bench(kind, folder, pool=max(concurrency, 2))
    try:
        await seed_history(bench, history, "worker", concurrency)
        await seed_todo(bench, "job", tasks)
        agents = await seed_agents(bench, "worker", concurrency)
        c = bench.coordinator
        finished = 0

        async def work(agent: Any) -> None:
            nonlocal finished
            done = Report(status="completed")
            got = await c.request_next_task(agent)
            while got["task"] is not None:
                if together:
                    task_id = got["task"]["id"]
                    got = (await c.report_progress(agent, task_id, done, claim_next=True))["next"]
                else:
                    await c.report_progress(agent, got["task"]["id"], done)
                    got = await c.request_next_task(agent)
                finished += 1

        server, own = (_server_cpu(), _own_cpu()) if costs is not None else ({}, 0.0)
        start = time.perf_counter()
        await asyncio.gather(*(work(a) for a in agents))
        elapsed = time.perf_counter() - start
        if finished != tasks:
            raise RuntimeError(f"finished {finished} of {tasks}")
        if costs is not None:
            after = _server_cpu()
            # A process that ended meanwhile is missing after: its time is lost,
            # so this is a lower bound (the pool's backends all outlive the run).
            used = sum(ticks - server.get(pid, 0) for pid, ticks in after.items())
            costs["postgres"] = used / os.sysconf("SC_CLK_TCK") / tasks
            costs["python"] = (_own_cpu() - own) / tasks
        return finished / elapsed
    finally:
        await bench.close()


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server_cpu() -> dict[str, int]:
    """CPU ticks (user + system) of every running PostgreSQL process, by pid."""
    ticks: dict[str, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                name, fields = handle.read().rsplit(")", 1)
        except OSError:
            continue  # ended meanwhile
        if name.endswith("(postgres"):
            values = fields.split()
            ticks[pid] = int(values[11]) + int(values[12])
    return ticks


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--backend", default="postgres", choices=["sqlite", "postgres"])
    parser.add_argument("--together", action="store_true", help="complete with claim_next")
    parser.add_argument("--cpu", action="store_true", help="also the CPU time a task cost")
    parser.add_argument(
        "--history", type=int, default=0, help="tasks done before, with their ended leases"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tenure-bench-"))
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        costs: dict[str, float] | None = {} if args.cpu else None
        rate = await queue_rate(
            args.tasks,
            concurrency,
            folder,
            args.backend,
            together=args.together,
            costs=costs,
            history=args.history,
        )
        row: dict[str, Any] = {"concurrency": concurrency, "rate": rate}
        if costs:
            row |= {f"{name}_cpu_us_per_task": round(s * 1e6) for name, s in costs.items()}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
