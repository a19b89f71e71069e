"""The row mapping every SQL store shares: times keep their order as text, and
records round-trip in both time forms (ISO text for SQLite, datetimes for
PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from contract_records import full_lease, full_task
from hypothesis import given
from hypothesis import strategies as st

from tenure.core.errors import InvalidInput
from tenure.store import rows

_zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
_moments = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30), timezones=_zones
)


@given(_moments, _moments)
def test_encoded_times_sort_as_the_times_do(a: datetime, b: datetime) -> None:
    ea, eb = rows.encode_time(a), rows.encode_time(b)
    assert ea is not None and eb is not None
    assert (ea < eb) == (a < b) and (ea == eb) == (a == b)
    assert len(ea) == len(eb)


@given(_moments)
def test_times_round_trip_in_utc(moment: datetime) -> None:
    back = rows.decode_time(rows.encode_time(moment))
    assert back == moment and back is not None and back.tzinfo is UTC
    assert rows.decode_time(rows.keep_time(moment)) == moment


def test_a_naive_time_is_refused_and_read_as_utc() -> None:
    with pytest.raises(InvalidInput):
        rows.encode_time(datetime(2026, 1, 1))
    assert rows.decode_time("2026-01-01T00:00:00") == datetime(2026, 1, 1, tzinfo=UTC)
    assert rows.decode_time(None) is None


@given(st.lists(st.text(max_size=8), max_size=5))
def test_string_tuples_round_trip(values: list[str]) -> None:
    assert rows.load_strings(rows.dump_strings(values)) == tuple(values)


def test_records_round_trip_through_rows_in_both_time_forms() -> None:
    for encoder in (rows.encode_time, rows.keep_time):
        lease = full_lease()
        assert rows.lease_from_row(rows.lease_to_row(lease, encoder)) == lease
        task = full_task()
        assert rows.task_from_row(rows.task_to_row(task, encoder)) == task
    assert len(rows.lease_to_row(full_lease())) == len(rows.LEASE_COLUMNS)
    assert len(rows.task_to_row(full_task())) == len(rows.TASK_COLUMNS)


@given(st.lists(_moments, max_size=6))
def test_progress_stamps_are_written_as_json_would_and_read_back(stamps: list[datetime]) -> None:
    text = rows.dump_stamps(tuple(stamps))
    assert text == rows.dump_json([rows.encode_time(s) for s in stamps])
    assert rows.load_stamps(text) == tuple(stamps)


def test_progress_stamps_in_any_json_spelling_are_read() -> None:
    # Written by hand, a backup or another tool: spaces, escapes, other zones.
    want = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, 3, tzinfo=UTC))
    for text in (
        '["2026-01-01T00:00:00+00:00", "2026-01-02T03:00:00+00:00"]',
        '["2026-01-01T00:00:00\\u002b00:00","2026-01-02T03:00:00+00:00"]',
        '["2026-01-01T05:30:00+05:30","2026-01-02T03:00:00"]',
    ):
        assert rows.load_stamps(text) == want
        assert all(s.tzinfo is UTC for s in rows.load_stamps(text))
    assert rows.load_stamps("[]") == () and rows.load_stamps([]) == ()
    with pytest.raises(ValueError):
        rows.load_stamps('["yesterday"]')


@given(st.lists(st.floats(allow_nan=False) | st.integers(-(10**6), 10**6), max_size=6))
def test_rhythm_gaps_are_written_as_json_would_and_read_back(gaps: list[float]) -> None:
    text = rows.dump_gaps(tuple(gaps))
    assert text == rows.dump_json(gaps)
    back = rows.load_gaps(text)
    assert back == tuple(float(g) for g in gaps)
    assert all(type(g) is float for g in back)
