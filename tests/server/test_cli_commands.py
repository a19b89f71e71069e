"""Every client command of the `tenure` CLI once, against a running server;
`--json` output parses, and the human output names what it did."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.server import LiveServer, start_server
from typer.testing import CliRunner

from tenure.cli import app

pytestmark = pytest.mark.xdist_group("server-cli")

runner = CliRunner()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("cli"))
    yield live
    live.close()


def tenure(server: LiveServer, *args: str, token: str | None = None, ok: bool = True) -> Any:
    """Run `tenure ARGS` against `server`; the parsed JSON when --json was given."""
    env = {"TENURE_URL": server.url, "TENURE_TOKEN": token or server.admin_token, "COLUMNS": "200"}
    result = runner.invoke(app, list(args), env=env)
    if ok:
        assert result.exit_code == 0, (args, result.output, result.exception)
    else:
        assert result.exit_code == 1, (args, result.output)
        return result.output
    if "--json" in args and "--follow" not in args:
        return json.loads(result.stdout)
    return result.stdout


def test_every_client_command_against_a_running_server(server: LiveServer, tmp_path: Path) -> None:
    created = tenure(server, "board", "create", "web", "--name", "Web shop", "--json")
    assert created["board"]["id"] == "web" and created["enrolment_key"].startswith("tnr_enrol_")
    assert "board docs created" in tenure(server, "board", "create", "docs")
    assert [b["id"] for b in tenure(server, "board", "list", "--json")["boards"]] == ["docs", "web"]
    assert "web" in tenure(server, "board", "list")

    added = tenure(
        server, "task", "add", "web", "schema", "Design the schema",
        "--priority", "high", "--label", "db", "--json",
    )  # fmt: skip
    assert added["priority"] == "high" and added["labels"] == ["db"]
    tasks_file = tmp_path / "tasks.yaml"
    tasks_file.write_text(
        "- id: login\n  title: Login page\n  dependencies: [schema]\n"
        "- id: search\n  title: Search\n  priority: urgent\n"
    )
    imported = tenure(server, "task", "import", "web", str(tasks_file), "--json")
    assert [t["id"] for t in imported["tasks"]] == ["login", "search"]
    assert "1 tasks imported" in tenure(server, "task", "import", "web", _json_file(tmp_path))
    listed = tenure(server, "task", "list", "web", "--json")["tasks"]
    assert {t["id"] for t in listed} == {"schema", "login", "search", "extra"}
    assert "Login page" in tenure(server, "task", "list", "web")
    page = tenure(server, "task", "list", "web", "--limit", "3", "--json")
    rest = tenure(server, "task", "list", "web", "--limit", "3", "--after", page["next"], "--json")
    assert [t["id"] for t in page["tasks"] + rest["tasks"]] == [t["id"] for t in listed]
    assert rest["next"] is None
    assert f"--after {page['next']}" in tenure(server, "task", "list", "web", "--limit", "3")

    registered = tenure(
        server, "agent", "register", "web", "worker-1", "--skill", "python", "--json"
    )
    agent_token = registered["token"]
    assert registered["agent"]["skills"] == ["python"]
    quiet_token = tenure(server, "agent", "register", "web", "worker-2", "--quiet").strip()
    assert quiet_token.startswith("tnr_agent_")
    agents = tenure(server, "agent", "list", "web", "--json")["agents"]
    assert {a["id"] for a in agents} == {"worker-1", "worker-2"}
    assert "worker-1" in tenure(server, "agent", "list", "web")

    assigned = tenure(server, "assign", "web", "search", "worker-1", "--json")
    assert assigned["lease"]["agent_id"] == "worker-1"
    leases = tenure(server, "lease", "list", "--board", "web", "--json")["leases"]
    assert [(lease["task_id"], lease["agent_id"]) for lease in leases] == [("search", "worker-1")]
    assert "worker-1" in tenure(server, "lease", "list")
    shown = tenure(server, "task", "show", "web", "search", "--json")
    assert shown["lease"]["agent_id"] == "worker-1" and len(shown["history"]) == 1
    assert "search" in tenure(server, "task", "show", "web", "search")

    unassigned = tenure(server, "unassign", "web", "search", "--json")
    assert (
        unassigned["status"] == "todo" and unassigned["handoff"]["recovery_reason"] == "unassigned"
    )

    # worker-1 blocks on schema; requeue brings it back.
    tenure(server, "assign", "web", "schema", "worker-1")
    agent = server.client(agent_token)
    assert (
        agent.post("/tasks/schema/block", json={"description": "no DB access"}).status_code == 200
    )
    requeued = tenure(server, "requeue", "web", "schema", "--json")
    assert requeued["status"] == "todo"

    cancelled = tenure(server, "task", "cancel", "web", "extra", "--json")
    assert cancelled["id"] == "extra" and cancelled["status"] != "todo"

    revoked = tenure(server, "agent", "revoke", "web", "worker-2", "--json")
    assert revoked["agent"]["revoked"] is True
    assert agent.get("/me").status_code == 200
    assert server.client(quiet_token).get("/me").status_code == 401

    stats = tenure(server, "stats", "--board", "web", "--json")
    assert stats["board_id"] == "web" and "recoveries" in stats
    assert "average_renewals" in tenure(server, "stats")

    events = tenure(server, "events", "--board", "web", "--json")["events"]
    types = [e["type"] for e in events]
    assert "task.created" in types and "lease.created" in types and "lease.released" in types
    human = tenure(server, "events", "--board", "web", "--task", "search")
    assert "lease.created" in human and "task=search" in human
    followed = tenure(server, "events", "--board", "web", "--follow", "--limit", "3", "--json")
    lines = [json.loads(line) for line in followed.splitlines()]
    assert [e["id"] for e in lines] == [e["id"] for e in events[:3]]


def _json_file(folder: Path) -> str:
    path = folder / "more.json"
    path.write_text(json.dumps([{"id": "extra", "title": "Extra work"}]))
    return str(path)


def test_errors_are_reported_on_stderr_with_their_code(server: LiveServer) -> None:
    output = tenure(server, "task", "show", "nowhere", "x", ok=False)
    assert "not_found" in output
    output = tenure(server, "board", "create", "bad", token="tnr_admin_wrong", ok=False)
    assert "unauthorized" in output
    result = runner.invoke(app, ["board", "list", "--url", "http://127.0.0.1:9", "--token", "t"])
    assert result.exit_code == 1 and "cannot reach the server" in result.output


def test_db_migrate_creates_and_reports_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = runner.invoke(app, ["db", "migrate", "--database-url", url, "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["schema_version"] >= 1
    again = runner.invoke(app, ["db", "migrate", "--database-url", url])
    assert again.exit_code == 0 and "schema version" in again.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["serve"], ["db", "migrate"], ["board", "create"], ["board", "list"], ["task", "add"],
        ["task", "list"], ["task", "show"], ["task", "import"], ["task", "cancel"],
        ["agent", "register"], ["agent", "list"], ["agent", "revoke"], ["lease", "list"],
        ["stats"], ["events"], ["assign"], ["unassign"], ["requeue"],
    ],
)  # fmt: skip
def test_every_command_help_has_an_example(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert re.search(r"Example: \S*\(?tenure ", " ".join(result.stdout.split())), result.stdout


def _readme_commands() -> list[list[str]]:
    """The `./scripts/tenure ...` commands of the README's first session."""
    import shlex

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    session = readme.split("## First session", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in session.splitlines():
        if "./scripts/tenure " not in line:
            continue
        text = line.split("./scripts/tenure ", 1)[1].split(")", 1)[0].split("#", 1)[0]
        commands.append(shlex.split(text))
    return commands


def test_the_readme_first_session_commands_parse() -> None:
    commands = _readme_commands()
    assert len(commands) >= 8 and commands[0][0] == "serve"
    for args in commands:
        if args[0] == "serve":
            assert runner.invoke(app, [*args, "--help"]).exit_code == 0, args
            continue
        result = runner.invoke(app, [*args, "--url", "http://127.0.0.1:9", "--token", "t"])
        assert result.exit_code == 1 and "cannot reach the server" in result.output, (
            args,
            result.output,
        )
