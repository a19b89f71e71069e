"""Values computed once per key (`Memo`): records decoded from SQLite rows,
and the text of times and flag sets that `tenure.store.rows` writes and reads.

SQLite hands a row back exactly as it was written: the same text, numbers and
NULLs. A task row is read again and again while its lease is renewed, and a
lease row is read by the next call of its holder just as the previous call
wrote it. Decoding such a row (some twenty timestamps of a lease parsed from
text) is a good part of a call's cost, so the decoded record is kept, keyed by
the row itself: equal rows decode to equal records, and records are frozen, so
a remembered one may be handed to any number of callers.

A write remembers the row it wrote with the record it came from, but only a
record that decoding its row would rebuild exactly, value for value and type
for type (`lease_round_trips`); anything else is decoded when next read.

PostgreSQL rows carry driver values (lists for jsonb) that cannot be keys,
and reads there cost a round trip that dwarfs decoding: only the SQLite
store uses this.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Generic, TypeVar

from tenure.core.model import EndReason, Lease, LeaseFlag

K = TypeVar("K")
R = TypeVar("R")

#: Keys kept per memo; a memo is emptied when full (cheaper than
#: an LRU's bookkeeping on every hit, and a full memo is a rare event).
MEMO_SIZE = 4096


class Memo(Generic[K, R]):
    """What a pure function gives for each key, computed once per key: a
    record by the row it was decoded from, a time by its text. Bounded by
    `size` (emptied when full)."""

    __slots__ = ("_compute", "_size", "records")

    def __init__(self, compute: Callable[[K], R], size: int = MEMO_SIZE) -> None:
        self._compute = compute
        self._size = size
        #: Key -> what it gives; read-only for callers (a hot loop may look
        #: up here directly, then call `of` on a miss).
        self.records: dict[K, R] = {}

    def of(self, key: K) -> R:
        """What `key` gives, computed once."""
        record = self.records.get(key)
        if record is None:
            record = self._compute(key)
            self.remember(key, record)
        return record

    def remember(self, key: K, record: R) -> None:
        """Keep `record` as what `key` gives (the caller vouches for it)."""
        if len(self.records) >= self._size:
            self.records.clear()
        self.records[key] = record

    def __len__(self) -> int:
        return len(self.records)


def _utc(moment: datetime | None) -> bool:
    return moment is None or (type(moment) is datetime and moment.tzinfo is UTC)


def lease_round_trips(lease: Lease) -> bool:
    """True when decoding `lease`'s row gives `lease` back exactly: every time an
    aware UTC datetime, every count an int, every float a float, every flag
    and reason its enum. (A lease built with, say, an int grace would come
    back with a float one: equal, but not the same to a JSON view.)"""
    # Spelled out field by field: this runs on every lease write.
    return (
        _utc(lease.assigned_at)
        and _utc(lease.expires_at)
        and _utc(lease.recover_after)
        and _utc(lease.last_renewed_at)
        and _utc(lease.last_signal_at)
        and _utc(lease.suspect_since)
        and _utc(lease.progress_changed_at)
        and _utc(lease.ended_at)
        and _utc(lease.last_call_at)
        and type(lease.epoch) is int
        and type(lease.version) is int
        and type(lease.renewal_count) is int
        and type(lease.progress) is int
        and type(lease.conflict_extensions) is int
        and type(lease.renewals_without_progress) is int
        and type(lease.max_progress) is int
        and type(lease.grace_s) is float
        and type(lease.suspect_dropped) is bool
        and type(lease.message) is str
        and all(_utc(stamp) for stamp in lease.progress_stamps)
        and all(type(gap) is float for gap in lease.signal_gaps)
        and all(type(flag) is LeaseFlag for flag in lease.flags)
        and (lease.end_reason is None or type(lease.end_reason) is EndReason)
    )
