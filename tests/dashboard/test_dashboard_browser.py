"""The dashboard in a real browser (Playwright driving Debian's chromium)
against a real server process: sign-in, a live recovery with its handoff,
admin actions, what viewers may and may not see, and a screenshot."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.dashboard.conftest import OUTPUT, Dash, Watched, sign_in
from tests.support.server import new_board, wait_until

pytestmark = pytest.mark.xdist_group("dashboard")

#: Playwright waits (ms): a recovery takes lease 3 s + grace 1 s + a monitor pass.
LIVE_MS = 15_000


@pytest.fixture(scope="module")
def admin_page(browser: Any, dash: Dash) -> Watched:
    return sign_in(browser, dash, dash.server.admin_token)


def card(page: Any, task_id: str, column: str | None = None) -> Any:
    where = f'.column[data-status="{column}"] ' if column else ""
    return page.locator(f'{where}.card[data-task-id="{task_id}"]')


def test_sign_in_sets_a_strict_http_only_cookie_and_the_page_loads_clean(
    admin_page: Watched, dash: Dash
) -> None:
    page = admin_page.page
    cookies = page.context.cookies()
    session = next(c for c in cookies if c["name"] == "tenure_session")
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert dash.server.admin_token not in session["value"]
    card(page, "search-api", "in_progress").wait_for()
    held = card(page, "ranking", "in_progress")
    assert "grace" in held.locator(".agent").inner_text()
    assert "82%" in held.inner_text()
    assert "left" in held.locator(".countdown .left").inner_text()
    assert "phase 4" in held.inner_text()
    assert "tenure/grace-ranking" in held.locator(".branch").inner_text()
    assert "NDCG" in held.locator(".note").inner_text()
    assert card(page, "user-guide", "done").count() == 1
    assert card(page, "ci-cache", "blocked").count() == 1
    assert page.locator('[data-figure="active"] .value').inner_text() != "–"
    assert admin_page.errors == []


def test_a_wrong_token_is_refused_on_the_sign_in_page(browser: Any, dash: Dash) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(dash.server.url + "/login")
    page.fill("#token", "tnr_admin_not-the-token")
    page.click("#sign-in")
    error = page.locator("#login-error")
    error.wait_for(state="visible")
    assert "token" in error.inner_text()
    assert page.url.endswith("/login")
    context.close()


def test_a_task_claimed_then_recovered_shows_its_handoff_without_a_reload(
    admin_page: Watched, dash: Dash
) -> None:
    page = admin_page.page
    page.evaluate("window.__sameDocument = true")
    add = dash.admin().post(
        "/boards/alpha/tasks",
        json={"id": "flaky", "title": "Flaky importer", "priority": "urgent"},
    )
    assert add.status_code == 201, add.text
    card(page, "flaky", "todo").wait_for(timeout=LIVE_MS)
    agent = dash.agent("tony")
    claim = agent.post("/claim").json()
    assert claim["task"]["id"] == "flaky", claim
    report = agent.post(
        "/tasks/flaky/progress",
        json={"progress": 30, "message": "CSV half done", "branch": "tenure/tony-flaky"},
    )
    assert report.status_code == 200, report.text
    card(page, "flaky", "in_progress").wait_for(timeout=LIVE_MS)
    # Tony goes silent: the lease (3 s, grace 1 s) is recovered by the monitor.
    handoff = card(page, "flaky", "todo").locator(".handoff")
    handoff.wait_for(timeout=LIVE_MS)
    text = handoff.inner_text()
    assert "tony" in text and "30%" in text and "lease expired" in text
    assert "tenure/tony-flaky" in text and "CSV half done" in text
    assert page.evaluate("window.__sameDocument") is True
    feed = page.locator("#events").inner_text()
    assert "lease.recovered" in feed
    assert admin_page.errors == []


def test_admin_unassigns_requeues_and_adds_tasks_from_the_page(
    admin_page: Watched, dash: Dash
) -> None:
    page = admin_page.page
    card(page, "parse-logs", "in_progress").locator('button[data-action="unassign"]').click()
    moved = card(page, "parse-logs", "todo")
    moved.locator(".handoff").wait_for(timeout=LIVE_MS)
    assert "unassigned" in moved.inner_text()
    assert dash.task("alpha", "parse-logs")["status"] == "todo"

    card(page, "ci-cache", "blocked").locator('button[data-action="requeue"]').click()
    card(page, "ci-cache", "todo").wait_for(timeout=LIVE_MS)
    assert dash.task("alpha", "ci-cache")["status"] == "todo"

    page.click("#add-task")
    page.fill('#add-form input[name="id"]', "from-the-page")
    page.fill('#add-form input[name="title"]', "Added from the dashboard")
    page.select_option('#add-form select[name="priority"]', "high")
    page.click("#add-submit")
    card(page, "from-the-page", "todo").wait_for(timeout=LIVE_MS)
    assert dash.task("alpha", "from-the-page")["priority"] == "high"
    assert admin_page.errors == []


def test_actions_without_the_csrf_header_are_refused(admin_page: Watched, dash: Dash) -> None:
    assert admin_page.errors == []
    status = admin_page.page.evaluate(
        """async () => (await fetch('/ui/api/boards/alpha/tasks/ranking/unassign',
                          {method: 'POST', credentials: 'same-origin'})).status"""
    )
    assert status == 403
    assert dash.task("alpha", "ranking")["status"] == "in_progress"
    admin_page.errors.clear()  # the browser logs the refusal this test asked for


def test_a_viewer_sees_its_board_without_actions_and_nothing_of_another(
    browser: Any, dash: Dash
) -> None:
    watched = sign_in(browser, dash, dash.viewer_alpha)
    page = watched.page
    card(page, "search-api", "in_progress").wait_for()
    assert page.locator("button[data-action]").count() == 0
    assert page.locator("#add-task").is_hidden()
    options = page.locator("#board-select option").all_inner_texts()
    assert options == ["Alpha (alpha)"]
    assert "beta" not in page.content().lower()
    assert watched.errors == []
    answers = page.evaluate(
        """async () => Promise.all([
             '/ui/api/boards/beta/tasks', '/ui/api/boards/beta/statistics',
             '/ui/api/boards/beta/events', '/ui/api/boards/beta/stream',
           ].map(async (u) => (await fetch(u)).status))"""
    )
    assert answers == [404, 404, 404, 404]
    denied = page.evaluate(
        """async () => (await fetch('/ui/api/boards/alpha/tasks/search-api/unassign', {
             method: 'POST', headers: {'X-CSRF-Token': (await (await fetch('/ui/api/session'))
               .json()).csrf_token}})).status"""
    )
    assert denied == 403
    page.context.close()

    other = sign_in(browser, dash, dash.viewer_beta)
    card(other.page, "beta-secret", "todo").wait_for()
    assert other.page.locator('.card[data-task-id="search-api"]').count() == 0
    assert "alpha" not in other.page.locator("#board-select").inner_text().lower()
    assert other.errors == []
    other.page.context.close()


def test_signing_out_ends_the_session(browser: Any, dash: Dash) -> None:
    watched = sign_in(browser, dash, dash.viewer_beta)
    page = watched.page
    page.click("#sign-out")
    page.wait_for_url("**/login")
    status = page.evaluate("async () => (await fetch('/ui/api/session')).status")
    assert status == 401
    page.goto(dash.server.url + "/")
    page.wait_for_url("**/login")
    page.context.close()


def test_five_hundred_tasks_render_fast_and_events_update_cards_in_place(
    admin_page: Watched, dash: Dash
) -> None:
    page = admin_page.page
    created = dash.admin().post("/boards", json={"id": "big", "name": "Big"})
    assert created.status_code == 201, created.text
    tasks = [{"id": f"b-{n:03d}", "title": f"Task number {n}"} for n in range(500)]
    imported = dash.admin().post("/boards/big/tasks/import", json=tasks)
    assert imported.status_code == 201, imported.text
    page.focus("#board-select")  # opening the selector reads the boards again
    expect(page.locator('#board-select option[value="big"]')).to_have_count(1)
    started = time.monotonic()
    page.select_option("#board-select", "big")
    expect(page.locator('.column[data-status="todo"] .card')).to_have_count(500, timeout=LIVE_MS)
    assert time.monotonic() - started < 5.0
    page.wait_for_selector(".live.on")
    page.evaluate("document.querySelectorAll('.card').forEach((c) => { c.__kept = true; })")

    refetches: list[str] = []
    page.on("request", lambda r: refetches.append(r.url) if "tasks?ids=" in r.url else None)
    admin = dash.admin()
    for n in range(100):
        patched = admin.patch(f"/boards/big/tasks/b-{n:03d}", json={"title": f"Renamed {n}"})
        assert patched.status_code == 200, patched.text
    renamed = page.locator(".card .title", has_text=re.compile(r"^Renamed \d+$"))
    expect(renamed).to_have_count(100, timeout=LIVE_MS)
    # Coalesced: far fewer refetches than events, and only changed cards replaced.
    assert 1 <= len(refetches) <= 30, len(refetches)
    kept = page.evaluate("[...document.querySelectorAll('.card')].filter((c) => c.__kept).length")
    assert kept == 400
    assert page.locator(".column[data-status='todo'] .count").inner_text() == "500"
    assert admin_page.errors == []
    page.select_option("#board-select", "alpha")
    page.wait_for_selector('.card[data-task-id="ranking"]')


def test_a_long_history_shows_only_the_tasks_done_last_and_counts_the_rest(
    admin_page: Watched, dash: Dash
) -> None:
    page = admin_page.page
    history = new_board(dash.server, "history")
    history.add_tasks(*({"id": f"h-{n:03d}", "title": f"Old task {n}"} for n in range(205)))
    worker, _ = history.agent("historian")
    current = worker.post("/claim").json()["task"]["id"]
    for _ in range(205):  # each completion claims the next task in the same call
        done = worker.post(
            f"/tasks/{current}/progress",
            json={"status": "completed", "progress": 100, "claim_next": True},
        )
        assert done.status_code == 200, done.text
        current = (done.json()["next"]["task"] or {}).get("id")
    assert current is None
    page.reload()  # the selector reads the boards at most every 5 s; a load reads them
    expect(page.locator('#board-select option[value="history"]')).to_have_count(1)
    page.select_option("#board-select", "history")
    column = page.locator('.column[data-status="done"]')
    expect(column.locator(".card")).to_have_count(200, timeout=LIVE_MS)
    expect(column.locator(".count")).to_have_text("205")
    expect(column.locator(".older")).to_have_text("and 5 done earlier, not shown")
    # The tasks completed first are the ones left out; the last is on top.
    assert column.locator(".card").first.get_attribute("data-task-id") == "h-204"
    assert card(page, "h-004", "done").count() == 0 and card(page, "h-005", "done").count() == 1
    page.wait_for_selector(".live.on")

    # Live: a new completion goes on top and pushes the oldest shown out.
    history.add_tasks({"id": "h-new", "title": "New task"})
    claimed = worker.post("/claim").json()["task"]["id"]
    assert claimed == "h-new"
    finished = {"status": "completed", "progress": 100}
    assert worker.post("/tasks/h-new/progress", json=finished).status_code == 200
    newest = column.locator(".card").first
    expect(newest).to_have_attribute("data-task-id", "h-new", timeout=LIVE_MS)
    expect(column.locator(".count")).to_have_text("206", timeout=LIVE_MS)
    expect(column.locator(".card")).to_have_count(200)
    expect(column.locator(".older")).to_have_text("and 6 done earlier, not shown")
    # A hidden task changed (still old) stays hidden; one deleted leaves the count.
    admin = dash.admin()
    assert admin.patch("/boards/history/tasks/h-000", json={"title": "Renamed"}).status_code == 200
    assert admin.delete("/boards/history/tasks/h-001").status_code == 204
    expect(column.locator(".count")).to_have_text("205", timeout=LIVE_MS)
    expect(column.locator(".older")).to_have_text("and 5 done earlier, not shown")
    expect(column.locator(".card")).to_have_count(200)
    assert card(page, "h-000").count() == 0
    assert admin_page.errors == []
    page.select_option("#board-select", "alpha")
    page.wait_for_selector('.card[data-task-id="ranking"]')


def test_the_board_screenshot_shows_every_kind_of_card(admin_page: Watched, dash: Dash) -> None:
    page = admin_page.page
    wait_until(lambda: dash.task("alpha", "doomed")["dead_lettered"], 30, 0.2, "a dead letter")
    dead = card(page, "doomed", "blocked")
    dead.wait_for(timeout=LIVE_MS)
    assert "dead letter" in dead.inner_text()
    expect(page.locator('[data-figure="dead"] .value')).to_have_text("1", timeout=LIVE_MS)
    # One lease in its short first phases, to show a countdown near its end.
    hopper = dash.agent("hopper")
    assigned = dash.admin().post(
        "/boards/alpha/tasks/dark-mode/assign", json={"agent_id": "hopper"}
    )
    assert assigned.status_code == 200, assigned.text
    note = {"progress": 15, "message": "Toggling the theme", "branch": "tenure/hopper-dark"}
    assert hopper.post("/tasks/dark-mode/progress", json=note).status_code == 200
    card(page, "dark-mode", "in_progress").locator(".note").wait_for(timeout=LIVE_MS)
    page.evaluate("document.getElementById('toast').hidden = true")
    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    assert admin_page.errors == []
