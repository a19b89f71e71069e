"""A task's and an agent's whole life over HTTP and through the CLI, on a real
server: edit, dependency changes with cycle checks, cancel (the lease ends
through the one path), delete (refused while a lease lives or tasks depend
on it), token rotation and deregistration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.server import LiveServer, new_board, start_server
from typer.testing import CliRunner

from tenure.cli import app

pytestmark = pytest.mark.xdist_group("ops-lifecycle")

runner = CliRunner()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    started = start_server(tmp_path_factory.mktemp("ops-lifecycle"))
    yield started
    started.close()


def _code(answer: Any) -> str:
    return str(answer.json()["error"]["code"])


def test_task_and_agent_lifecycle_over_http(server: LiveServer) -> None:
    fleet = new_board(server, "h")
    fleet.add_tasks(
        {"id": "a", "title": "First", "priority": "high"},
        {"id": "b", "title": "Second"},
        {"id": "c", "title": "Third", "dependencies": ["b"]},
    )
    admin = server.admin()
    worker, old_token = fleet.agent("w")
    assert worker.post("/claim").json()["task"]["id"] == "a"
    assert worker.post("/tasks/a/progress", json={"progress": 30}).status_code == 200

    # Edit: fields change, the live lease is untouched.
    edited = admin.patch("/boards/h/tasks/a", json={"title": "First, renamed", "labels": ["ui"]})
    assert edited.status_code == 200, edited.text
    assert (edited.json()["title"], edited.json()["labels"]) == ("First, renamed", ["ui"])
    assert edited.json()["lease"]["agent_id"] == "w"
    assert admin.patch("/boards/h/tasks/a", json={"priority": "extreme"}).status_code == 422

    # Dependencies: a cycle, a self-dependency and an unknown task are refused.
    cycle = admin.patch("/boards/h/tasks/b", json={"dependencies": ["c"]})
    assert cycle.status_code == 409 and _code(cycle) == "conflict" and "cycle" in cycle.text
    itself = admin.patch("/boards/h/tasks/b", json={"dependencies": ["b"]})
    assert itself.status_code == 409
    unknown = admin.patch("/boards/h/tasks/b", json={"dependencies": ["nope"]})
    assert unknown.status_code == 422
    moved = admin.patch("/boards/h/tasks/c", json={"dependencies": ["a"]})
    assert moved.status_code == 200 and moved.json()["dependencies"] == ["a"]
    assert admin.get("/boards/h/tasks/b").json()["dependencies"] == []

    # Delete: refused with a live lease, refused with dependants.
    live = admin.delete("/boards/h/tasks/a")
    assert live.status_code == 409 and "live lease" in live.text
    assert admin.delete("/boards/h/tasks/b").status_code == 204
    assert admin.get("/boards/h/tasks/b").status_code == 404

    # Cancel: the lease ends through the one path; the holder is told it lost it.
    cancelled = admin.post("/boards/h/tasks/a/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "blocked"
    assert admin.get("/leases", params={"board_id": "h"}).json()["leases"] == []
    late = worker.post("/tasks/a/progress", json={"progress": 40})
    assert late.status_code == 409 and _code(late) == "lease_lost"
    history = admin.get("/boards/h/tasks/a").json()["history"]
    assert [lease["end_reason"] for lease in history] == ["cancelled"]
    dependant = admin.delete("/boards/h/tasks/a")
    assert (
        dependant.status_code == 409 and "c" in dependant.json()["error"]["details"]["dependants"]
    )
    assert admin.patch("/boards/h/tasks/c", json={"dependencies": []}).status_code == 200
    assert admin.delete("/boards/h/tasks/a").status_code == 204

    # Token rotation: the old token stops at once, the new one works.
    rotated = admin.post("/boards/h/agents/w/rotate")
    assert rotated.status_code == 200, rotated.text
    new_token = rotated.json()["token"]
    assert server.client(old_token).get("/me").status_code == 401
    renewed = server.client(new_token)
    assert renewed.get("/me").status_code == 200

    # Deregistration: refused while the agent holds a lease.
    assert renewed.post("/claim").json()["task"]["id"] == "c"
    holding = admin.delete("/boards/h/agents/w")
    assert holding.status_code == 409 and "live lease" in holding.text
    assert renewed.post("/tasks/c/release", json={"message": "leaving"}).status_code == 200
    assert admin.delete("/boards/h/agents/w").status_code == 204
    assert renewed.get("/me").status_code == 401
    agents = admin.get("/boards/h/agents").json()["agents"]
    assert [agent["id"] for agent in agents] == []
    types = [e["type"] for e in admin.get("/events", params={"board_id": "h"}).json()["events"]]
    assert "task.updated" in types and "task.deleted" in types and "lease.released" in types


def _cli(server: LiveServer, *args: str, code: int = 0) -> Any:
    result = runner.invoke(app, [*args, "--url", server.url, "--token", server.admin_token])
    assert result.exit_code == code, (args, result.output)
    return result


def test_task_and_agent_lifecycle_through_the_cli(server: LiveServer) -> None:
    fleet = new_board(server, "k")
    for task_id, extra in (("x", ()), ("y", ("--depends-on", "x"))):
        _cli(server, "task", "add", "k", task_id, f"Task {task_id}", *extra)
    edited = _cli(server, "task", "edit", "k", "x", "--priority", "urgent", "--json")
    assert json.loads(edited.stdout)["priority"] == "urgent"
    cycle = _cli(server, "task", "edit", "k", "x", "--depends-on", "y", code=1)
    assert "conflict" in cycle.output and "cycle" in cycle.output
    _cli(server, "task", "edit", "k", "x", code=1)  # nothing to change

    worker, old_token = fleet.agent("cw")
    assert worker.post("/claim").json()["task"]["id"] == "x"
    refused = _cli(server, "task", "delete", "k", "x", code=1)
    assert "conflict" in refused.output and "live lease" in refused.output
    _cli(server, "task", "cancel", "k", "x")
    assert worker.post("/tasks/x/progress", json={"progress": 5}).status_code == 409
    _cli(server, "task", "edit", "k", "y", "--no-dependencies")
    _cli(server, "task", "delete", "k", "x")
    shown = _cli(server, "task", "show", "k", "x", code=1)
    assert "not_found" in shown.output

    token = _cli(server, "agent", "rotate", "k", "cw", "--quiet").stdout.strip()
    assert token and token != old_token
    assert server.client(old_token).get("/me").status_code == 401
    assert server.client(token).get("/me").status_code == 200
    _cli(server, "agent", "deregister", "k", "cw")
    assert server.client(token).get("/me").status_code == 401
    gone = _cli(server, "agent", "deregister", "k", "cw", code=1)
    assert "not_found" in gone.output
