"""The trace format: parsing, refusals with line numbers, stints; the policy registry."""

from __future__ import annotations

import json

import pytest

from tenure.core.errors import InvalidInput
from tenure.core.policy import Policy
from tenure.lab import (
    TraceType,
    dump_trace,
    lab_policy,
    parse_trace,
    policy_names,
    register_policy,
    stints,
)


def lines(*objects: dict[str, object]) -> list[str]:
    return [json.dumps(o) for o in objects]


GOOD = lines(
    {"t": 0, "type": "assign", "agent": "a1", "task": "T1"},
    {"t": 35.2, "type": "progress", "agent": "a1", "task": "T1", "progress": 10, "note": "x"},
    {"t": 50, "type": "activity", "agent": "a1"},
    {"t": 51, "type": "write", "agent": "a1"},
    {"t": 400, "type": "conflict_start", "agent": "a1"},
    {"t": 700, "type": "conflict_end", "agent": "a1"},
    {"t": 900, "type": "complete", "agent": "a1", "task": "T1"},
    {"t": 950, "type": "disconnect", "agent": "a1"},
    {"t": 1000, "type": "assign", "agent": "a2", "task": "T7"},
    {"t": 1200, "type": "death", "agent": "a2", "task": "T7"},
)


def test_a_good_trace_parses_and_unknown_fields_are_ignored() -> None:
    events = parse_trace(GOOD)
    assert [e.type for e in events] == [*list(TraceType)[:8], TraceType.ASSIGN, TraceType.DEATH]
    assert events[1].progress == 10 and events[1].line == 2
    again = parse_trace(dump_trace(events).splitlines())
    assert [e.to_dict() for e in again] == [e.to_dict() for e in events]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"t": 60, "type": "teleport", "agent": "a1"}', "unknown type"),
        ('{"t": -1, "type": "activity", "agent": "a1"}', "t must be"),
        ('{"t": 60, "type": "activity"}', "agent"),
        ('{"t": 60, "type": "progress", "agent": "a1", "progress": 5}', "needs a task"),
        ('{"t": 60, "type": "progress", "agent": "a1", "task": "T1", "progress": 101}', "0 to"),
        ('{"t": 10, "type": "activity", "agent": "a1"}', "earlier than"),
    ],
)
def test_a_malformed_line_is_refused_with_its_number(bad: str, why: str) -> None:
    text = [*lines({"t": 0, "type": "assign", "agent": "a1", "task": "T1"}), "", *GOOD[1:2], bad]
    with pytest.raises(InvalidInput) as caught:
        parse_trace(text)
    assert caught.value.details["line"] == 4
    assert "line 4" in caught.value.message and why in caught.value.message


def test_a_dead_agent_sends_nothing_more_but_may_be_assigned_again() -> None:
    dead = lines(
        {"t": 0, "type": "assign", "agent": "a1", "task": "T1"},
        {"t": 5, "type": "death", "agent": "a1"},
    )
    with pytest.raises(InvalidInput, match="line 3"):
        parse_trace([*dead, *lines({"t": 6, "type": "activity", "agent": "a1"})])
    reborn = parse_trace([*dead, *lines({"t": 9, "type": "assign", "agent": "a1", "task": "T2"})])
    assert len(stints(reborn)) == 2


def test_stints_end_at_complete_death_or_the_end_and_know_blips_and_closed_sessions() -> None:
    events = parse_trace(
        lines(
            {"t": 0, "type": "assign", "agent": "a1", "task": "T1"},
            {"t": 0, "type": "assign", "agent": "a2", "task": "T2"},
            {"t": 0, "type": "assign", "agent": "a3", "task": "T3"},
            {"t": 10, "type": "disconnect", "agent": "a1"},
            {"t": 12, "type": "write", "agent": "a1"},
            {"t": 15, "type": "activity", "agent": "a1"},
            {"t": 20, "type": "complete", "agent": "a1", "task": "T1"},
            {"t": 30, "type": "disconnect", "agent": "a2"},
            {"t": 30, "type": "death", "agent": "a2"},
            {"t": 40, "type": "death", "agent": "a3", "task": "T3"},
            {"t": 50, "type": "activity", "agent": "a4"},
        )
    )
    one, two, three = stints(events)
    assert (one.ending, one.end, one.blips, one.dead) == ("complete", 20, 1, False)
    assert (two.ending, two.death, two.closed_session) == ("death", 30, True)
    assert (three.ending, three.death, three.closed_session) == ("death", 40, False)
    open_ended = stints(events[:3])
    assert [s.ending for s in open_ended] == ["end"] * 3 and open_ended[0].end == 0


def test_a_disconnect_says_how_it_ended_closed_by_default() -> None:
    events = parse_trace(
        lines(
            {"t": 0, "type": "disconnect", "agent": "a1"},
            {"t": 1, "type": "disconnect", "agent": "a1", "how": "dropped"},
            {"t": 2, "type": "disconnect", "agent": "a1", "how": "closed"},
            {"t": 3, "type": "activity", "agent": "a1", "how": "whatever"},
        )
    )
    assert [(e.how, e.dropped) for e in events[:3]] == [
        ("closed", False),
        ("dropped", True),
        ("closed", False),
    ]
    assert not events[3].dropped and "how" not in events[3].to_dict()
    assert [e.to_dict().get("how") for e in events[:3]] == ["closed", "dropped", "closed"]
    again = parse_trace(dump_trace(events).splitlines())
    assert [e.how for e in again] == [e.how for e in events]


@pytest.mark.parametrize("how", ["hung up", 1, None, ["dropped"]])
def test_a_disconnect_with_an_unknown_how_is_refused(how: object) -> None:
    bad = lines({"t": 0, "type": "disconnect", "agent": "a1", "how": how})
    with pytest.raises(InvalidInput) as caught:
        parse_trace(bad)
    assert caught.value.details == {"line": 1, "field": "how"}
    assert "how must be one of closed, dropped" in caught.value.message


def test_stints_tell_explicit_closes_from_drops_and_a_close_after_a_drop_is_explicit() -> None:
    def death_after(*hows: str) -> tuple[bool, bool]:
        trace = [{"t": 0, "type": "assign", "agent": "a1", "task": "T1"}]
        trace += [{"t": 5, "type": "disconnect", "agent": "a1", "how": how} for how in hows]
        trace += [{"t": 9, "type": "death", "agent": "a1"}]
        (stint,) = stints(parse_trace(lines(*trace)))
        return stint.closed_session, stint.dropped_session

    assert death_after() == (False, False)
    assert death_after("closed") == (True, False)
    assert death_after("dropped") == (False, True)
    assert death_after("dropped", "closed") == (True, False)
    assert death_after("closed", "dropped") == (True, False)
    assert death_after("dropped", "dropped") == (False, True)


def test_policies_by_name_with_overrides_and_registered_ones() -> None:
    assert {"spec", "seed", "fixed"} <= set(policy_names())
    assert lab_policy("seed").detector.kind == "seed"
    tuned = lab_policy("spec:silence_multiplier=3, max_conflict_extensions=1")
    assert tuned.detector.silence_multiplier == 3.0 and tuned.max_conflict_extensions == 1
    with pytest.raises(InvalidInput, match="unknown policy"):
        lab_policy("psychic")
    with pytest.raises(InvalidInput, match="no field"):
        lab_policy("spec:colour=blue")
    with pytest.raises(InvalidInput, match="not a float"):
        lab_policy("spec:silence_multiplier=lots")
    register_policy("lab-test-patient", lambda: Policy(max_conflict_extensions=5), replace=True)
    assert lab_policy("lab-test-patient").max_conflict_extensions == 5
    with pytest.raises(InvalidInput, match="already registered"):
        register_policy("lab-test-patient", Policy)
