"""The trade-off curve of every detector policy: false recoveries against latency.

Each policy has one threshold that trades the two numbers against each other
(`seed` and `spec`: the silence multiplier; `fixed`: the TTL; `adaptive`:
the phi threshold). For each threshold the lab simulates the fleets
(`tenure.lab.simulate`), replays them through the real engine and pools the
stints of all seeds; each threshold is one point: the false-recovery rate
(live stints recovered at least once) against the median detection latency
(death to recovery). One panel per profile; the defaults are marked.

    .venv/bin/python bench/detection_curve.py                     # docs/detection-curve.png
    .venv/bin/python bench/detection_curve.py --seeds 1,2,3 --tasks 150 --out curve.png
    .venv/bin/python bench/detection_curve.py --json > curve.json   # the points, no plot
    .venv/bin/python bench/detection_curve.py --points curve.json   # draw them again

Drawing needs matplotlib (`pip install 'tenure[plot]'`); `--json` does not.
The defaults (4 profiles, 22 thresholds, 3 seeds of 10 agents x 150 tasks)
take about 8 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from detection import run_one  # bench/detection.py: one (profile, seed, policy) replay

from tenure.lab import StintOutcome, profile_names, score

#: Per detector: the threshold varied, its values, and its default.
CURVES: dict[str, tuple[str, tuple[float, ...], float]] = {
    "seed": ("silence_multiplier", (2.0, 3.0, 5.0, 8.0), 5.0),
    "spec": ("silence_multiplier", (2.0, 3.0, 5.0, 8.0, 12.0), 5.0),
    "fixed": ("fixed_ttl_s", (60.0, 120.0, 300.0, 600.0, 900.0), 300.0),
    "adaptive": ("phi_threshold", (1.0, 1.5, 2.0, 2.5, 3.0, 4.0), 3.0),
}
COLOURS = {"seed": "tab:red", "spec": "tab:blue", "fixed": "tab:gray", "adaptive": "tab:green"}


def points(
    profiles: list[str], seeds: list[int], agents: int, tasks: int, jobs: int
) -> list[dict[str, Any]]:
    """One row per (policy, threshold, profile): the pooled false rate and median latency."""
    work = []
    for kind, (key, values, _default) in CURVES.items():
        for value in values:
            name = f"{kind}:{key}={value:g}"
            for profile in profiles:
                for seed in seeds:
                    work.append((profile, seed, name, agents, tasks, 10.0, None, ()))
    pooled: dict[tuple[str, str], list[StintOutcome]] = defaultdict(list)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for profile, _seed, name, outcomes, *_rest in pool.map(run_one, work):
            pooled[(name, profile)].extend(outcomes)
    rows = []
    for (name, profile), outcomes in pooled.items():
        kind, _, setting = name.partition(":")
        key, _, raw = setting.partition("=")
        scores = score(outcomes)
        silent = score(
            o for o in outcomes if o.dead and not o.closed_session and not o.dropped_session
        )
        rows.append(
            {
                "policy": kind,
                "threshold": key,
                "value": float(raw),
                "default": float(raw) == CURVES[kind][2],
                "profile": profile,
                "false_recovery_rate": scores.false_recovery_rate,
                "latency_median_s": scores.latency_median_s,
                "silent_latency_median_s": silent.latency_median_s,
            }
        )
    return rows


def draw(rows: list[dict[str, Any]], profiles: list[str], out: Path, title: str) -> None:
    """A column per profile, a line per policy, a labelled point per threshold.

    Top row: the median latency over all deaths (issue 10's figure); bottom
    row: over the deaths that did not close their session, where the
    threshold alone decides (a closed session is detected by its window).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_x = (
        ("latency_median_s", "median latency, all deaths (s)"),
        ("silent_latency_median_s", "median latency, silent deaths (s)"),
    )
    fig, axes = plt.subplots(
        len(axes_x), len(profiles), figsize=(4.6 * len(profiles), 9), squeeze=False
    )
    for row, (key, label) in enumerate(axes_x):
        for column, profile in enumerate(profiles):
            ax = axes[row][column]
            for kind in CURVES:
                mine = sorted(
                    (r for r in rows if r["policy"] == kind and r["profile"] == profile),
                    key=lambda r: r["value"],
                )
                xs = [r[key] or 0.0 for r in mine]
                ys = [100 * r["false_recovery_rate"] for r in mine]
                ax.plot(xs, ys, "o-", color=COLOURS[kind], label=f"{kind} ({CURVES[kind][0]})")
                for r, x, y in zip(mine, xs, ys, strict=True):
                    ax.annotate(
                        f"{r['value']:g}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(4, 4),
                        fontsize=7,
                        color=COLOURS[kind],
                    )
                    if r["default"]:
                        ax.plot(
                            [x],
                            [y],
                            marker="*",
                            markersize=15,
                            color=COLOURS[kind],
                            markeredgecolor="black",
                        )
            ax.set_title(f"profile {profile}")
            ax.set_xlabel(label)
            ax.set_ylabel("false recoveries (% of live stints)")
            ax.set_yscale("symlog", linthresh=1.0)
            ax.grid(True, alpha=0.3)
            if row == 0 and column == 0:
                ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=150)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--profiles", default=",".join(profile_names()))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="docs/detection-curve.png")
    parser.add_argument("--json", action="store_true", help="print the points, draw nothing")
    parser.add_argument("--points", help="draw these points (a --json output), replay nothing")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    profiles = [p for p in args.profiles.split(",") if p.strip()]
    if args.points:
        rows = json.loads(Path(args.points).read_text())
    else:
        rows = points(profiles, seeds, args.agents, args.tasks, args.jobs)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    title = (
        f"False recoveries against median detection latency, one point per threshold "
        f"(star: default)\n{args.agents} agents x {args.tasks} tasks x seeds {seeds}, "
        "monitor every 10 s"
    )
    draw(rows, profiles, Path(args.out), title)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
