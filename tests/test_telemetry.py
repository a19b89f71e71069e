"""Telemetry: metrics read back through the Prometheus text parser, sinks, logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tenure.core.model import Counter, LeaseFlag, LeaseState
from tenure.telemetry import LeaseGauges, LogSink, Telemetry, configure_logging


def _samples(telemetry: Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the rendered metrics, keyed by name and sorted labels."""
    text = telemetry.render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(telemetry: Telemetry, name: str, **labels: str) -> float:
    return _samples(telemetry)[(name, tuple(sorted(labels.items())))]


class _Recorder:
    def __init__(self) -> None:
        self.payloads: list[Mapping[str, Any]] = []

    def lease_expired(self, payload: Mapping[str, Any]) -> None:
        self.payloads.append(payload)


class _Broken:
    def lease_expired(self, payload: Mapping[str, Any]) -> None:
        raise RuntimeError("sink down")


PAYLOAD = {
    "event": "lease_expired",
    "task_id": "t-1",
    "agent_id": "a-1",
    "task_held_minutes": 12.5,
    "progress_pct_at_expiry": 40,
    "recovery_attempted": True,
}


@pytest.mark.parametrize(
    ("counter", "metric", "labels"),
    [
        (Counter.RENEWALS, "tenure_renewals_total", {}),
        (Counter.TOUCHES, "tenure_touches_total", {}),
        (Counter.REVIVALS, "tenure_revivals_total", {}),
        (Counter.STALE_REFUSED, "tenure_stale_refusals_total", {}),
        (Counter.STALE_LEASES_RELEASED, "tenure_stale_leases_released_total", {}),
        (Counter.DEAD_LETTERS, "tenure_dead_letters_total", {}),
        (Counter.ESCALATIONS, "tenure_escalations_total", {}),
        (Counter.RECOVERIES_LEASE_EXPIRED, "tenure_recoveries_total", {"reason": "lease_expired"}),
        (
            Counter.RECOVERIES_AGENT_DISCONNECTED,
            "tenure_recoveries_total",
            {"reason": "agent_disconnected"},
        ),
        (
            Counter.RECOVERIES_VALIDATION_TIMEOUT,
            "tenure_recoveries_total",
            {"reason": "validation_timeout"},
        ),
        (Counter.FALSE_RECOVERY_RECLAIMED, "tenure_false_recoveries_total", {"kind": "reclaimed"}),
        (Counter.FALSE_RECOVERY_LOST, "tenure_false_recoveries_total", {"kind": "lost"}),
        (
            Counter.EXTENSIONS_MERGE_CONFLICT,
            "tenure_extensions_total",
            {"reason": "merge_conflict"},
        ),
        (Counter.EXTENSIONS_VALIDATION, "tenure_extensions_total", {"reason": "validation"}),
    ],
)
def test_each_core_counter_moves_its_metric(
    counter: Counter, metric: str, labels: dict[str, str]
) -> None:
    telemetry = Telemetry(sinks=[])
    assert _value(telemetry, metric, **labels) == 0
    telemetry.count(str(counter))
    telemetry.count(counter, 2)
    assert _value(telemetry, metric, **labels) == 3


def test_every_core_counter_has_a_metric(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = Telemetry(sinks=[])
    with caplog.at_level(logging.WARNING, logger="tenure.telemetry"):
        for counter in Counter:
            telemetry.count(counter)
    assert caplog.records == []


def test_an_unknown_counter_is_skipped_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = Telemetry(sinks=[])
    before = _samples(telemetry)
    with caplog.at_level(logging.WARNING, logger="tenure.telemetry"):
        telemetry.count("mystery")
        telemetry.count("mystery")
    assert [r.getMessage() for r in caplog.records] == [
        "no metric for counter 'mystery'; it is not exported"
    ]
    assert _samples(telemetry) == before


def test_a_new_reason_gets_its_own_series() -> None:
    telemetry = Telemetry(sinks=[])
    telemetry.count("recoveries.released")
    assert _value(telemetry, "tenure_recoveries_total", reason="released") == 1


def test_two_telemetries_in_one_process_do_not_share_metrics() -> None:
    first, second = Telemetry(sinks=[]), Telemetry(sinks=[])
    first.count(Counter.RENEWALS)
    assert _value(first, "tenure_renewals_total") == 1
    assert _value(second, "tenure_renewals_total") == 0


def test_histograms_observe_passes_requests_and_detection() -> None:
    telemetry = Telemetry(sinks=[])
    telemetry.observe_pass(0.02)
    telemetry.observe_pass(0.5)
    telemetry.observe_request("/api/v1/tasks/{task_id}", 0.003)
    telemetry.observe_detection(70.0)
    telemetry.detection(95.5)
    assert _value(telemetry, "tenure_monitor_pass_seconds_count") == 2
    assert _value(telemetry, "tenure_monitor_pass_seconds_sum") == pytest.approx(0.52)
    assert _value(telemetry, "tenure_monitor_pass_seconds_bucket", le="0.025") == 1
    route = "/api/v1/tasks/{task_id}"
    assert _value(telemetry, "tenure_api_request_seconds_count", route=route) == 1
    assert _value(telemetry, "tenure_detection_latency_seconds_count") == 2
    assert _value(telemetry, "tenure_detection_latency_seconds_bucket", le="75.0") == 1
    assert _value(telemetry, "tenure_detection_latency_seconds_bucket", le="120.0") == 2


def test_lease_gauges_follow_the_statistics() -> None:
    telemetry = Telemetry(sinks=[])
    for state in LeaseState:
        assert _value(telemetry, "tenure_leases", state=str(state)) == 0
    telemetry.set_lease_gauges(
        {"by_state": {"active": 3, "in_grace": 1}, "by_flag": {"stalled": 2}, "live": 4}
    )
    assert _value(telemetry, "tenure_leases", state="active") == 3
    assert _value(telemetry, "tenure_leases", state="in_grace") == 1
    assert _value(telemetry, "tenure_leases_flagged", flag="stalled") == 2
    telemetry.set_lease_gauges({"by_state": {"in_grace": 1}, "by_flag": {}})
    assert _value(telemetry, "tenure_leases", state="active") == 0
    assert _value(telemetry, "tenure_leases_flagged", flag="stalled") == 0
    for flag in LeaseFlag:
        assert ("tenure_leases_flagged", (("flag", str(flag)),)) in _samples(telemetry)


def test_lease_expired_is_counted_and_reaches_every_sink_even_past_a_broken_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = _Recorder()
    telemetry = Telemetry(sinks=[_Broken(), recorder])
    with caplog.at_level(logging.ERROR, logger="tenure.telemetry"):
        telemetry.lease_expired(PAYLOAD)
    assert recorder.payloads == [PAYLOAD]
    assert "failed on lease_expired" in caplog.text
    assert _value(telemetry, "tenure_telemetry_events_total", event="lease_expired") == 1


def test_the_default_sink_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = Telemetry()
    assert [type(sink) for sink in telemetry.sinks] == [LogSink]
    with caplog.at_level(logging.INFO, logger="tenure.telemetry"):
        telemetry.lease_expired(PAYLOAD)
    (record,) = caplog.records
    assert record.getMessage() == "lease_expired: task t-1 of a-1 recovered after 12.5 min at 40%"
    assert record.telemetry == PAYLOAD  # type: ignore[attr-defined]


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_json_logs_are_one_object_per_line_with_extras() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    logger = logging.getLogger("tenure.test")
    logger.debug("hidden")
    logger.info("pass done: %d recovered", 2, extra={"recovered": 2})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    first, second = map(json.loads, stream.getvalue().splitlines())
    assert first["message"] == "pass done: 2 recovered"
    assert first["level"] == "INFO"
    assert first["logger"] == "tenure.test"
    assert first["recovered"] == 2
    assert first["ts"].endswith("Z")
    assert second["message"] == "failed"
    assert "ValueError: boom" in second["exc"]


@pytest.mark.usefixtures("restore_root_logger")
def test_text_logs_are_for_people_and_reconfiguring_replaces_the_handler() -> None:
    old, stream = io.StringIO(), io.StringIO()
    configure_logging("json", "DEBUG", stream=old)
    configure_logging("text", logging.WARNING, stream=stream)
    logger = logging.getLogger("tenure.test")
    logger.info("quiet")
    logger.warning("monitor stopped", extra={"passes": 3})
    try:
        raise KeyError("k")
    except KeyError:
        logger.error("bad", exc_info=True)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(" WARNING tenure.test: monitor stopped passes=3")
    assert lines[1].endswith(" ERROR tenure.test: bad")
    assert "KeyError" in stream.getvalue()
    assert old.getvalue() == ""
    assert sum(getattr(h, "_tenure", False) for h in logging.getLogger().handlers) == 1


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml")


async def test_lease_gauges_are_read_at_most_once_a_max_age_and_once_for_scrapes_together() -> None:
    telemetry = Telemetry(sinks=[])
    now = [100.0]
    reads: list[float] = []
    gate = asyncio.Event()

    async def read() -> dict[str, Any]:
        reads.append(now[0])
        await gate.wait()
        return {"by_state": {"active": len(reads)}, "by_flag": {}}

    gauges = LeaseGauges(telemetry, read, max_age_s=1.0, clock=lambda: now[0])
    gate.set()
    await gauges.refresh()
    now[0] += 0.5
    await gauges.refresh()  # within the max age: the last reading stands
    assert reads == [100.0] and _value(telemetry, "tenure_leases", state="active") == 1
    now[0] += 0.5
    gate.clear()
    together = [asyncio.create_task(gauges.refresh()) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*together)
    assert reads == [100.0, 101.0]
    assert _value(telemetry, "tenure_leases", state="active") == 2
