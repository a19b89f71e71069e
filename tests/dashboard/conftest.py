"""One real server and one real browser for the dashboard's tests.

The server is `tenure serve` in a subprocess (tests/support/server.py) with
short leases for unproven work (phases 1 and 2: 3 s, grace 1 s) and long ones
for proven work (phases 3 and 4: 10 min), so a task with two reports stays
held while a task abandoned after one report is recovered within seconds. A
task's second recovery dead-letters it. The browser is Debian's chromium
driven by Playwright (never a downloaded build). Both live for the session of
the one xdist worker that runs this directory (every module here is in the
`dashboard` xdist group).
"""

from __future__ import annotations

import shutil
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from tests.support.server import Fleet, LiveServer, start_server, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"

ENV = {
    **{f"TENURE_LEASE_PHASE{n}_LEASE": "3" for n in (1, 2)},
    **{f"TENURE_LEASE_PHASE{n}_GRACE": "1" for n in (1, 2)},
    **{f"TENURE_LEASE_PHASE{n}_LEASE": "600" for n in (3, 4)},
    **{f"TENURE_LEASE_PHASE{n}_GRACE": "60" for n in (3, 4)},
    "TENURE_LEASE_DEFAULT_LEASE": "600",
    "TENURE_LEASE_WARNING_THRESHOLD": "30",
    "TENURE_MONITOR_INTERVAL": "0.2",
    "TENURE_RECOVERY_MAX_RECOVERIES": "2",
    "TENURE_CLAIM_RETRY_AFTER": "0.2",
    "TENURE_LOG_LEVEL": "WARNING",
}


@dataclass
class Dash:
    """The shared server with two boards: `alpha` (busy) and `beta` (a secret)."""

    server: LiveServer
    alpha: Fleet
    beta: Fleet
    viewer_alpha: str
    viewer_beta: str
    agents: dict[str, httpx.Client] = field(default_factory=dict)
    background: list[threading.Thread] = field(default_factory=list)
    #: Set at the end of the session: background threads stop before the server.
    stopping: threading.Event = field(default_factory=threading.Event)

    def admin(self) -> httpx.Client:
        return self.server.admin()

    def agent(self, agent_id: str, **profile: Any) -> httpx.Client:
        """Register an agent on alpha (once) and return its client."""
        if agent_id not in self.agents:
            self.agents[agent_id] = self.alpha.agent(agent_id, **profile)[0]
        return self.agents[agent_id]

    def task(self, board: str, task_id: str) -> dict[str, Any]:
        answer = self.admin().get(f"/boards/{board}/tasks/{task_id}")
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result


def _board(server: LiveServer, board_id: str) -> tuple[Fleet, str]:
    answer = server.admin().post("/boards", json={"id": board_id, "name": board_id.title()})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return Fleet(server, board_id, body["enrolment_key"]), body["viewer_token"]


def _assign(dash: Dash, task_id: str, agent_id: str) -> None:
    answer = dash.admin().post(f"/boards/alpha/tasks/{task_id}/assign", json={"agent_id": agent_id})
    assert answer.status_code == 200, answer.text


def _report(client: httpx.Client, task_id: str, progress: int, **more: Any) -> None:
    body = {"status": "in_progress", "progress": progress, **more}
    answer = client.post(f"/tasks/{task_id}/progress", json=body)
    assert answer.status_code == 200, answer.text


def _populate(dash: Dash) -> None:
    """A board worth looking at: held work at several stages, a blocked task,
    finished ones, queued ones, and a task on its way to the dead letters."""
    dash.alpha.add_tasks(
        {"id": "doomed", "title": "Migrate the billing tables", "priority": "urgent",
         "required_skills": ["billing"]},
        {"id": "search-api", "title": "Build the search API", "priority": "high"},
        {"id": "ranking", "title": "Train the ranking model", "priority": "high"},
        {"id": "parse-logs", "title": "Parse the access logs", "priority": "medium"},
        {"id": "ci-cache", "title": "Cache the CI dependencies", "priority": "medium"},
        {"id": "user-guide", "title": "Write the user guide", "priority": "medium"},
        {"id": "e2e", "title": "End-to-end tests", "priority": "low"},
        {"id": "dark-mode", "title": "Dark mode for the settings page", "priority": "low"},
        {"id": "metrics-page", "title": "Grafana board for the fleet", "priority": "low"},
    )  # fmt: skip
    dash.beta.add_tasks(
        {"id": "beta-secret", "title": "Beta's secret project", "priority": "high"},
        {"id": "beta-other", "title": "Beta's second task", "priority": "low"},
    )
    for agent, task, steps, message in (
        ("ada", "search-api", (20, 45), "Endpoints for /search and /suggest are in; paging next."),
        ("grace", "ranking", (40, 82), "Model trained; evaluating NDCG on the holdout set."),
        ("linus", "parse-logs", (10, 30), "Parser handles the nginx format; apache next."),
    ):
        client = dash.agent(agent)
        _assign(dash, task, agent)
        for progress in steps:
            _report(client, task, progress, message=message, branch=f"tenure/{agent}-{task}")
    blocker = dash.agent("barbara")
    _assign(dash, "ci-cache", "barbara")
    answer = blocker.post(
        "/tasks/ci-cache/block", json={"description": "The CI runner has no disk quota left."}
    )
    assert answer.status_code == 200, answer.text
    finisher = dash.agent("edsger")
    _assign(dash, "user-guide", "edsger")
    _report(finisher, "user-guide", 60)
    _report(finisher, "user-guide", 100, status="completed")


def _doom(dash: Dash) -> None:
    """Give `doomed` to an agent that abandons it, twice: its second recovery dead-letters it."""
    for _ in range(2):
        if dash.stopping.is_set():
            return
        _assign(dash, "doomed", "mallory")
        wait_until(
            lambda: (
                dash.stopping.is_set() or dash.task("alpha", "doomed")["status"] != "in_progress"
            ),
            20,
            0.2,
            "doomed to be recovered",
        )


@pytest.fixture(scope="session")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    server = start_server(tmp_path_factory.mktemp("dashboard-server"), ENV)
    try:
        alpha, viewer_alpha = _board(server, "alpha")
        beta, viewer_beta = _board(server, "beta")
        world = Dash(server, alpha, beta, viewer_alpha, viewer_beta)
        for agent in ("ada", "grace", "linus", "barbara", "edsger"):
            world.agent(agent)
        world.agent("mallory", skills=["billing"])
        _populate(world)
        doom = threading.Thread(target=_doom, args=(world,), name="doom", daemon=True)
        doom.start()
        world.background.append(doom)
        yield world
        world.stopping.set()
        for thread in world.background:
            thread.join(timeout=5)
    finally:
        server.close()


# Module scope, not session: sync Playwright keeps an event loop running in
# this thread while it is open, and asyncio tests that run later in the same
# xdist worker would then fail with "cannot be called from a running event loop".
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/test does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Watched:
    """A signed-in page and every console error and page error it produced."""

    page: Any
    errors: list[str]


def sign_in(browser: Any, dash: Dash, token: str) -> Watched:
    """A fresh browser context signed in with `token`, on the board page."""
    return sign_in_at(browser, dash.server.url, token)


def sign_in_at(browser: Any, url: str, token: str) -> Watched:
    """A fresh browser context signed in with `token` on the server at `url`."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    answers: list[str] = []
    page.on("response", lambda r: answers.append(f"{r.status} {r.request.method} {r.url}"))
    page.goto(url + "/")
    page.wait_for_url("**/login")
    for attempt in (1, 2):
        page.fill("#token", token)
        page.click("#sign-in")
        try:
            # The board page may name its board in the fragment (#board=beta)
            # before this looks: an exact match on url + "/" then never came
            # (the rare "sign-in did not reach the board" of CI).
            page.wait_for_url(lambda at: at.split("#", 1)[0] == url + "/", timeout=15_000)
            break
        except PlaywrightTimeout as exc:
            stuck = _stuck_on_sign_in(page, answers, errors)
            if attempt == 2:
                raise AssertionError(stuck) from exc
            # Should a sign-in still not reach the board, say what this one
            # saw, then try once more from the form.
            warnings.warn(stuck, stacklevel=2)
            page.goto(url + "/login")
    page.wait_for_selector(".live.on", timeout=10_000)
    return Watched(page, errors)


def _stuck_on_sign_in(page: Any, answers: list[str], errors: list[str]) -> str:
    """What a sign-in that never reached the board saw: where the page is, what
    it says, and the answers the browser got (a failing sign-in says why)."""
    shown = page.locator("#login-error")
    message = shown.inner_text() if shown.count() and shown.is_visible() else "(none)"
    return (
        f"sign-in did not reach the board; the page is at {page.url}, its error: {message}\n"
        f"answers: {answers[-12:]}\nconsole: {errors[-5:]}"
    )
