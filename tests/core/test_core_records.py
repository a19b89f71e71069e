"""The shared records, errors and policy lookups the core hands to everyone else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from corekit import Bench, at

from tenure.core import UNCHANGED, Change, ChangeKind, ConservativePolicy, DetectorPolicy, Policy
from tenure.core.errors import (
    ERROR_CLASSES,
    InvalidInput,
    LeaseLost,
    TenureError,
    error_from_dict,
)
from tenure.core.model import (
    Handoff,
    StoredEvent,
    check_id,
    ensure_utc,
    parse_time,
    seconds,
)
from tenure.core.policy import detector_policy, duration_policy


def test_every_error_round_trips_through_its_wire_shape() -> None:
    for cls in ERROR_CLASSES:
        error = cls("boom", details={"k": 1})
        payload = error.to_dict()
        assert payload == {"error": {"code": cls.code, "message": "boom", "details": {"k": 1}}}
        again = error_from_dict(payload)
        assert type(again) is cls and again.details == {"k": 1}
    unknown = error_from_dict({"error": {"code": "weird", "message": "m"}})
    assert type(unknown) is TenureError and unknown.message == "m"
    assert repr(LeaseLost("gone")) == "LeaseLost('gone', details={})"


def test_a_handoff_round_trips_through_a_dict() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(20)
    bench.report(progress=30, message="m", head_sha="abcd")
    bench.recover_now()
    handoff = bench.task().handoff
    assert handoff is not None
    data = handoff.to_dict()
    assert Handoff.from_dict(data) == Handoff.from_dict(Handoff.from_dict(data).to_dict())
    assert Handoff.from_dict(data).previous_progress == 30
    naive = dict(data, recovered_at="2026-01-01T12:00:00")
    assert Handoff.from_dict(naive).recovered_at.tzinfo is not None


def test_times_parse_as_utc_and_naive_ones_are_taken_as_utc() -> None:
    assert parse_time("2026-01-01T12:00:00") == datetime(2026, 1, 1, 12, tzinfo=UTC)
    plus_two = datetime(2026, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    assert parse_time(plus_two) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert ensure_utc(plus_two) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert seconds(1.5) == timedelta(milliseconds=1500)


def test_ids_follow_the_glossary() -> None:
    assert check_id("agent-1.b_2") == "agent-1.b_2"
    for bad in ("", "-a", ".a", "a/b", "x" * 65):
        with pytest.raises(InvalidInput):
            check_id(bad)


def test_a_stored_event_and_a_lease_describe_themselves() -> None:
    event = StoredEvent(7, "lease.created", "b", at(0), "t1", "a1", 1, {"x": 1})
    assert event.to_dict()["at"] == at(0).isoformat() and event.to_dict()["id"] == 7
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(5)
    bench.report(progress=1)
    lease = bench.live()
    assert lease is not None and lease.report_count == 1


def test_a_change_knows_whether_it_writes() -> None:
    assert not UNCHANGED.writes
    assert Change(ChangeKind.REFUSED, counters=()).writes is False
    bench = Bench()
    bench.add()
    bench.claim()
    assert Change(ChangeKind.TOUCHED, lease=bench.live()).writes


def test_policies_are_chosen_by_name() -> None:
    assert isinstance(duration_policy("conservative"), ConservativePolicy)
    assert duration_policy("progressive").name == "progressive"
    with pytest.raises(InvalidInput):
        duration_policy("eager")
    assert detector_policy("seed", 3.0).silence_multiplier == 3.0
    with pytest.raises(InvalidInput):
        detector_policy("psychic")


def test_a_failed_validation_under_the_conservative_policy_renews_as_near_done() -> None:
    bench = Bench(
        policy=Policy(durations=ConservativePolicy(), detector=DetectorPolicy(kind="spec"))
    )
    bench.add()
    bench.claim()
    bench.set(60)
    bench.report(status="completed", validate=True)
    bench.set(120)
    bench.validation(False)
    lease = bench.live()
    assert lease is not None
    assert lease.expires_at == at(120) + timedelta(hours=2)  # > 75 %: 2 h, n = 0
