"""/metrics on a live server: it parses as Prometheus text and moves with use."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.dashboard.conftest import Dash
from tests.support.server import wait_until

pytestmark = pytest.mark.xdist_group("dashboard")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(dash: Dash) -> Samples:
    answer = httpx.get(dash.server.url + "/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_counters_and_histograms_move_as_the_api_is_used(dash: Dash) -> None:
    before = scrape(dash)
    progress_route = "/api/v1/tasks/{task_id}/progress"
    added = dash.admin().post("/boards/alpha/tasks", json={"id": "metered", "title": "Metered"})
    assert added.status_code == 201, added.text
    meter = dash.agent("meter")
    assigned = dash.admin().post("/boards/alpha/tasks/metered/assign", json={"agent_id": "meter"})
    assert assigned.status_code == 200, assigned.text
    for progress in (30, 50):
        report = meter.post("/tasks/metered/progress", json={"progress": progress})
        assert report.status_code == 200, report.text
    assert meter.get("/me").status_code == 200  # a touch of its lease
    after = scrape(dash)

    assert value(after, "tenure_renewals_total") >= value(before, "tenure_renewals_total") + 2
    assert value(after, "tenure_touches_total") > value(before, "tenure_touches_total")
    count = "tenure_api_request_seconds_count"
    assert (
        value(after, count, route=progress_route) >= value(before, count, route=progress_route) + 2
    )
    assert value(after, "tenure_leases", state="active") >= 1
    assert ("tenure_leases_flagged", frozenset({("flag", "stalled")})) in after
    for reason in ("lease_expired", "agent_disconnected", "validation_timeout"):
        assert ("tenure_recoveries_total", frozenset({("reason", reason)})) in after
    for kind in ("reclaimed", "lost"):
        assert ("tenure_false_recoveries_total", frozenset({("kind", kind)})) in after


def test_recoveries_dead_letters_detection_and_monitor_passes_are_counted(dash: Dash) -> None:
    # The session's `doomed` task is abandoned twice by its agent, then dead-lettered.
    wait_until(lambda: dash.task("alpha", "doomed")["dead_lettered"], 30, 0.2, "a dead letter")
    samples = scrape(dash)
    assert value(samples, "tenure_recoveries_total", reason="lease_expired") >= 2
    assert value(samples, "tenure_dead_letters_total") >= 1
    assert value(samples, "tenure_detection_latency_seconds_count") >= 2
    passes = value(samples, "tenure_monitor_pass_seconds_count")
    assert passes > 0
    wait_until(
        lambda: value(scrape(dash), "tenure_monitor_pass_seconds_count") > passes,
        10,
        0.2,
        "another monitor pass",
    )


def test_the_dashboard_api_is_timed_by_route_and_its_cookie_works_over_plain_http(
    dash: Dash,
) -> None:
    with httpx.Client(base_url=dash.server.url, timeout=10) as browser:
        login = browser.post("/login", json={"token": dash.viewer_alpha})
        assert login.status_code == 200, login.text
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
        assert browser.get("/ui/api/boards/alpha/tasks").status_code == 200
        refused = browser.post("/ui/api/boards/alpha/tasks/ranking/unassign")
        assert refused.status_code == 403
        cross = browser.post(
            "/login", json={"token": dash.viewer_alpha}, headers={"Origin": "http://evil.example"}
        )
        assert cross.status_code == 403
    route = "/ui/api/boards/{board_id}/tasks"
    assert value(scrape(dash), "tenure_api_request_seconds_count", route=route) >= 1
