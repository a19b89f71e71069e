"""`tenure board watch`: the board rendered for a terminal."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console
from tests.dashboard.conftest import Dash
from typer.testing import CliRunner

from tenure.cli import app
from tenure.cli_client import ApiCall
from tenure.cli_watch import (
    BoardFollower,
    ShownTasks,
    latest_events,
    lease_state,
    render_board,
)

pytestmark = pytest.mark.xdist_group("dashboard")

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def _at(seconds: float) -> str:
    return (NOW + timedelta(seconds=seconds)).isoformat()


def _lease(agent: str, expires_in: float, grace: float = 60, **more: Any) -> dict[str, Any]:
    return {
        "agent_id": agent,
        "epoch": 2,
        "progress": 40,
        "phase": 2,
        "grace_s": grace,
        "expires_at": _at(expires_in),
        "recover_after": _at(expires_in + grace),
        "seconds_left": max(0.0, expires_in),
        "flags": [],
        "message": "",
        "branch": None,
        "suspect_since": None,
        "ended_at": None,
        **more,
    }


def _task(task_id: str, status: str, **more: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "title": f"Title of {task_id}",
        "status": status,
        "priority": "medium",
        "flags": [],
        "recovery_count": 0,
        "dead_lettered": False,
        "handoff": None,
        "lease": None,
        "created_at": _at(-600),
        **more,
    }


STATS = {
    "live": 2,
    "by_state": {"active": 1, "in_grace": 1},
    "recoveries": {"lease_expired": 3, "agent_disconnected": 1},
    "revivals": 2,
    "false_recoveries": {"reclaimed": 1, "lost": 0},
    "stale_refused": 4,
    "dead_letters": 1,
}


def _render(tasks: list[dict[str, Any]], **options: Any) -> str:
    console = Console(record=True, width=200, color_system=None, force_terminal=False)
    console.print(render_board(tasks, STATS, NOW, board_id="web", **options))
    return console.export_text()


def test_the_board_renders_columns_leases_handoffs_and_dead_letters() -> None:
    tasks = [
        _task(
            "api",
            "in_progress",
            lease=_lease(
                "ada", 120, message="Endpoints done; paging next", branch="tenure/ada-api"
            ),
        ),
        _task("late", "in_progress", lease=_lease("bob", -30, flags=["stalled"])),
        _task(
            "parser",
            "todo",
            recovery_count=1,
            handoff={
                "recovered_from_agent": "carol",
                "previous_progress": 40,
                "recovery_reason": "lease_expired",
                "previous_agent_branch": "tenure/carol",
                "last_progress_message": "CSV half done",
            },
        ),
        _task(
            "billing",
            "blocked",
            dead_lettered=True,
            recovery_count=3,
            blocked_reason="recovery_budget_exhausted",
        ),
        _task("docs", "done", completed_at=_at(-60)),
    ]
    text = _render(tasks)
    for header in ("To do (1)", "In progress (2)", "Blocked (1)", "Done (1)"):
        assert header in text
    assert "board web" in text and "12:00:00 UTC" in text
    assert "ada" in text and "2:00 left" in text and "phase 2 · grace 60s" in text
    assert "Endpoints done; paging next" in text and "tenure/ada-api" in text
    assert "[in grace]" in text and "recoverable in 0:30" in text and "[stalled]" in text
    assert "handoff from carol at 40% (lease expired)" in text and "CSV half done" in text
    assert "DEAD LETTER" in text and "recovery budget exhausted" in text
    assert "4 recoveries" in text and "2 revivals" in text and "1 reclaimed" in text
    assert "4 stale refused" in text and "1 dead letters" in text


def test_a_long_column_is_cut_with_a_count_of_the_rest() -> None:
    tasks = [_task(f"t{n:03d}", "todo") for n in range(30)]
    text = _render(tasks, per_column=5)
    assert "To do (30)" in text
    assert "… and 25 more" in text
    assert "t004" in text and "t005" not in text


def test_done_tasks_not_held_are_counted_in_their_column() -> None:
    tasks = [_task(f"d{n}", "done", completed_at=_at(-n)) for n in range(3)]
    text = _render(tasks, per_column=2, hidden_done=40)
    assert "Done (43)" in text and "… and 41 more" in text
    assert "d0" in text and "d1" in text and "d2" not in text


def test_the_watcher_holds_the_overviews_tasks_and_only_counts_older_done_ones() -> None:
    overview = {
        "tasks": [
            _task("open", "todo"),
            _task("new", "done", completed_at=_at(-10)),
            _task("newer", "done", completed_at=_at(-5)),
        ],
        "done_total": 5,
    }
    shown = ShownTasks(overview)
    assert set(shown.tasks) == {"open", "new", "newer"} and shown.hidden_done == 3
    # An older done task an event named (edited, say) stays counted, not held.
    shown.changed(_task("old", "done", completed_at=_at(-60), title="renamed"))
    assert "old" not in shown.tasks and shown.hidden_done == 3
    # A task done since is held (and counted once).
    shown.changed(_task("open", "done", completed_at=_at(0)))
    assert shown.tasks["open"]["status"] == "done" and shown.hidden_done == 3
    # Gone: a held task leaves the tasks; one not held leaves the count.
    shown.gone("new")
    shown.gone("old")
    assert set(shown.tasks) == {"open", "newer"} and shown.hidden_done == 2
    # A server without `done_total` (every task sent): nothing hidden.
    assert ShownTasks({"tasks": [_task("d", "done", completed_at=_at(0))]}).hidden_done == 0


def test_the_lease_state_ages_on_the_client_clock() -> None:
    lease = _lease("ada", 100, grace=60)
    assert lease_state(lease, NOW) == "active"
    assert lease_state(lease, NOW + timedelta(seconds=50)) == "expiring_soon"
    assert lease_state(lease, NOW + timedelta(seconds=101)) == "in_grace"
    assert lease_state(lease, NOW + timedelta(seconds=160)) == "expired"
    assert lease_state({**lease, "suspect_since": _at(0)}, NOW) == "suspect"


def test_board_watch_once_prints_a_live_servers_board(dash: Dash) -> None:
    result = CliRunner().invoke(
        app,
        ["board", "watch", "alpha", "--once", "--url", dash.server.url],
        env={"TENURE_TOKEN": dash.server.admin_token, "COLUMNS": "220"},
    )
    assert result.exit_code == 0, result.output
    assert "board alpha" in result.output
    assert "Train the ranking model" in result.output
    assert "tenure/grace-ranking" in result.output
    assert "active leases" in result.output


def test_the_watcher_follows_the_boards_event_stream(dash: Dash) -> None:
    call = ApiCall(dash.server.url, dash.server.admin_token)
    _, head = latest_events(call, "alpha")
    follower = BoardFollower(call, "alpha", head)
    follower.start()
    try:
        added = dash.admin().post("/boards/alpha/tasks", json={"id": "watched", "title": "W"})
        assert added.status_code == 201, added.text
        other = dash.admin().post("/boards/beta/tasks", json={"id": "unseen", "title": "U"})
        assert other.status_code == 201, other.text
        # Other agents of the shared board may act meanwhile: read until our
        # task shows up, and check that nothing of board beta ever arrives.
        deadline = time.monotonic() + 15
        seen: list[tuple[str, str | None, str]] = []
        while time.monotonic() < deadline:
            event = follower.events.get(timeout=max(0.1, deadline - time.monotonic()))
            seen.append((event["type"], event["task_id"], event["board_id"]))
            if seen[-1] == ("task.created", "watched", "alpha"):
                break
        assert ("task.created", "watched", "alpha") in seen
        assert all(board == "alpha" for _, _, board in seen)
        assert follower.connected
    finally:
        follower.stopping.set()
    assert follower.events.empty() or follower.events.get_nowait()["board_id"] == "alpha"
