"""Replay through the real engine: handcrafted traces whose answers follow from SPEC's numbers.

Monitor passes run every INTERVAL seconds from t = 0, so a lease is recovered
at the first pass at or after the moment the detector allows it: the
expected times below are computed from the policy's numbers, with one
interval of tolerance.
"""

from __future__ import annotations

from typing import Any

import pytest

from tenure.core.policy import Policy, ProgressivePolicy
from tenure.lab import ReplayOptions, replay

INTERVAL = 10.0
PHASES = ProgressivePolicy()
POLICY = Policy()


def ev(t: float, kind: str, agent: str = "a1", **fields: Any) -> dict[str, Any]:
    return {"t": t, "type": kind, "agent": agent, **fields}


def reports(times: list[float], start_progress: int = 10, step: int = 10) -> list[dict[str, Any]]:
    return [
        ev(t, "progress", task="T1", progress=start_progress + i * step)
        for i, t in enumerate(times)
    ]


def only_recovery(scores: Any) -> float:
    (outcome,) = scores.outcomes
    assert outcome.recoveries, "expected a recovery"
    return float(outcome.recoveries[0])


def within_a_pass(actual: float, expected: float) -> None:
    assert expected <= actual <= expected + INTERVAL, (actual, expected)


# A dead agent whose last report was at t = 90 (three reports, 30 %: phase 3).
DEAD_AT_90 = [ev(0, "assign", task="T1"), *reports([30, 60, 90]), ev(100, "death", task="T1")]


def test_a_dead_agent_is_recovered_when_each_policy_says() -> None:
    proven = PHASES.proven  # three reports at 30 %
    median = 30.0
    # spec and seed: expiry + grace, since the silence by then (360 s) is past
    # the cadence threshold (median 30 s x 5); fixed: its TTL, no grace.
    expiry_and_grace = 90 + proven.lease_s + proven.grace_s
    assert expiry_and_grace - 90 > median * POLICY.detector.silence_multiplier
    expected = {
        "spec": expiry_and_grace,
        "seed": expiry_and_grace,
        "fixed": 90 + POLICY.detector.fixed_ttl_s,
    }
    for name, when in expected.items():
        scores = replay(DEAD_AT_90, name)
        within_a_pass(only_recovery(scores), when)
        assert (scores.dead, scores.detected, scores.undetected) == (1, 1, 0)
        assert scores.latency_median_s == pytest.approx(only_recovery(scores) - 100)


def test_the_cadence_holds_a_slow_but_regular_agent_past_its_grace() -> None:
    # Reports every 100 s: the threshold (500 s of silence) outlasts expiry + grace.
    trace = [ev(0, "assign", task="T1"), *reports([100, 200, 300]), ev(310, "death", task="T1")]
    threshold = 100 * POLICY.detector.silence_multiplier
    assert 300 + PHASES.proven.lease_s + PHASES.proven.grace_s < 300 + threshold
    for name in ("spec", "seed"):
        within_a_pass(only_recovery(replay(trace, name)), 300 + threshold)


def silent_400_s(*, writes: bool) -> list[dict[str, Any]]:
    """A live agent: reports each minute, then 400 s without one, then finishes."""
    trace = [ev(0, "assign", task="T1"), *reports([60, 120, 180]), *reports([580, 640], 40)]
    trace.append(ev(700, "complete", task="T1"))
    if writes:
        trace += [ev(t, "write") for t in range(30, 700, 30)]
    return sorted(trace, key=lambda e: e["t"])


def test_a_live_agent_silent_for_400_s_but_writing_is_falsely_recovered_by_seed_only() -> None:
    trace = silent_400_s(writes=True)
    seed = replay(trace, "seed")
    assert (seed.live, seed.false_recoveries, seed.false_recovery_rate) == (1, 1, 1.0)
    # seed: phase 3 expiry + grace after the report at 180; the cadence (60 s x 5)
    # is exceeded by then, and seed ignores worktree writes.
    within_a_pass(only_recovery(seed), 180 + PHASES.proven.lease_s + PHASES.proven.grace_s)
    # The agent's next report claims the task back, so no agent minutes are lost.
    assert seed.outcomes[0].reclaims and seed.lost_agent_minutes == 0
    spec = replay(trace, "spec")
    assert (spec.false_recoveries, spec.outcomes[0].recoveries) == (0, ())
    # Without the writes spec has no sign of life either, and recovers too.
    assert replay(silent_400_s(writes=False), "spec").false_recoveries == 1


def test_a_task_taken_by_another_agent_costs_the_old_holder_its_remaining_minutes() -> None:
    trace = [*silent_400_s(writes=False), ev(545, "assign", "a2", task="T1")]
    scores = replay(sorted(trace, key=lambda e: e["t"]), "spec")
    first = scores.outcomes[0]
    assert first.recoveries and not first.reclaims
    assert scores.lost_agent_minutes == pytest.approx((700 - first.recoveries[0]) / 60, abs=0.1)
    assert scores.refusals.get("progress:lease_lost") == 2
    assert scores.refusals.get("complete:lease_lost") == 1


def test_a_merge_conflict_extends_at_most_twice() -> None:
    # Dies mid-conflict: the worktree stays unmerged, so only the cap ends it.
    trace = [
        ev(0, "assign", task="T1"),
        *reports([30, 60, 90]),
        ev(95, "conflict_start"),
        ev(100, "death", task="T1"),
    ]
    first_due = 90 + PHASES.proven.lease_s + PHASES.proven.grace_s
    for name in ("spec", "seed"):
        scores = replay(trace, name)
        assert scores.log.get("lease.extended") == POLICY.max_conflict_extensions
        # Each extension runs from the pass that granted it: now + 300 s, + grace.
        due = first_due
        for _ in range(POLICY.max_conflict_extensions):
            due += POLICY.conflict_extension_s + PHASES.proven.grace_s
        within_a_pass(only_recovery(scores), due)


def test_a_disconnect_then_death_is_recovered_within_30_s_and_one_pass_under_spec() -> None:
    trace = [
        ev(0, "assign", task="T1"),
        *reports([30, 60, 90]),
        ev(200, "disconnect"),
        ev(200, "death", task="T1"),
    ]
    scores = replay(trace, "spec")
    assert scores.outcomes[0].closed_session
    assert scores.latency_max_s is not None
    assert scores.latency_max_s <= POLICY.suspect_after_close_s + INTERVAL
    # seed knew nothing of sessions: it waits for expiry and grace.
    within_a_pass(only_recovery(replay(trace, "seed")), 90 + 360)


def test_a_closed_session_is_not_forgiven_for_writes_made_before_it_closed() -> None:
    trace = [
        ev(0, "assign", task="T1"),
        *reports([30, 60, 90]),
        ev(150, "write"),
        ev(200, "disconnect"),
        ev(200, "death", task="T1"),
    ]
    scores = replay(trace, "spec")
    assert scores.latency_max_s is not None
    assert scores.latency_max_s <= POLICY.suspect_after_close_s + INTERVAL


def test_the_engine_hears_how_a_session_ended_and_a_close_after_a_drop() -> None:
    def suspicions(*hows: str) -> tuple[Any, Any]:
        trace = [ev(0, "assign", task="T1"), *reports([30])]
        trace += [ev(40 + i, "disconnect", how=how) for i, how in enumerate(hows)]
        trace += [ev(45, "death", task="T1")]
        scores = replay(trace, "spec")
        return scores.log.get("lease.suspect"), scores.outcomes[0]

    count, outcome = suspicions("dropped")
    assert count == 1 and outcome.dropped_session and not outcome.closed_session
    count, outcome = suspicions("dropped", "closed")
    assert count == 2 and outcome.closed_session and not outcome.dropped_session
    count, outcome = suspicions("closed", "dropped", "closed")
    assert count == 1 and outcome.closed_session
    # Under spec both kinds are given SPEC's 30 s.
    for hows in (("dropped",), ("closed",)):
        trace = [ev(0, "assign", task="T1"), *reports([30, 60, 90])]
        trace += [ev(200, "disconnect", how=hows[0]), ev(200, "death", task="T1")]
        within_a_pass(only_recovery(replay(trace, "spec")), 200 + POLICY.suspect_after_close_s)


def blip(back_at: float) -> list[dict[str, Any]]:
    return [
        ev(0, "assign", task="T1"),
        *reports([30, 60, 90]),
        ev(100, "disconnect"),
        ev(back_at, "activity"),
        *reports([back_at + 40, back_at + 80], 40),
        ev(back_at + 120, "complete", task="T1"),
    ]


def test_a_session_blip_followed_by_activity_is_not_recovered() -> None:
    for name in ("spec", "seed", "fixed"):
        scores = replay(blip(back_at=110), name)
        assert scores.false_recoveries == 0, name
        assert scores.outcomes[0].blips == 1
    # Back only after the suspect window and a pass: spec takes it, then the
    # agent's next call... a report claims it back.
    late = replay(blip(back_at=100 + POLICY.suspect_after_close_s + 2 * INTERVAL), "spec")
    assert late.false_recoveries == 1 and late.outcomes[0].reclaims
    within_a_pass(only_recovery(late), 100 + POLICY.suspect_after_close_s)
    # ...and the outcome says it was taken for its session, not for silence.
    assert late.outcomes[0].recovery_reasons == ("agent_disconnected",)
    assert late.outcomes[0].recovered_for_session
    # The same agent, no blip, silent as long: taken for silence (spec's cadence).
    seed = replay(silent_400_s(writes=False), "seed")
    assert seed.outcomes[0].recovery_reasons == ("lease_expired",)
    assert seed.outcomes[0].falsely_recovered and not seed.outcomes[0].recovered_for_session


def test_the_same_trace_gives_the_same_scores_twice() -> None:
    from tenure.lab import simulate

    trace = simulate(agents=3, tasks=6, seed=11, profile="harsh")
    assert simulate(agents=3, tasks=6, seed=11, profile="harsh") == trace
    first, second = replay(trace, "seed"), replay(trace, "seed")
    assert first.to_dict() == second.to_dict()
    assert first.outcomes == second.outcomes


def test_the_monitor_interval_is_an_option() -> None:
    slow = replay(DEAD_AT_90, "fixed", options=ReplayOptions(interval_s=60.0))
    recovered = only_recovery(slow)
    assert recovered % 60 == 0 and 390 <= recovered <= 390 + 60


def test_scores_have_exactly_the_published_keys() -> None:
    keys = list(replay(DEAD_AT_90, "spec").to_dict())
    assert keys == [
        "stints",
        "live",
        "false_recoveries",
        "false_recovery_rate",
        "revivals",
        "dead",
        "detected",
        "latency_median_s",
        "latency_p95_s",
        "latency_max_s",
        "undetected",
        "lost_agent_minutes",
    ]


def test_with_takeover_a_standby_redoes_a_recovered_task_and_the_old_holder_loses_its_time() -> (
    None
):
    trace = silent_400_s(writes=True)
    scores = replay(trace, "seed", options=ReplayOptions(takeover_s=5.0))
    (outcome,) = scores.outcomes
    assert outcome.recoveries and not outcome.reclaims
    assert scores.lost_agent_minutes == pytest.approx((700 - outcome.recoveries[0]) / 60, abs=0.1)
    assert scores.refusals == {"progress:lease_lost": 2, "complete:lease_lost": 1}
    # spec kept the lease, so there was nothing to take over.
    assert replay(trace, "spec", options=ReplayOptions(takeover_s=5.0)).lost_agent_minutes == 0
