"""Procrastinate's side of the queue comparison; runs in bench/.venv-procrastinate.

Not importable from Tenure's environment (Procrastinate is no dependency of
Tenure): `run_all.py` creates that venv from PyPI and runs this file with
its interpreter. It applies Procrastinate's schema to a fresh database,
defers N no-op jobs in one batch, analyzes the table, then times one
worker (`wait=False`: it stops when the queue is empty) fetching and
finishing them at the given concurrency. Prints one JSON object per
concurrency.

    bench/.venv-procrastinate/bin/python bench/procrastinate_side.py \
        --dsn "host=127.0.0.1 port=5432 user=postgres dbname=procrastinate_bench" --jobs 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from importlib.metadata import version

import procrastinate


async def one(dsn: str, jobs: int, concurrency: int) -> dict[str, object]:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop", queue="bench")
    async def noop(n: int) -> None:
        return None

    async with app.open_async():
        await noop.batch_defer_async(*({"n": n} for n in range(jobs)))
        async with app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            # As Tenure's side does after loading its tasks (bench/common.py):
            # the planner counts the loaded rows, as autovacuum would soon.
            await conn.execute("ANALYZE procrastinate_jobs")
        start = time.perf_counter()
        await app.run_worker_async(
            queues=["bench"], concurrency=concurrency, wait=False, install_signal_handlers=False
        )
        elapsed = time.perf_counter() - start
        async with app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            done = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            row = await (await conn.execute(done)).fetchone()
            finished = int(row[0])
            await conn.execute("DELETE FROM procrastinate_jobs")
    return {
        "concurrency": concurrency,
        "jobs": jobs,
        "finished": finished,
        "seconds": elapsed,
        "rate": finished / elapsed,
        "procrastinate": version("procrastinate"),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--apply-schema", action="store_true")
    args = parser.parse_args()
    if args.apply_schema:
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=args.dsn))
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
    for _ in range(args.runs):
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            print(json.dumps(await one(args.dsn, args.jobs, concurrency)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
