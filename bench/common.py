"""Shared pieces of the benchmarks: stores, bulk seeding, timing, the machine.

Figures, not tests: nothing here asserts. Seeding goes through the store's
own connection in one or a few set-based statements (a recursive CTE on
SQLite, generate_series on PostgreSQL), never one Coordinator call per
lease, so a 100k-lease fleet is ready in a second or two.
"""

from __future__ import annotations

import os
import platform
import re
import sqlite3
import statistics
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from tenure.auth import Caller, Role
from tenure.clock import SystemClock
from tenure.core.policy import Policy
from tenure.monitor import Monitor
from tenure.service import Coordinator, Options
from tenure.store.base import Store
from tenure.store.rows import encode_time

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
BENCH_DB = "tenure_bench"


def pg_dsn(database: str) -> str:
    """TCP 127.0.0.1 for every PostgreSQL connection of the bench (Tenure and Procrastinate)."""
    return f"host=127.0.0.1 port=5432 user=postgres dbname={database}"


def pg_recreate(database: str) -> str:
    """Drop and create `database`; its DSN."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    return pg_dsn(database)


def pg_drop(database: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


# opening -------------------------------------------------------------------------


@dataclass
class Bench:
    """A store, a Coordinator and a Monitor on it, and where it lives."""

    kind: str
    store: Store
    coordinator: Coordinator
    monitor: Monitor
    board_id: str
    path: Path | None = None

    def agent(self, agent_id: str) -> Caller:
        return Caller(Role.AGENT, self.board_id, agent_id)

    async def close(self) -> None:
        await self.store.close()
        if self.path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)


async def open_bench(kind: str, folder: Path, *, pool: int = 10) -> Bench:
    """A fresh database of `kind` ('sqlite' or 'postgres') with one board."""
    path: Path | None = None
    store: Store
    if kind == "sqlite":
        from tenure.store.sqlite import open_sqlite

        path = folder / f"bench-{uuid.uuid4().hex[:8]}.db"
        store = await open_sqlite(path, SystemClock())
    else:
        from tenure.store.postgres import open_postgres

        dsn = pg_recreate(BENCH_DB)
        store = await open_postgres(dsn, None, max_size=pool)
    coordinator = Coordinator(store, Policy(), Options())
    monitor = Monitor(coordinator, interval=10.0)
    board_id = "bench"
    from tenure.auth import ADMIN

    await coordinator.admin.create_board(ADMIN, board_id)
    return Bench(kind, store, coordinator, monitor, board_id, path)


# seeding --------------------------------------------------------------------------

_SQLITE_SEED_TASKS = """
INSERT INTO tasks (board_id, id, title, status, assignee, epoch, created_at, updated_at)
WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
SELECT ?, printf('%s-%07d', ?, i), 'seeded', ?, CASE WHEN ? THEN printf('seed-%07d', i) END,
       CASE WHEN ? THEN 1 ELSE 0 END, ?, ? FROM n
"""
_SQLITE_SEED_LEASES = """
INSERT INTO leases (board_id, task_id, epoch, agent_id, version, assigned_at, expires_at,
                    grace_s, recover_after, last_renewed_at, last_signal_at)
WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?),
     m(i, due) AS (SELECT i, ? > 0 AND i % ? = 0 FROM n)
SELECT ?, printf('live-%07d', i), 1, printf('seed-%07d', i), 1,
       CASE WHEN due THEN ? ELSE ? END,
       CASE WHEN due THEN ? ELSE ? END, 60.0,
       CASE WHEN due THEN ? ELSE ? END,
       CASE WHEN due THEN ? ELSE ? END,
       CASE WHEN due THEN ? ELSE ? END FROM m
"""
_SQLITE_SEED_AGENTS = """
INSERT INTO agents (board_id, id, name, token_hash, created_at)
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
SELECT ?, printf('%s-%04d', ?, i), 'bench', printf('hash-%s-%s-%04d', ?, ?, i), ? FROM n
"""

_PG_SEED_TASKS = """
INSERT INTO tasks (board_id, id, title, status, assignee, epoch, created_at, updated_at)
SELECT %(board)s, %(prefix)s || '-' || lpad(i::text, 7, '0'), 'seeded', %(status)s,
       CASE WHEN %(live)s THEN 'seed-' || lpad(i::text, 7, '0') END,
       CASE WHEN %(live)s THEN 1 ELSE 0 END, %(now)s, %(now)s
FROM generate_series(%(start)s, %(stop)s - 1) AS i
"""
_PG_SEED_LEASES = """
INSERT INTO leases (board_id, task_id, epoch, agent_id, version, assigned_at, expires_at,
                    grace_s, recover_after, last_renewed_at, last_signal_at)
SELECT %(board)s, 'live-' || lpad(i::text, 7, '0'), 1, 'seed-' || lpad(i::text, 7, '0'), 1,
       CASE WHEN due THEN %(due_seen)s ELSE %(now)s END,
       CASE WHEN due THEN %(due_exp)s ELSE %(exp)s END, 60.0,
       CASE WHEN due THEN %(due_ra)s ELSE %(ra)s END,
       CASE WHEN due THEN %(due_seen)s ELSE %(now)s END,
       CASE WHEN due THEN %(due_seen)s ELSE %(now)s END
FROM (SELECT i, %(every)s > 0 AND i %% %(every)s = 0 AS due
      FROM generate_series(%(start)s, %(stop)s - 1) AS i) AS m
"""
_PG_SEED_AGENTS = """
INSERT INTO agents (board_id, id, name, token_hash, created_at)
SELECT %(board)s, %(prefix)s || '-' || lpad(i::text, 4, '0'), 'bench',
       'hash-' || %(board)s || '-' || %(prefix)s || '-' || i, %(now)s
FROM generate_series(0, %(count)s - 1) AS i
"""


def _times(now: datetime) -> dict[str, datetime]:
    """Seeded leases: far from due, or due an hour ago with their holder silent
    for two hours (dead to every detector, `adaptive`'s 500 s cap included)."""
    return {
        "exp": now + timedelta(days=1),
        "ra": now + timedelta(days=1, seconds=60),
        "due_exp": now - timedelta(hours=1, seconds=60),
        "due_ra": now - timedelta(hours=1),
        "due_seen": now - timedelta(hours=2),
    }


async def seed_live(bench: Bench, start: int, stop: int, due_every: int = 0) -> None:
    """Live leases `live-<start>` .. `live-<stop-1>` (in-progress tasks, seed agents);
    every `due_every`-th one past its recover-after (0: none due)."""

    def unit(tx: Any, start: int, stop: int) -> None:
        now = tx.now
        t = _times(now)
        if bench.kind == "sqlite":
            e = encode_time
            tx.conn.execute(
                _SQLITE_SEED_TASKS,
                (start, stop, bench.board_id, "live", "in_progress", 1, 1, e(now), e(now)),
            )
            tx.conn.execute(
                _SQLITE_SEED_LEASES,
                (
                    start, stop, due_every, max(due_every, 1), bench.board_id,
                    e(t["due_seen"]), e(now), e(t["due_exp"]), e(t["exp"]),
                    e(t["due_ra"]), e(t["ra"]), e(t["due_seen"]), e(now),
                    e(t["due_seen"]), e(now),
                ),
            )  # fmt: skip
        else:
            base = {"board": bench.board_id, "start": start, "stop": stop, "now": now}
            tx._cur.execute(
                _PG_SEED_TASKS, {**base, "prefix": "live", "status": "in_progress", "live": True}
            )
            tx._cur.execute(_PG_SEED_LEASES, {**base, **t, "every": due_every})

    for first in range(start, stop, 50_000):
        last = min(stop, first + 50_000)
        await bench.store.run(lambda tx, a=first, b=last: unit(tx, a, b))
    await analyze(bench)


async def seed_todo(bench: Bench, prefix: str, count: int) -> None:
    """`count` todo tasks named `<prefix>-<n>`."""

    def unit(tx: Any) -> None:
        now = tx.now
        if bench.kind == "sqlite":
            e = encode_time(now)
            tx.conn.execute(
                _SQLITE_SEED_TASKS, (0, count, bench.board_id, prefix, "todo", 0, 0, e, e)
            )
        else:
            tx._cur.execute(
                _PG_SEED_TASKS,
                {
                    "board": bench.board_id, "start": 0, "stop": count, "now": now,
                    "prefix": prefix, "status": "todo", "live": False,
                },
            )  # fmt: skip

    if count:
        await bench.store.run(unit)
        # The tasks table may have grown many times over since the planner
        # last counted it; autovacuum would count it again within a minute.
        await analyze(bench)


_SQLITE_SEED_HISTORY = (
    """
INSERT INTO tasks (board_id, id, title, status, epoch, created_at, updated_at, completed_at)
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
SELECT ?, printf('done-%07d', i), 'done before', 'done', 1, ?, ?, ? FROM n
""",
    """
INSERT INTO leases (board_id, task_id, epoch, agent_id, version, assigned_at, expires_at,
                    grace_s, recover_after, last_renewed_at, last_signal_at, ended_at, end_reason)
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
SELECT ?, printf('done-%07d', i), 1, printf('%s-%04d', ?, i % ?), 2, ?, ?, 60.0, ?, ?, ?, ?,
       'completed' FROM n
""",
)
_PG_SEED_HISTORY = (
    """
INSERT INTO tasks (board_id, id, title, status, epoch, created_at, updated_at, completed_at)
SELECT %(board)s, 'done-' || lpad(i::text, 7, '0'), 'done before', 'done', 1,
       %(now)s, %(now)s, %(now)s
FROM generate_series(0, %(count)s - 1) AS i
""",
    """
INSERT INTO leases (board_id, task_id, epoch, agent_id, version, assigned_at, expires_at,
                    grace_s, recover_after, last_renewed_at, last_signal_at, ended_at, end_reason)
SELECT %(board)s, 'done-' || lpad(i::text, 7, '0'), 1,
       %(prefix)s || '-' || lpad((i %% %(agents)s)::text, 4, '0'), 2,
       %(now)s, %(now)s, 60.0, %(now)s, %(now)s, %(now)s, %(now)s, 'completed'
FROM generate_series(0, %(count)s - 1) AS i
""",
)


async def seed_history(bench: Bench, count: int, prefix: str, agents: int) -> None:
    """`count` tasks done before, each with its ended lease, held in turn by
    the agents `<prefix>-<n>` (n < `agents`): the history of a board that
    has worked before, counted by the planner."""

    def unit(tx: Any) -> None:
        now = tx.now
        if bench.kind == "sqlite":
            e = encode_time(now)
            tasks, leases = _SQLITE_SEED_HISTORY
            tx.conn.execute(tasks, (count, bench.board_id, e, e, e))
            tx.conn.execute(leases, (count, bench.board_id, prefix, agents, *[e] * 6))
        else:
            values = {
                "board": bench.board_id, "now": now, "count": count,
                "prefix": prefix, "agents": agents,
            }  # fmt: skip
            for sql in _PG_SEED_HISTORY:
                tx._cur.execute(sql, values)

    if count:
        await bench.store.run(unit)
        await analyze(bench)


async def seed_agents(bench: Bench, prefix: str, count: int) -> list[Caller]:
    """`count` registered agents `<prefix>-<n>`; their callers."""

    def unit(tx: Any) -> None:
        if bench.kind == "sqlite":
            tx.conn.execute(
                _SQLITE_SEED_AGENTS,
                (count, bench.board_id, prefix, bench.board_id, prefix, encode_time(tx.now)),
            )
        else:
            tx._cur.execute(
                _PG_SEED_AGENTS,
                {"board": bench.board_id, "prefix": prefix, "count": count, "now": tx.now},
            )

    await bench.store.run(unit)
    return [bench.agent(f"{prefix}-{n:04d}") for n in range(count)]


async def analyze(bench: Bench) -> None:
    """Refresh the planner's statistics after a bulk load, as autovacuum would."""
    if bench.kind == "sqlite":
        await bench.store.run(lambda tx: tx.conn.execute("ANALYZE"))
        # Fold the bulk load into the database file now, so the first timed
        # commits do not pay for checkpointing it.
        store: Any = bench.store
        checkpoint = "PRAGMA wal_checkpoint(TRUNCATE)"
        await store._on_writer(lambda: store._writer.execute(checkpoint).fetchall())
    else:
        await bench.store.run(lambda tx: tx._cur.execute("ANALYZE"))


# timing ----------------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of several runs."""
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct` percentile (nearest rank) of `values`."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Deadline:
    """A time bound for one measurement."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return time.monotonic() > self.end


# the machine -------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """CPU model, cores, RAM, OS and the versions that matter."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        kb = int(re.findall(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[0])
        ram = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, IndexError):
        pass
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": ram,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "psycopg": psycopg.__version__,
    }
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            info["postgresql"] = str(row[0]) if row else "?"
    except psycopg.Error:
        info["postgresql"] = "unavailable"
    try:
        info["tenure_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except OSError:
        info["tenure_commit"] = "?"
    return info
