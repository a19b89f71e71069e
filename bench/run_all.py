"""Tenure's whole performance comparison, one command; writes bench/results.md.

    .venv/bin/python bench/run_all.py            # full: about 15-25 minutes
    .venv/bin/python bench/run_all.py --quick    # a couple of minutes

Parts (each bounded by counts and by time):
1. in process, one caller: claim, renew, touch, complete per second on
   SQLite and PostgreSQL at 10, 1k, 10k, 100k live leases (`inprocess.py`),
   plus renewals by 8 concurrent callers on SQLite, and the old figure: a
   JSON file of every assignment rewritten per renewal (`json_file_baseline.py`);
2. the monitor: one pass at 1k, 10k, 100k live leases, 0/1/10 % due
   (`monitor_bench.py`);
3. over HTTP and MCP on loopback against a `tenure serve` subprocess on
   SQLite: 50 agents renewing once a second (open loop), the highest rate
   with zero errors (closed loop), and the resident size of a server holding
   100k live leases (`server_bench.py`); then HTTP alone against a server on
   PostgreSQL;
4. Procrastinate (installed from PyPI into bench/.venv-procrastinate, never a
   dependency of Tenure) fetching and finishing N no-op jobs at concurrency 1
   and 8, against Tenure claiming and completing N tasks with 1 and 8 agents
   in process, both over TCP to 127.0.0.1 on the same PostgreSQL server
   (`procrastinate_side.py`, `queue_bench.py`).

PostgreSQL: 127.0.0.1:5432, user postgres (trust). The bench creates the
databases tenure_bench, tenure_bench_wire and procrastinate_bench and drops
them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    BENCH_DB,
    machine,
    pg_available,
    pg_drop,
    pg_recreate,
    summary,
)
from inprocess import bench_size  # noqa: E402
from json_file_baseline import renew_rate  # noqa: E402
from monitor_bench import bench_monitor  # noqa: E402
from queue_bench import queue_rate  # noqa: E402
from server_bench import TRANSPORTS, WIRE_DB, bench_memory, bench_wire  # noqa: E402

#: How the results name each client of bench/server_bench.py.
CLIENTS = {
    "lean": "HTTP, lean client",
    "http": "HTTP, httpx AsyncClient",
    "mcp": "MCP, the SDK's client",
}

PROC_VENV = HERE / ".venv-procrastinate"
PROC_DB = "procrastinate_bench"
PROC_VERSION = "3.10.0"

FULL = {
    "sizes": [10, 1000, 10_000, 100_000],
    "runs": 3,
    "ops": 2000,
    "op_seconds": 4.0,
    "monitor_sizes": [1000, 10_000, 100_000],
    "monitor_runs": 3,
    "wire_seconds": 30.0,
    "closed_seconds": 5.0,
    "memory_live": 100_000,
    "queue_jobs": 2000,
    "queue_runs": 3,
    "queue_history": 20000,
}
QUICK = {
    "sizes": [10, 1000, 100_000],
    "runs": 2,
    "ops": 500,
    "op_seconds": 1.5,
    "monitor_sizes": [1000, 100_000],
    "monitor_runs": 1,
    "wire_seconds": 8.0,
    "closed_seconds": 2.0,
    "memory_live": 100_000,
    "queue_jobs": 500,
    "queue_runs": 1,
    "queue_history": 5000,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# Procrastinate ----------------------------------------------------------------------


def ensure_procrastinate_venv() -> Path:
    """bench/.venv-procrastinate with Procrastinate from PyPI; its python."""
    python = PROC_VENV / "bin" / "python"
    if not python.exists():
        log(f"creating {PROC_VENV} (procrastinate {PROC_VERSION} from PyPI)")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(PROC_VENV)], check=True)
        subprocess.run([str(python), "-m", "ensurepip", "--upgrade"], check=True)
    probe = subprocess.run(
        [str(python), "-c", "import procrastinate"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"procrastinate=={PROC_VERSION}",
             "psycopg[binary]"],
            check=True,
        )  # fmt: skip
    return python


def procrastinate_rates(jobs: int, runs: int) -> dict[int, list[float]]:
    python = ensure_procrastinate_venv()
    dsn = pg_recreate(PROC_DB)
    out = subprocess.run(
        [str(python), str(HERE / "procrastinate_side.py"), "--dsn", dsn, "--jobs", str(jobs),
         "--runs", str(runs), "--apply-schema"],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    rates: dict[int, list[float]] = {}
    version = "?"
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rates.setdefault(int(row["concurrency"]), []).append(float(row["rate"]))
            version = row["procrastinate"]
    rates_version[0] = version
    return rates


rates_version = ["?"]


# the report -------------------------------------------------------------------------


def fmt(s: dict[str, float], digits: int = 0, unit: str = "") -> str:
    """'median (min-max)' of a `summary`, each figure followed by `unit`."""
    if not s.get("n"):
        return "n/a"
    median, low, high = (f"{s[k]:,.{digits}f}{unit}" for k in ("median", "min", "max"))
    return f"{median} ({low}-{high})"


def write_results(path: Path, data: dict[str, Any], quick: bool, command: str) -> None:
    m = data["machine"]
    lines = [
        "# Tenure performance figures",
        "",
        f"Written by `{command}` on {data['finished']} "
        f"({'quick' if quick else 'full'} run, {data['elapsed_s']:.0f} s). Medians with "
        "(min-max) over the runs; every ratio is from this same run.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ram']}; {m['os']}",
        f"- Python {m['python']}, SQLite {m['sqlite']}, PostgreSQL {m['postgresql']}, "
        f"psycopg {m['psycopg']}, procrastinate {data.get('procrastinate_version', '?')}",
        f"- Tenure commit {m['tenure_commit']}; load average at start {data['load']}",
        "",
    ]
    ops = data.get("inprocess", [])
    if ops:
        lines += [
            "## In process, one caller (operations per second)",
            "",
            "N seeded live leases on the bench's board; ten bench agents call the "
            "Coordinator one call at a time.",
            "",
            "| backend | live leases | claim/s | renew/s | touch/s | complete/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in ops:
            lines.append(
                f"| {r['backend']} | {r['live']:,} | {fmt(r['claim'])} | {fmt(r['renew'])} | "
                f"{fmt(r['touch'])} | {fmt(r['complete'])} |"
            )
        lines.append("")
        for backend in ("sqlite", "postgres"):
            rows = {r["live"]: r for r in ops if r["backend"] == backend}
            if 10 in rows and 100_000 in rows:
                ratio = rows[100_000]["renew"]["median"] / rows[10]["renew"]["median"]
                lines.append(f"- {backend}: renew rate at 100k live / at 10 live = **{ratio:.2f}**")
        lines.append("")
        timed = [r for r in ops if "statistics_ms" in r]
        if timed:
            lines += [
                "The statistics of every live lease (by state and flag, as the dashboard "
                "and `/metrics` read them), milliseconds:",
                "",
                "| backend | live leases | statistics ms |",
                "|---|---:|---:|",
            ]
            lines += [
                f"| {r['backend']} | {r['live']:,} | {fmt(r['statistics_ms'], 1)} |" for r in timed
            ]
            lines.append("")
    conc = data.get("concurrent_renew", [])
    if conc:
        lines += [
            "## Renewals with 8 concurrent callers, in process (SQLite)",
            "",
            "| live leases | renew/s |",
            "|---:|---:|",
        ]
        lines += [f"| {r['live']:,} | {fmt(r['renew'])} |" for r in conc]
        lines.append("")
    lines += _old_figure_lines(data)
    mon = data.get("monitor", [])
    if mon:
        lines += [
            "## The monitor: one pass (milliseconds)",
            "",
            "Every due lease is recovered with a handoff, an event, a comment and an "
            "outbox row. One pass judges at most 10,000 leases (50 batches of 200); a "
            "larger backlog is worked off over the next passes.",
            "",
            "| backend | live leases | due | recovered in the pass | pass ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in mon:
            lines.append(
                f"| {r['backend']} | {r['live']:,} | {r['percent']} % ({r['due']:,}) | "
                f"{r['recovered']:,} | {fmt(r['ms'], 1)} |"
            )
        lines.append("")
    for key, store in (("wire", "SQLite"), ("wire_pg", "PostgreSQL")):
        if data.get(key):
            lines += _wire_lines(store, data[key])
    mem = data.get("memory")
    if mem:
        lines += [
            "## Memory",
            "",
            f"Resident size of a `tenure serve` process whose database holds "
            f"{mem['live']:,} live leases: {mem['rss_idle_mib']:.0f} MiB once ready, "
            f"{mem['rss_after_mib']:.0f} MiB after a closed-loop burst, one listing of "
            "every in-progress task over HTTP and a monitor pass.",
            "",
        ]
    q = data.get("queue")
    if q:
        lines += [
            "## Tenure and Procrastinate on one PostgreSQL server (TCP 127.0.0.1)",
            "",
            f"N = {q['jobs']:,}. Procrastinate: a worker fetching and finishing N no-op "
            "jobs (`wait=False`). Tenure, agents in process: *two calls*, each looping "
            "`request_next_task` + a `completed` report (two commits a task); "
            "*claim_next*, each finishing a task with a `completed` report that claims "
            "the next in the same call (one commit a task); *claim_next, with history*, "
            f"the same on a board holding {q.get('history', 0):,} tasks done before with "
            "their ended leases, as a board that has worked a while does (a fresh "
            "database's leases table is planned for as empty until autovacuum counts it, "
            "about a minute on a server; see docs/performance.md). Each run measures "
            "Procrastinate and then Tenure; a ratio is the median of the runs' ratios "
            "(min-max).",
            "",
            "| concurrency | Procrastinate jobs/s | Tenure, two calls | ratio "
            "| Tenure, claim_next | ratio | claim_next, with history | ratio |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        together = q.get("together", {})
        with_history = q.get("with_history", {})
        for conc_s in sorted(q["tenure"], key=int):
            theirs = q["procrastinate"].get(conc_s, [])
            cells = [fmt(summary(theirs))]
            loops = (q["tenure"][conc_s], together.get(conc_s, []), with_history.get(conc_s, []))
            for ours in loops:
                ratio = paired(ours, theirs) if len(theirs) == len(ours) else summary([])
                cells += [fmt(summary(ours)), f"**{fmt(ratio, 2, 'x')}**"]
            lines.append(f"| {conc_s} | " + " | ".join(cells) + " |")
        lines.append("")
    path.write_text("\n".join(lines))


def _old_figure_lines(data: dict[str, Any]) -> list[str]:
    """Tenure's SQLite renewals against the JSON-file pattern they replace,
    both measured in this run (issue 11's goals: 20x at 1k, 100x at 5k)."""
    old = {r["live"]: r for r in data.get("json_file", [])}
    if not old:
        return []
    one = {
        r["live"]: r["renew"]["median"]
        for r in data.get("inprocess", [])
        if r["backend"] == "sqlite" and "renew" in r
    }
    eight = {r["live"]: r for r in data.get("concurrent_renew", [])}
    lines = [
        "## The old figure, on this machine",
        "",
        "Renewals per second of the storage pattern Tenure replaces: every assignment in "
        "one JSON file, rewritten whole on each renewal (`json_file_baseline.py`). "
        "The issue measured it at 320/s (1k) and 53/s (5k) on its machine.",
        "",
        "Each run measures the old figure and then Tenure's 8 callers, one right after "
        "the other; **x** is the median of those runs' ratios (min-max). The one-caller "
        "ratio divides the first table's median by the old figure's.",
        "",
        "| live leases | JSON file renew/s | Tenure, 8 callers | x | goal "
        "| Tenure, one caller | x |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for live, goal in ((1000, 20), (5000, 100)):
        if live not in old:
            continue
        base = old[live]
        cells = [fmt(base["renew"])]
        if live in eight:
            ratio = paired(eight[live]["runs"], base["runs"])
            cells += [fmt(eight[live]["renew"]), f"**{fmt(ratio, 1, 'x')}**"]
        else:
            cells += ["n/a", "n/a"]
        cells.append(f"{goal}x")
        rate = one.get(live)
        median = base["renew"]["median"]
        cells += ["n/a", "n/a"] if rate is None else [f"{rate:,.0f}", f"{rate / median:.1f}x"]
        lines.append(f"| {live:,} | {' | '.join(cells)} |")
    return [*lines, ""]


def _wire_lines(store: str, wire: dict[str, Any]) -> list[str]:
    """The open- and closed-loop tables of one `bench_wire` run on `store`."""
    lines = [
        f"## Over the wire (tenure serve on {store}, loopback)",
        "",
        "Open loop: 50 agents, each renewing once a second (50/s offered); latency "
        "from each call's scheduled moment. The lean client writes each request on a "
        "kept-alive socket and reads the answer by its length: the server's latency. "
        "httpx's AsyncClient adds its own cost in the same process (what a Python "
        "agent using it sees).",
        "",
        "| transport | calls | errors | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in TRANSPORTS:
        if f"{kind}_open" not in wire:
            continue  # a run from before the lean client
        o = wire[f"{kind}_open"]
        lines.append(
            f"| {CLIENTS[kind]} | {o['calls']} | {o['errors']} | {o['p50_ms']:.2f} | "
            f"{o['p99_ms']:.2f} | {o['max_ms']:.2f} |"
        )
    lines += [
        "",
        "Closed loop: C agents renewing back to back; the highest rate with zero errors.",
        "",
        "| transport | C=1 | C=4 | C=16 | C=50 | best with 0 errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in TRANSPORTS:
        if f"{kind}_closed" not in wire:
            continue
        c = wire[f"{kind}_closed"]
        cells = [
            f"{lv['rate']:,.0f}/s" + (f" ({lv['errors']} err)" if lv["errors"] else "")
            for lv in c["levels"]
        ]
        best = c["best"]
        lines.append(
            f"| {CLIENTS[kind]} | {' | '.join(cells)} | "
            f"{best['rate']:,.0f}/s at C={best.get('concurrency', '-')} |"
        )
    lines.append("")
    return lines


# the two comparisons, run in turn ----------------------------------------------------
#
# Each ratio compares two rates measured one right after the other, run by
# run, and the report gives the median of those pairs' ratios. This machine's
# speed drifts by a fifth or more over minutes; measured in two blocks minutes
# apart, a ratio would carry that drift, in whichever direction it went.


async def renewals_in_turn(
    cfg: dict[str, Any], folder: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """SQLite renewals by 8 concurrent callers, and the old figure (one JSON
    file of every assignment), at 1,000 and 5,000 live leases: one run of
    each in turn. Rows for `concurrent_renew` and `json_file`."""
    sizes = (1000, 5000)
    tenure: dict[int, list[float]] = {size: [] for size in sizes}
    old: dict[int, list[float]] = {size: [] for size in sizes}
    for run in range(cfg["runs"]):
        for size in sizes:
            log(f"run {run + 1}: the old figure, then 8 concurrent renewers, at {size:,}")
            old[size].append(await renew_rate(size, cfg["ops"] // 4, cfg["op_seconds"], folder))
            row = await bench_size(
                "sqlite", size, 1, cfg["ops"], cfg["op_seconds"], folder, callers=8
            )
            tenure[size].append(row["renew"]["median"])
    return (
        [{"live": size, "renew": summary(tenure[size]), "runs": tenure[size]} for size in sizes],
        [{"live": size, "renew": summary(old[size]), "runs": old[size]} for size in sizes],
    )


async def queues_in_turn(cfg: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Procrastinate fetching and finishing N jobs, then Tenure claiming and
    completing N tasks, at concurrency 1 and 8, run by run in turn."""
    jobs = cfg["queue_jobs"]
    proc: dict[str, list[float]] = {"1": [], "8": []}
    tenure: dict[str, list[float]] = {"1": [], "8": []}
    together: dict[str, list[float]] = {"1": [], "8": []}
    with_history: dict[str, list[float]] = {"1": [], "8": []}
    for run in range(cfg["queue_runs"]):
        log(f"run {run + 1}: Procrastinate side")
        for concurrency, rates in procrastinate_rates(jobs, 1).items():
            proc[str(concurrency)] += rates
        for concurrency in (1, 8):
            log(f"run {run + 1}: Tenure side, concurrency {concurrency}, two calls a task")
            tenure[str(concurrency)].append(await queue_rate(jobs, concurrency, folder))
            log(f"run {run + 1}: Tenure side, concurrency {concurrency}, claim_next")
            rate = await queue_rate(jobs, concurrency, folder, together=True)
            together[str(concurrency)].append(rate)
            log(f"run {run + 1}: Tenure side, concurrency {concurrency}, claim_next, history")
            rate = await queue_rate(
                jobs, concurrency, folder, together=True, history=cfg["queue_history"]
            )
            with_history[str(concurrency)].append(rate)
    return {
        "jobs": jobs,
        "history": cfg["queue_history"],
        "procrastinate": proc,
        "tenure": tenure,
        "together": together,
        "with_history": with_history,
    }


def paired(ours: list[float], theirs: list[float]) -> dict[str, float]:
    """Median and min-max of the ratios of runs made in turn (ours / theirs)."""
    return summary([a / b for a, b in zip(ours, theirs, strict=True) if b > 0])


async def run(cfg: dict[str, Any], quick: bool, parts: set[str]) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="tenure-bench-"))
    data: dict[str, Any] = {"machine": machine()}
    with open("/proc/loadavg") as handle:
        data["load"] = " ".join(handle.read().split()[:3])
    have_pg = pg_available()
    if not have_pg:
        log("PostgreSQL is not reachable at 127.0.0.1:5432: its parts are skipped")
    backends = ["sqlite", "postgres"] if have_pg else ["sqlite"]
    if "ops" in parts:
        data["inprocess"] = []
        for backend in backends:
            for size in cfg["sizes"]:
                log(f"in process: {backend} at {size:,} live leases")
                data["inprocess"].append(
                    await bench_size(
                        backend, size, cfg["runs"], cfg["ops"], cfg["op_seconds"], folder
                    )
                )
        data["concurrent_renew"], data["json_file"] = await renewals_in_turn(cfg, folder)
    if "monitor" in parts:
        data["monitor"] = []
        for backend in backends:
            log(f"monitor: {backend}")
            data["monitor"] += await bench_monitor(
                backend, cfg["monitor_sizes"], cfg["monitor_runs"], folder
            )
    if "wire" in parts:
        log("over the wire: HTTP and MCP")
        data["wire"] = await bench_wire(folder, cfg["wire_seconds"], cfg["closed_seconds"])
        if have_pg:
            log("over the wire on PostgreSQL: HTTP")
            data["wire_pg"] = await bench_wire(
                folder,
                cfg["wire_seconds"],
                cfg["closed_seconds"],
                backend="postgres",
                transports=("lean", "http"),
            )
            pg_drop(WIRE_DB)
        log(f"memory: a server with {cfg['memory_live']:,} live leases")
        data["memory"] = await bench_memory(folder, cfg["memory_live"])
    if "queue" in parts and have_pg:
        data["queue"] = await queues_in_turn(cfg, folder)
        data["procrastinate_version"] = rates_version[0]
    if have_pg:
        pg_drop(BENCH_DB)
        pg_drop(PROC_DB)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller and shorter: minutes")
    parser.add_argument(
        "--parts", default="ops,monitor,wire,queue", help="comma-separated subset to run"
    )
    parser.add_argument("--out", default=str(HERE / "results.md"))
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    started = time.perf_counter()
    data = asyncio.run(run(cfg, args.quick, set(args.parts.split(","))))
    data["elapsed_s"] = time.perf_counter() - started
    data["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "bench/run_all.py" + (" --quick" if args.quick else "")
    if args.parts != "ops,monitor,wire,queue":
        command += f" --parts {args.parts}"
    out = Path(args.out)
    write_results(out, data, args.quick, command)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))
    log(f"wrote {out}")
    print(out.read_text())


if __name__ == "__main__":
    main()
