"""`tenure replay` and `tenure simulate`: the failure-detection lab on the command line.

Thin commands over `tenure.lab` (docs/lab.md describes the trace format, the
model of agent behaviour and the scores).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tenure.core.errors import TenureError


def replay(
    trace: Annotated[Path, typer.Argument(help="A trace: JSON lines sorted by t.")],
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            "-p",
            help="Detector policy by name (spec, seed, fixed...), optionally with "
            "overrides like spec:silence_multiplier=3. Repeat to compare.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
    interval: Annotated[
        float, typer.Option(help="Seconds between monitor passes.", min=0.1)
    ] = 10.0,
    takeover: Annotated[
        float | None,
        typer.Option(
            help="A standby agent redoes each recovered task this many seconds later, "
            "so a falsely recovered agent loses its minutes (default: off).",
            min=0.0,
        ),
    ] = None,
) -> None:
    """Feed a trace through the real engine on a fake clock and score it.

    Scores: false recoveries of live agents, detection latency of dead ones,
    revivals, lost agent minutes. With one policy, --json prints one object;
    with several, an object of them by policy name.

    Example: tenure replay fleet.jsonl --policy spec --policy seed --takeover 30
    """
    from tenure.lab import ReplayOptions, lab_policy, load_trace, scores_table
    from tenure.lab import replay as run_replay

    names = policy or ["spec"]
    try:
        events = load_trace(trace)
        chosen = [(name, lab_policy(name)) for name in names]
        options = ReplayOptions(interval_s=interval, takeover_s=takeover)
        results = [(name, run_replay(events, p, options=options)) for name, p in chosen]
    except (TenureError, OSError) as error:
        typer.echo(f"tenure replay: {getattr(error, 'message', error)}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        if len(results) == 1:
            typer.echo(json.dumps(results[0][1].to_dict(), indent=2))
        else:
            typer.echo(json.dumps({name: s.to_dict() for name, s in results}, indent=2))
        return
    typer.echo(scores_table([((name,), s) for name, s in results], ("policy",)), nl=False)


def simulate(
    agents: Annotated[int, typer.Option(help="Workers at once.", min=1)],
    tasks: Annotated[int, typer.Option(help="Tasks to work through.", min=0)],
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same trace.")],
    profile: Annotated[
        str, typer.Option(help="Fleet profile: seed, harsh, chatty, flaky-sessions.")
    ] = "seed",
    out: Annotated[
        Path | None, typer.Option(help="Write the trace here instead of stdout.")
    ] = None,
) -> None:
    """Generate a trace of a simulated fleet of agents (JSON lines).

    The model of agent behaviour and its figures are in docs/lab.md.

    Example: tenure simulate --agents 10 --tasks 200 --seed 1 --profile harsh --out fleet.jsonl
    """
    from tenure.lab import dump_trace
    from tenure.lab import simulate as run_simulate

    try:
        text = dump_trace(run_simulate(agents, tasks, seed, profile))
    except TenureError as error:
        typer.echo(f"tenure simulate: {error.message}", err=True)
        raise typer.Exit(2) from None
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")


def register(app: typer.Typer) -> None:
    """Add `replay` and `simulate` to the root app."""
    app.command("replay")(replay)
    app.command("simulate")(simulate)
