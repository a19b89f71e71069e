"""Detection quality of each detector policy on each simulated fleet profile.

For every profile and seed it simulates a fleet (`tenure.lab.simulate`),
replays that trace through the real engine under every policy
(`tenure.lab.replay`), pools the stints of all seeds per (policy, profile)
and prints two tables: issue 9's scores, and the figures issue 10's goals
are stated in (false recoveries and median latency against `seed`'s on the
same traces, deaths that closed their session explicitly and deaths whose
connection dropped, apart; live stints with session blips, how many of
them were recovered, and how many of those for their session ending: an
`agent_disconnected` recovery, not one for silence). Figures, not a
test: nothing here asserts.

    .venv/bin/python bench/detection.py                                  # defaults
    .venv/bin/python bench/detection.py --agents 10 --tasks 200 --seeds 1,2,3,4,5
    .venv/bin/python bench/detection.py --policy seed --policy spec:silence_multiplier=3
    .venv/bin/python bench/detection.py --profiles seed,harsh --json > figures.json

Runtime grows with agents x tasks x seeds x profiles x policies; the
defaults (150 tasks, 3 seeds, 4 profiles, 3 policies) take about a minute
on 2 cores. `--register MODULE` imports a module that registers more
policies (`tenure.lab.register_policy`) in every worker.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tenure.lab import (
    ReplayOptions,
    Scores,
    StintOutcome,
    lab_policy,
    policy_names,
    profile_names,
    replay,
    score,
    scores_table,
    simulate,
)
from tenure.lab.scores import percentile

Job = tuple[str, int, str, int, int, float, float | None, tuple[str, ...]]
Result = tuple[str, int, str, tuple[StintOutcome, ...], int, dict[str, int], float]


def run_one(job: Job) -> Result:
    """Simulate (profile, seed) and replay it under one policy, in a worker process."""
    profile, seed, policy, agents, tasks, interval, takeover, modules = job
    for module in modules:
        importlib.import_module(module)
    started = time.perf_counter()
    trace = simulate(agents, tasks, seed, profile)
    options = ReplayOptions(interval_s=interval, takeover_s=takeover)
    scores = replay(trace, lab_policy(policy), options=options)
    elapsed = time.perf_counter() - started
    return profile, seed, policy, scores.outcomes, scores.revivals, scores.refusals, elapsed


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None:
        return "-"
    if denominator == 0:
        return "-" if numerator == 0 else "inf"
    return f"{numerator / denominator:.2f}"


def goal_rows(pooled: dict[tuple[str, str], Scores], policies: list[str]) -> list[dict[str, Any]]:
    """Issue 10's figures per (policy, profile), `seed` on the same traces as the yardstick."""
    rows = []
    for (policy, profile), scores in pooled.items():
        base = pooled.get(("seed", profile))
        closed = [
            o.latency_s for o in scores.outcomes if o.closed_session and o.latency_s is not None
        ]
        dropped = [
            o.latency_s for o in scores.outcomes if o.dropped_session and o.latency_s is not None
        ]
        silent = [
            o.latency_s
            for o in scores.outcomes
            if o.dead and not o.closed_session and not o.dropped_session and o.latency_s is not None
        ]
        blipped = [o for o in scores.outcomes if not o.dead and o.blips]
        rows.append(
            {
                "policy": policy,
                "profile": profile,
                "false_recovery_rate": scores.false_recovery_rate,
                "seed_false_over_this": _ratio(
                    base.false_recoveries if base else None, scores.false_recoveries
                ),
                "latency_median_s": scores.latency_median_s,
                "latency_vs_seed": _ratio(
                    scores.latency_median_s, base.latency_median_s if base else None
                ),
                "closed_deaths": len(closed),
                "closed_p95_s": percentile(closed, 95),
                "dropped_deaths": len(dropped),
                "dropped_p95_s": percentile(dropped, 95),
                "silent_deaths": len(silent),
                "silent_median_s": percentile(silent, 50),
                "blipped_live": len(blipped),
                "blipped_recovered": sum(o.falsely_recovered for o in blipped),
                "blipped_recovered_for_session": sum(o.recovered_for_session for o in blipped),
            }
        )
    order = {name: i for i, name in enumerate(policies)}
    return sorted(rows, key=lambda r: (r["profile"], order.get(r["policy"], 99)))


def goal_table(rows: list[dict[str, Any]]) -> str:
    """The goal rows as plain text."""
    head = [
        "policy",
        "profile",
        "false%",
        "seed/this",
        "lat50",
        "lat/seed",
        "closed",
        "closed95",
        "dropped",
        "dropped95",
        "silent",
        "silent50",
        "blipped",
        "blip_rec",
        "for_session",
    ]
    keys = [
        "policy",
        "profile",
        "false_recovery_rate",
        "seed_false_over_this",
        "latency_median_s",
        "latency_vs_seed",
        "closed_deaths",
        "closed_p95_s",
        "dropped_deaths",
        "dropped_p95_s",
        "silent_deaths",
        "silent_median_s",
        "blipped_live",
        "blipped_recovered",
        "blipped_recovered_for_session",
    ]

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if key == "false_recovery_rate":
            return f"{100 * value:.2f}"
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    body = [[cell(k, row[k]) for k in keys] for row in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    out = []
    for line in [head, *body]:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=150, help="tasks per simulated trace")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated simulation seeds")
    parser.add_argument("--profiles", default=",".join(profile_names()))
    parser.add_argument("--policies", default="spec,seed,fixed", help="comma-separated names")
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="NAME[:k=v,...]",
        help="one policy, overrides allowed (repeat; replaces --policies)",
    )
    parser.add_argument("--interval", type=float, default=10.0, help="monitor interval, s")
    parser.add_argument(
        "--takeover",
        type=float,
        default=None,
        metavar="S",
        help="a standby agent redoes each recovered task S seconds later (lost minutes)",
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--register", action="append", default=[], metavar="MODULE")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)

    for module in args.register:
        importlib.import_module(module)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    profiles = [p for p in args.profiles.split(",") if p.strip()]
    policies = args.policy or [p for p in args.policies.split(",") if p.strip()]
    for policy in policies:
        lab_policy(policy)  # refuse a bad name before any work
    jobs: list[Job] = [
        (
            profile,
            seed,
            policy,
            args.agents,
            args.tasks,
            args.interval,
            args.takeover,
            tuple(args.register),
        )
        for profile in profiles
        for seed in seeds
        for policy in policies
    ]
    started = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run_one, jobs))
    else:
        results = [run_one(job) for job in jobs]
    wall = time.perf_counter() - started

    outcomes: dict[tuple[str, str], list[StintOutcome]] = defaultdict(list)
    revivals: dict[tuple[str, str], int] = defaultdict(int)
    refusals: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for profile, _seed, policy, found, revived, refused, _elapsed in results:
        outcomes[(policy, profile)].extend(found)
        revivals[(policy, profile)] += revived
        for code, n in refused.items():
            refusals[(policy, profile)][code] += n
    pooled = {
        (policy, profile): score(outcomes[(policy, profile)], revivals[(policy, profile)])
        for profile in profiles
        for policy in policies
    }
    goals = goal_rows(pooled, policies)
    takeover = "off" if args.takeover is None else f"after {args.takeover:g} s"
    setup = (
        f"{args.agents} agents x {args.tasks} tasks x seeds {seeds}; monitor every "
        f"{args.interval:g} s; takeover {takeover}; "
        f"{len(jobs)} replays in {wall:.1f} s on {args.jobs} process(es)"
    )
    if args.json:
        doc = {
            "setup": setup,
            "scores": [
                {"policy": policy, "profile": profile, **s.to_dict()}
                for (policy, profile), s in pooled.items()
            ],
            "goals": goals,
            "refusals": {f"{k[0]}/{k[1]}": dict(v) for k, v in refusals.items()},
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"# Detection quality ({setup})")
    print(f"# policies known: {', '.join(policy_names())}\n")
    rows = [
        ((policy, profile), pooled[(policy, profile)])
        for profile in profiles
        for policy in policies
    ]
    print(scores_table(rows, ("policy", "profile")))
    print(
        "# Against seed on the same traces; deaths that closed their session (explicitly), "
        "whose connection dropped, silent; live stints with blips, recovered, recovered for "
        "their session\n"
    )
    print(goal_table(goals))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
