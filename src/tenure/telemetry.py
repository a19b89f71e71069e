"""What Tenure tells its operators: logs, Prometheus metrics, telemetry events.

- `configure_logging(format, level)`: one handler on the root logger, text for
  people by default, JSON lines with `log.format = "json"`.
- `Telemetry`: Prometheus metrics on a registry of its own (never the global
  one, so tests and the lab can build several apps in one process), plus the
  `lease_expired` telemetry event handed to `TelemetrySink`s. The default sink
  writes the event to the log; nothing leaves the machine unless a sink that
  sends it somewhere is configured.

The Coordinator calls `count`, `lease_expired` and `detection` after each
commit (a `Telemetry` is a valid `tenure.service.Sink`); the monitor calls
`observe_pass`; the HTTP layer calls `observe_request` and serves `render()`
at /metrics; statistics refresh the lease gauges through `set_lease_gauges`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, TextIO

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from tenure.core.model import RECOVERY_REASONS, LeaseFlag, LeaseState

__all__ = [
    "CONTENT_TYPE_LATEST",
    "LogSink",
    "Telemetry",
    "TelemetrySink",
    "configure_logging",
]

log = logging.getLogger("tenure.telemetry")

# ---------------------------------------------------------------------- logging

# Attributes every LogRecord has; anything else on a record came from `extra=`.
# uvicorn adds `color_message` (the message with ANSI colours) to its records;
# it repeats the message, so it is not shown as an extra.
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}
)


def _utc_timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS}


class TextFormatter(logging.Formatter):
    """`2026-01-02T03:04:05.678Z INFO tenure.monitor: message key=value`."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{key}={_compact(value)}" for key, value in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, any extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _utc_timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= _extras(record)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def _compact(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


_FORMATTERS: dict[str, type[logging.Formatter]] = {"text": TextFormatter, "json": JsonFormatter}


def configure_logging(
    format: str = "text", level: str | int = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record at `level` or above to `stream` (stderr) as text or JSON.

    Idempotent: a second call replaces the handler the first one installed
    rather than adding another. Returns the installed handler.
    """
    if format not in _FORMATTERS:
        raise ValueError(f"log format must be one of {sorted(_FORMATTERS)}, not {format!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tenure", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_FORMATTERS[format]())
    handler._tenure = True  # type: ignore[attr-defined]  # marks the handler as ours
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


# ---------------------------------------------------------------- telemetry sinks


class TelemetrySink(Protocol):
    """Receives telemetry events. Called after commit; must not raise (it is logged if it does)."""

    def lease_expired(self, payload: Mapping[str, Any]) -> None:
        """A recovery committed: `task_held_minutes`, `progress_pct_at_expiry`,
        `recovery_attempted`, and the board, task, agent and reason."""


class LogSink:
    """The default sink: the event goes to the log, and nowhere else."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    def lease_expired(self, payload: Mapping[str, Any]) -> None:
        self.logger.info(
            "lease_expired: task %s of %s recovered after %s min at %s%%",
            payload.get("task_id"),
            payload.get("agent_id"),
            payload.get("task_held_minutes"),
            payload.get("progress_pct_at_expiry"),
            extra={"telemetry": dict(payload)},
        )


# ----------------------------------------------------------------------- metrics

_PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Expiry to recovery: grace (60-90 s) plus up to a monitor interval, or longer under cadence.
_DETECTION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 75.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0)

# Plain counters by their `tenure.core.model.Counter` name.
_PLAIN = {
    "renewals": ("tenure_renewals", "Progress reports that renewed a lease."),
    "touches": ("tenure_touches", "Leases extended by any other call of their holder."),
    "revivals": ("tenure_revivals", "Expired, not yet recovered leases revived by a signal."),
    "stale_refused": ("tenure_stale_refusals", "Calls of a former holder refused as stale."),
    "stale_leases_released": (
        "tenure_stale_leases_released",
        "Leases released because their task was already done or blocked.",
    ),
    "dead_letters": ("tenure_dead_letters", "Tasks blocked after their recovery budget ran out."),
    "escalations": ("tenure_escalations", "Escalations raised for a human to look at."),
}
# Labelled counters: `<prefix>.<label value>` in `tenure.core.model.Counter`.
_LABELLED = {
    "recoveries": ("tenure_recoveries", "Leases recovered by the monitor.", "reason"),
    "false_recovery": (
        "tenure_false_recoveries",
        "Recoveries of a holder that was still alive: reclaimed, or lost to another.",
        "kind",
    ),
    "extensions": ("tenure_extensions", "Lease extensions.", "reason"),
}
_LABEL_VALUES = {
    "recoveries": sorted(str(reason) for reason in RECOVERY_REASONS),
    "false_recovery": ["reclaimed", "lost"],
    "extensions": ["merge_conflict", "validation"],
}


class Telemetry:
    """Tenure's metrics and telemetry events, on a registry of their own."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        sinks: Iterable[TelemetrySink] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.sinks: list[TelemetrySink] = list(sinks) if sinks is not None else [LogSink()]
        self._warned: set[str] = set()
        r = self.registry
        self.counters: dict[str, Counter] = {
            key: Counter(name, doc, registry=r) for key, (name, doc) in _PLAIN.items()
        }
        self.labelled: dict[str, Counter] = {
            key: Counter(name, doc, [label], registry=r)
            for key, (name, doc, label) in _LABELLED.items()
        }
        for key, values in _LABEL_VALUES.items():
            for value in values:  # series exist at 0 before the first happening
                self.labelled[key].labels(value)
        self.telemetry_events = Counter(
            "tenure_telemetry_events", "Telemetry events emitted, by event.", ["event"], registry=r
        )
        self.telemetry_events.labels("lease_expired")
        self.monitor_pass_seconds = Histogram(
            "tenure_monitor_pass_seconds",
            "Duration of one monitor pass.",
            buckets=_PASS_BUCKETS,
            registry=r,
        )
        self.api_request_seconds = Histogram(
            "tenure_api_request_seconds",
            "Duration of API requests, by route template.",
            ["route"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.detection_latency_seconds = Histogram(
            "tenure_detection_latency_seconds",
            "Time from a lease's expiry to its recovery.",
            buckets=_DETECTION_BUCKETS,
            registry=r,
        )
        self.leases = Gauge("tenure_leases", "Leases by state.", ["state"], registry=r)
        self.leases_flagged = Gauge(
            "tenure_leases_flagged", "Live leases by flag.", ["flag"], registry=r
        )
        self.set_lease_gauges({})

    def count(self, counter_name: str, n: int = 1) -> None:
        """Count `n` happenings of a `tenure.core.model.Counter` (e.g. `recoveries.lease_expired`).

        A name this class does not know is logged once and skipped: metrics
        must never break the commit they describe.
        """
        name = str(counter_name)
        if name in self.counters:
            self.counters[name].inc(n)
            return
        prefix, _, label = name.partition(".")
        if label and prefix in self.labelled:
            self.labelled[prefix].labels(label).inc(n)
        elif name not in self._warned:
            self._warned.add(name)
            log.warning("no metric for counter %r; it is not exported", name)

    def lease_expired(self, payload: Mapping[str, Any]) -> None:
        """The `lease_expired` telemetry event: counted, then handed to every sink."""
        self.telemetry_events.labels("lease_expired").inc()
        for sink in self.sinks:
            try:
                sink.lease_expired(payload)
            except Exception:  # a sink's failure must not undo or stop anything
                log.exception("telemetry sink %r failed on lease_expired", sink)

    def observe_pass(self, seconds: float) -> None:
        """One monitor pass took `seconds`."""
        self.monitor_pass_seconds.observe(seconds)

    def observe_detection(self, seconds: float) -> None:
        """A lease was recovered `seconds` after it expired."""
        self.detection_latency_seconds.observe(seconds)

    # The name `tenure.service.Sink` uses for the same thing.
    detection = observe_detection

    def observe_request(self, route: str, seconds: float) -> None:
        """An API request on `route` (the route template, never the raw path) took `seconds`."""
        self.api_request_seconds.labels(route).observe(seconds)

    def set_lease_gauges(self, stats: Mapping[str, Any]) -> None:
        """Set the lease gauges from `tenure.core.stats.statistics` output.

        Reads `stats["by_state"]` and `stats["by_flag"]`; every known state and
        flag is set, to 0 when absent, so a state that empties drops to 0.
        """
        by_state = stats.get("by_state", {})
        by_flag = stats.get("by_flag", {})
        for state in {*map(str, LeaseState), *by_state}:
            self.leases.labels(state).set(by_state.get(state, 0))
        for flag in {*map(str, LeaseFlag), *by_flag}:
            self.leases_flagged.labels(flag).set(by_flag.get(flag, 0))

    def render(self) -> bytes:
        """The metrics in Prometheus text format (serve with `CONTENT_TYPE_LATEST`)."""
        return generate_latest(self.registry)


#: How long a reading of the lease gauges serves later scrapes, seconds.
GAUGES_MAX_AGE_S = 1.0


class LeaseGauges:
    """The lease gauges of `/metrics`, read from the statistics at most once a
    `max_age_s`.

    Reading them counts every live lease in the database (some 30-300 ms at
    100k live leases, by the bench), and `/metrics` asks for no token: scrapes in a loop
    would have the database do that work as often as asked. A scrape within
    `max_age_s` of the last reading is served from it, and scrapes that come
    together wait for one reading.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        read: Callable[[], Awaitable[Mapping[str, Any]]],
        *,
        max_age_s: float = GAUGES_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._telemetry = telemetry
        self._read = read
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._read_at: float | None = None

    async def refresh(self) -> None:
        """Set the gauges from the statistics, unless a recent reading stands."""
        async with self._lock:
            if self._read_at is not None and self._clock() - self._read_at < self._max_age_s:
                return
            self._telemetry.set_lease_gauges(await self._read())
            self._read_at = self._clock()
