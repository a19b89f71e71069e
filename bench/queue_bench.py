"""Tenure as a queue: C agents in process claim and complete N tasks on PostgreSQL.

The counterpart of `procrastinate_side.py` (fetch and finish N no-op jobs):
same PostgreSQL server, same connection kind (TCP 127.0.0.1). Each agent
loops `request_next_task` then a `completed` report until nothing is left;
with `--together`, it claims once, then finishes each task with a report
that claims the next (`claim_next`): one call and one commit per task. The
rate is tasks finished per second of the whole run.

    .venv/bin/python bench/queue_bench.py --tasks 2000 --concurrency 1,8 [--together]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from common import open_bench, seed_agents, seed_todo

from tenure.core.decisions import Report


async def queue_rate(
    tasks: int,
    concurrency: int,
    folder: Path,
    kind: str = "postgres",
    *,
    together: bool = False,
) -> float:
    """Tasks claimed and completed per second by `concurrency` agents; with
    `together`, each completion claims the next task in the same call."""
    bench = await open_bench(kind, folder, pool=max(concurrency, 2))
    try:
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

        start = time.perf_counter()
        await asyncio.gather(*(work(a) for a in agents))
        elapsed = time.perf_counter() - start
        if finished != tasks:
            raise RuntimeError(f"finished {finished} of {tasks}")
        return finished / elapsed
    finally:
        await bench.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--backend", default="postgres", choices=["sqlite", "postgres"])
    parser.add_argument("--together", action="store_true", help="complete with claim_next")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tenure-bench-"))
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        rate = await queue_rate(
            args.tasks, concurrency, folder, args.backend, together=args.together
        )
        print(json.dumps({"concurrency": concurrency, "rate": rate}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
