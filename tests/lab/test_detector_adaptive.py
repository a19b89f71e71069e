"""The `adaptive` detector on handcrafted traces, replayed through the real engine.

Each test is one case of docs/detection.md ("What the adaptive detector
does, case by case"): a steady agent, a bursty one, a merge conflict, a
session blip (a dropped connection), a silent death, a death that closed its
session (explicitly), a death whose connection dropped, and a slow holder
whose rhythm would allow more than the cap (`max_silence_s`). Expected
times come from the policy's own numbers (`rhythm_allowance` over the gaps
the trace gives the holder), with one monitor interval of tolerance.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tenure.core.model import Lease
from tenure.core.policy import DetectorPolicy, Policy
from tenure.core.timing import rhythm_allowance
from tenure.lab import replay
from tenure.lab.replay import START

INTERVAL = 10.0
ADAPTIVE = Policy(detector=DetectorPolicy(kind="adaptive"))
#: The window after a dropped connection, and after an explicit close (SPEC's 30 s).
WINDOW = ADAPTIVE.detector.suspect_window_s
CLOSE_WINDOW = ADAPTIVE.suspect_after_close_s


def ev(t: float, kind: str, agent: str = "a1", **fields: Any) -> dict[str, Any]:
    return {"t": t, "type": kind, "agent": agent, **fields}


def reports(times: list[float], start: int = 10, step: int = 10) -> list[dict[str, Any]]:
    return [ev(t, "progress", task="T1", progress=start + i * step) for i, t in enumerate(times)]


def allowance(gaps: list[float], progress: int) -> float:
    """The silence the detector allows a holder with these call gaps at `progress` %."""
    lease = Lease("lab", "T1", "a1", 1, START, START, 0.0, START, START, START)
    return rhythm_allowance(replace(lease, signal_gaps=tuple(gaps), progress=progress), ADAPTIVE)


def first_recovery(trace: list[dict[str, Any]], policy: Policy = ADAPTIVE) -> float | None:
    (outcome,) = replay(sorted(trace, key=lambda e: e["t"]), policy).outcomes
    return outcome.recoveries[0] if outcome.recoveries else None


def near(actual: float | None, expected: float) -> None:
    assert actual is not None and expected <= actual <= expected + INTERVAL, (actual, expected)


def test_a_steady_agent_is_never_recovered_even_through_a_quiet_spell() -> None:
    # Reports every 40 s, then one quiet spell (no call, no write) of most of
    # its allowance, then on to the end; validators after 100 %.
    times = [40.0 * i for i in range(1, 9)]
    spell = 0.9 * allowance([40.0] * 8, 80)
    trace = [ev(0, "assign", task="T1"), *reports(times)]
    trace += reports([320 + spell, 360 + spell], 90)
    trace += [ev(361 + spell, "activity"), ev(361 + spell + 170, "complete", task="T1")]
    assert first_recovery(trace) is None


def test_a_bursty_agent_earns_the_silences_a_quick_one_does_not() -> None:
    # Both fall silent for 280 s at 50 %. The quick one reports every 20 s:
    # 280 s is past its allowance. The bursty one has gone 250 s between
    # reports before: its rhythm allows the silence.
    quick = [ev(0, "assign", task="T1"), *reports([20.0 * i for i in range(1, 11)], 5, 5)]
    quick += [ev(480, "progress", task="T1", progress=60), ev(490, "complete", task="T1")]
    assert allowance([20.0] * 10, 50) < 280
    near(first_recovery(quick), 200 + allowance([20.0] * 10, 50))
    gaps = [30.0, 250.0, 30.0, 250.0, 30.0]
    times = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    bursty = [ev(0, "assign", task="T1"), *reports(times)]
    bursty += [ev(times[-1] + 280, "progress", task="T1", progress=60)]
    bursty += [ev(times[-1] + 290, "complete", task="T1")]
    assert allowance(gaps, 50) > 280
    assert first_recovery(bursty) is None


def test_a_merge_conflict_extends_at_most_twice() -> None:
    trace = [
        ev(0, "assign", task="T1"),
        *reports([40, 80, 120]),
        ev(125, "conflict_start"),
        ev(130, "death", task="T1"),
    ]
    scores = replay(trace, ADAPTIVE)
    assert scores.log.get("lease.extended") == ADAPTIVE.max_conflict_extensions
    # First due at the allowance, then twice now + 300 s (+ the grace).
    due = 120 + allowance([40.0] * 3, 30)
    grace = ADAPTIVE.detector.adaptive_grace_s
    due += ADAPTIVE.max_conflict_extensions * (ADAPTIVE.conflict_extension_s + grace)
    (outcome,) = scores.outcomes
    assert outcome.recoveries
    assert due <= outcome.recoveries[0] <= due + 3 * INTERVAL


def blip(back_after: float) -> list[dict[str, Any]]:
    """The connection drops at 130 and nothing at all is seen until the agent
    calls again `back_after` seconds later."""
    trace = [ev(0, "assign", task="T1"), *reports([40, 80, 120])]
    trace += [ev(130, "disconnect", how="dropped"), ev(130 + back_after, "activity")]
    trace += reports([130 + back_after + 20, 130 + back_after + 60], 40)
    return [*trace, ev(130 + back_after + 70, "complete", task="T1")]


def test_a_blip_outlasting_30_s_is_not_recovered() -> None:
    # A dropped connection is not an agent leaving: SPEC's 30 s is not its window.
    assert first_recovery(blip(back_after=CLOSE_WINDOW + 2 * INTERVAL)) is None
    # Under spec the same blip costs the agent its task.
    spec = Policy(detector=DetectorPolicy(kind="spec"))
    near(first_recovery(blip(back_after=CLOSE_WINDOW + 2 * INTERVAL), spec), 130 + CLOSE_WINDOW)


def test_a_session_blip_is_never_recovered_within_its_window() -> None:
    # Nothing at all is seen until the agent calls again just inside the window.
    assert first_recovery(blip(back_after=WINDOW - 5)) is None
    # A blip that outlasts the window but writes files after the drop lives on.
    longer = [ev(0, "assign", task="T1"), *reports([40, 80, 120])]
    longer += [ev(130, "disconnect", how="dropped")]
    longer += [ev(t, "write") for t in (160, 200, 240)]
    longer += [ev(130 + WINDOW + 40, "activity"), ev(130 + WINDOW + 50, "complete", task="T1")]
    assert first_recovery(longer) is None


def test_a_silent_death_is_recovered_one_allowance_after_the_last_sign_of_life() -> None:
    gaps = [40.0] * 5
    trace = [ev(0, "assign", task="T1"), *reports([40, 80, 120, 160, 200])]
    near(first_recovery([*trace, ev(210, "death", task="T1")]), 200 + allowance(gaps, 50))
    # Files written after the last report: the allowance runs from the last
    # write (stamped when it happened, not when the monitor saw it).
    writes = [ev(230, "write"), ev(260, "write"), ev(270, "death", task="T1")]
    near(first_recovery([*trace, *writes]), 260 + allowance(gaps, 50))


def death_after(how: str) -> list[dict[str, Any]]:
    """Reports every 40 s to 200 s, a write at 205, the session ends at 210 as
    `how` says, and the agent is dead."""
    trace = [ev(0, "assign", task="T1"), *reports([40, 80, 120, 160, 200])]
    return [*trace, ev(205, "write"), ev(210, "disconnect", how=how), ev(210, "death", task="T1")]


def test_a_death_that_closes_its_session_is_recovered_30_s_after_the_close() -> None:
    # An explicit close (its process exited): SPEC's 30 s. The write before
    # the close does not excuse the silence after it.
    assert 200 + allowance([40.0] * 5, 50) > 210 + WINDOW
    near(first_recovery(death_after("closed")), 210 + CLOSE_WINDOW)


def test_a_death_whose_connection_drops_is_recovered_when_the_drop_window_ends() -> None:
    # A killed process tree: no DELETE, only the connection dropping.
    near(first_recovery(death_after("dropped")), 210 + WINDOW)
    # With a 30 s window for drops too, it is recovered within 30 s.
    quick = Policy(detector=DetectorPolicy(kind="adaptive", suspect_window_s=30.0))
    near(first_recovery(death_after("dropped"), quick), 240)


# A slow holder's call gaps (the `harsh` profile's kind: long bursts, long tails).
SLOW_GAPS = [85.0, 250.0, 120.0, 400.0, 90.0, 300.0]
SLOW_TIMES = [sum(SLOW_GAPS[: i + 1]) for i in range(len(SLOW_GAPS))]


def slow_agent() -> list[dict[str, Any]]:
    return [ev(0, "assign", task="T1"), *reports(SLOW_TIMES)]


def test_no_rhythm_excuses_more_silence_than_the_cap() -> None:
    # The slow holder's fitted allowance is well past the cap (max_silence_s);
    # dead after its last report, it is recovered at the cap, not later.
    cap = ADAPTIVE.detector.max_silence_s
    uncapped = replace(ADAPTIVE.detector, max_silence_s=10_000.0)
    lease = Lease("lab", "T1", "a1", 1, START, START, 0.0, START, START, START)
    slow = replace(lease, signal_gaps=tuple(SLOW_GAPS), progress=60)
    assert rhythm_allowance(slow, replace(ADAPTIVE, detector=uncapped)) > 1.5 * cap
    assert allowance(SLOW_GAPS, 60) == cap
    last = SLOW_TIMES[-1]
    near(first_recovery([*slow_agent(), ev(last + 10, "death", task="T1")]), last + cap)
    # Writes after the report put the recovery one cap after the last write.
    writes = [ev(last + 60, "write"), ev(last + 120, "write"), ev(last + 130, "death", task="T1")]
    near(first_recovery([*slow_agent(), *writes]), last + 120 + cap)


def test_a_slow_agent_writing_through_a_long_gap_is_never_recovered() -> None:
    # 900 s between two reports, longer than the cap, but it writes every
    # 120 s: each write is a sign of life, counted when it happened.
    last = SLOW_TIMES[-1]
    trace = [*slow_agent(), *(ev(last + t, "write") for t in range(120, 900, 120))]
    trace += [ev(last + 900, "progress", task="T1", progress=80)]
    trace += [ev(last + 950, "complete", task="T1")]
    assert first_recovery(trace) is None


def test_a_slow_agent_quiet_for_longer_than_the_cap_is_recovered() -> None:
    # The price of the cap: a live agent silent (no call, no write) past it
    # loses its task, and claims it back at its next call.
    cap = ADAPTIVE.detector.max_silence_s
    last = SLOW_TIMES[-1]
    quiet = 0.9 * cap
    short = [*slow_agent(), ev(last + quiet, "progress", task="T1", progress=80)]
    assert first_recovery([*short, ev(last + quiet + 50, "complete", task="T1")]) is None
    long = [*slow_agent(), ev(last + cap + 60, "progress", task="T1", progress=80)]
    long += [ev(last + cap + 100, "complete", task="T1")]
    near(first_recovery(long), last + cap)
