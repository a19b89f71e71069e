"""Where the service sends what happened once a unit of work has committed:
counters, telemetry and detection times (`tenure.telemetry` has the real one)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from tenure.core.decisions import Change, ChangeKind
from tenure.core.model import Counter


class Sink(Protocol):
    """Where post-commit effects go: metrics and telemetry (see `tenure.telemetry`)."""

    def count(self, counter: str, n: int = 1) -> None:
        """Count one happening (a `tenure.core.model.Counter` value)."""

    def lease_expired(self, payload: dict[str, Any]) -> None:
        """The `lease_expired` telemetry event, fired after a recovery commits."""

    def detection(self, seconds: float) -> None:
        """Seconds from a lease's expiry to its recovery."""


class NullSink:
    """A sink that drops everything (libraries and tests that do not care)."""

    def count(self, counter: str, n: int = 1) -> None:
        pass

    def lease_expired(self, payload: dict[str, Any]) -> None:
        pass

    def detection(self, seconds: float) -> None:
        pass


def publish(sink: Sink, changes: Iterable[Change]) -> None:
    """Hand a committed unit of work's changes to `sink`: their counters,
    renewals and touches, and the telemetry of recoveries."""
    for change in changes:
        for counter in change.counters:
            sink.count(str(counter))
        # Renewals and touches are metrics only: not stored per board, since
        # counting each would add a write to the hottest path.
        if change.kind is ChangeKind.RENEWED:
            sink.count(str(Counter.RENEWALS))
        elif change.kind is ChangeKind.TOUCHED:
            sink.count(str(Counter.TOUCHES))
        if change.telemetry is not None:
            sink.lease_expired(change.telemetry)
            latency = change.telemetry.get("detection_latency_s")
            if isinstance(latency, int | float):
                sink.detection(float(latency))
