"""The fleet simulator: valid, sorted, deterministic traces with the seed's figures;
and the `tenure simulate` / `tenure replay` commands."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenure.cli import app
from tenure.core.errors import InvalidInput
from tenure.lab import PROFILES, dump_trace, parse_trace, profile_names, replay, simulate, stints


@pytest.mark.parametrize("profile", profile_names())
def test_each_profile_gives_a_valid_sorted_trace_that_replays(profile: str) -> None:
    trace = simulate(agents=3, tasks=5, seed=2, profile=profile)
    times = [line["t"] for line in trace]
    assert times == sorted(times)
    events = parse_trace(dump_trace(trace).splitlines())
    cut = stints(events)
    assert len(cut) == 5 and {s.task for s in cut} == {f"T{n:04d}" for n in range(1, 6)}
    assert all(s.ending in {"complete", "death"} for s in cut)
    assert replay(events, "spec").stints == 5


def report_gaps(trace: list[dict[str, object]]) -> list[float]:
    last: dict[tuple[object, object], float] = {}
    gaps = []
    for line in trace:
        if line["type"] in {"assign", "progress"}:
            key = (line["agent"], line["task"])
            t = float(line["t"])  # type: ignore[arg-type]
            if line["type"] == "progress" and key in last:
                gaps.append(t - last[key])
            last[key] = t
    return gaps


def test_the_seed_profile_reproduces_the_seeds_report_rhythm() -> None:
    gaps = report_gaps(simulate(agents=10, tasks=300, seed=4, profile="seed"))
    assert 43 <= statistics.median(gaps) <= 51  # the seed: median ~47 s
    assert 55 <= statistics.mean(gaps) <= 66  # the seed: mean ~60 s
    # The harsh profile is slower.
    harsh = report_gaps(simulate(agents=10, tasks=100, seed=4, profile="harsh"))
    assert statistics.median(harsh) > 1.5 * statistics.median(gaps)


def test_the_model_has_tails_validators_conflicts_deaths_and_blips() -> None:
    trace = simulate(agents=10, tasks=200, seed=9, profile="flaky-sessions")
    kinds = {line["type"] for line in trace}
    assert kinds == {
        "assign",
        "progress",
        "activity",
        "write",
        "conflict_start",
        "conflict_end",
        "complete",
        "disconnect",
        "death",
    }
    cut = stints(parse_trace(dump_trace(trace).splitlines()))
    dead = [s for s in cut if s.dead]
    assert dead and any(s.closed_session for s in dead) and not all(s.closed_session for s in dead)
    assert any(s.dropped_session for s in dead)
    assert sum(s.blips for s in cut) > len(cut)  # flaky: about two per stint
    # A dead worker is replaced by a new id in its slot.
    assert any("-r" in s.agent for s in cut)


def test_blips_are_drops_and_dying_agents_mostly_close_their_session_explicitly() -> None:
    trace = simulate(agents=10, tasks=400, seed=11, profile="flaky-sessions")
    events = parse_trace(dump_trace(trace).splitlines())
    dead = [s for s in stints(events) if s.dead]
    dying = {(e.agent, e.t) for e in events if e.type == "death"}
    ends = [e for e in events if e.type == "disconnect"]
    # Every session end of a live agent (one that calls again) is a drop.
    assert all(e.how == "dropped" for e in ends if (e.agent, e.t) not in dying)
    closed = sum(s.closed_session for s in dead)
    dropped = sum(s.dropped_session for s in dead)
    profile = PROFILES["flaky-sessions"]
    assert closed + dropped == pytest.approx(profile.death_closes_p * len(dead), rel=0.2)
    assert dropped / (closed + dropped) == pytest.approx(profile.death_drops_p, abs=0.12)
    assert {p.death_drops_p for p in PROFILES.values()} == {0.25}


def test_the_same_seed_gives_the_same_trace_and_another_seed_another() -> None:
    one = simulate(agents=4, tasks=10, seed=1)
    assert simulate(agents=4, tasks=10, seed=1) == one
    assert simulate(agents=4, tasks=10, seed=2) != one


def test_unknown_profiles_and_empty_fleets_are_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown profile"):
        simulate(agents=1, tasks=1, seed=1, profile="sloth")
    with pytest.raises(InvalidInput):
        simulate(agents=0, tasks=1, seed=1)
    assert set(PROFILES) >= {"seed", "harsh", "chatty", "flaky-sessions"}


def test_the_commands_simulate_then_replay(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "fleet.jsonl"
    made = runner.invoke(
        app, ["simulate", "--agents", "2", "--tasks", "3", "--seed", "5", "--out", str(out)]
    )
    assert made.exit_code == 0, made.output
    assert out.read_text().splitlines() == dump_trace(simulate(2, 3, 5)).splitlines()
    scored = runner.invoke(app, ["replay", str(out), "--policy", "seed", "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.output)["stints"] == 3
    table = runner.invoke(app, ["replay", str(out), "-p", "spec", "-p", "fixed"])
    assert table.exit_code == 0 and table.output.splitlines()[1].startswith("spec")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"t": 0, "type": "assign", "agent": "a1", "task": "T1"}\n{"t": 1}\n')
    refused = runner.invoke(app, ["replay", str(broken)])
    assert refused.exit_code == 2 and "line 2" in refused.output
    unknown = runner.invoke(app, ["replay", str(out), "--policy", "psychic"])
    assert unknown.exit_code == 2 and "unknown policy" in unknown.output
