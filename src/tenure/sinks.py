"""Where the service sends what happened once a unit of work has committed:
counters, telemetry and detection times (`tenure.telemetry` has the real one)."""

from __future__ import annotations

from typing import Any, Protocol


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
