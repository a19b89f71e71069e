"""Clocks: the one place outside the stores where Tenure may read the time.

The core never reads a clock; stores read one per transaction and hand the
moment to the core. Tests and the lab inject a `FakeClock` that only moves
when told, and never backwards.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol

UTC = UTC


class Clock(Protocol):
    """Something that says what time it is (aware UTC)."""

    def now(self) -> datetime: ...


class SystemClock:
    """The process's wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that moves only through `advance` or `set`, and never backwards.

    Thread-safe, since stores read it from their own threads.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware start time")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float | timedelta) -> datetime:
        """Move forward by `seconds` (>= 0) and return the new time."""
        step = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if step < timedelta(0):
            raise ValueError("a FakeClock never goes backwards")
        with self._lock:
            self._now += step
            return self._now

    def set(self, moment: datetime) -> datetime:
        """Jump to `moment`, which may not be earlier than now."""
        if moment.tzinfo is None:
            raise ValueError("FakeClock.set needs an aware time")
        with self._lock:
            if moment < self._now:
                raise ValueError("a FakeClock never goes backwards")
            self._now = moment.astimezone(UTC)
            return self._now


class OffsetClock:
    """The system clock shifted by a fixed offset: a process with a skewed clock."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset
