"""`tenure board|task|agent|lease|stats|events|assign|unassign|requeue`: the
people's commands, talking to a running server over its HTTP API.

Every command takes `--url` (env `TENURE_URL`, default http://127.0.0.1:8321)
and `--token` (env `TENURE_TOKEN`: the admin token `tenure serve` printed at
its first start), and `--json` to print the server's answer as JSON instead
of a table. Errors print `tenure: <code>: <message>` on stderr and exit 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from tenure.cli_output import (
    ApiCall,
    console,
    emit,
    event_line,
    fail,
    show_leases,
    show_tasks,
    table,
)
from tenure.pages import PAGE_MAX

DEFAULT_URL = "http://127.0.0.1:8321"

Url = Annotated[str, typer.Option("--url", envvar="TENURE_URL", help="The server's address.")]
Token = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="TENURE_TOKEN", help="Bearer token (the admin token).", show_default=False
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the server's answer as JSON.")]
Board = Annotated[str, typer.Argument(help="The board's id.")]
TaskId = Annotated[str, typer.Argument(help="The task's id.")]
AgentId = Annotated[str, typer.Argument(help="The agent's id.")]
Json = dict[str, Any]


# ------------------------------------------------------------------- boards
board_app = typer.Typer(
    name="board",
    help="Create and list boards. Example: tenure board create web",
    no_args_is_help=True,
)


@board_app.command("create")
def board_create(
    board_id: Board,
    url: Url = DEFAULT_URL,
    token: Token = None,
    name: Annotated[str, typer.Option(help="A name for people.")] = "",
    project_root: Annotated[str | None, typer.Option(help="The project's git checkout.")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the enrolment key.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Create a board; prints its enrolment key (agents register with it) once.

    Example: tenure board create web --name "Web shop" --project-root ~/src/shop
    """
    body: Json = {"id": board_id, "name": name}
    if project_root:
        body["project_root"] = project_root
    answer = ApiCall(url, token)("POST", "/boards", json=body)
    if quiet:
        typer.echo(answer["enrolment_key"])
        return

    def human(a: Json) -> None:
        console.print(f"board [bold]{a['board']['id']}[/bold] created")
        console.print(f"enrolment key (agents register with it; shown once): {a['enrolment_key']}")
        console.print(f"viewer token (read-only; shown once): {a['viewer_token']}")

    emit(answer, as_json, human)


@board_app.command("list")
def board_list(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """List the boards.

    Example: tenure board list --json
    """
    answer = ApiCall(url, token)("GET", "/boards")

    def human(a: Json) -> None:
        rows = [[b["id"], b["name"], b["project_root"], b["created_at"][:19]] for b in a["boards"]]
        table("boards", ["ID", "NAME", "PROJECT ROOT", "CREATED"], rows)

    emit(answer, as_json, human)


# -------------------------------------------------------------------- tasks
task_app = typer.Typer(
    name="task",
    help="Add, list, show, import and cancel tasks. Example: tenure task list web",
    no_args_is_help=True,
)


@task_app.command("add")
def task_add(
    board_id: Board,
    task_id: TaskId,
    title: Annotated[str, typer.Argument(help="What to do, in one line.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
    description: Annotated[str, typer.Option(help="Details (markdown).")] = "",
    priority: Annotated[str, typer.Option(help="low, medium, high or urgent.")] = "medium",
    label: Annotated[list[str] | None, typer.Option(help="A label (repeat for more).")] = None,
    skill: Annotated[list[str] | None, typer.Option(help="A required skill (repeat).")] = None,
    estimate: Annotated[float | None, typer.Option(help="Estimated hours.")] = None,
    depends_on: Annotated[
        list[str] | None, typer.Option(help="A task this one waits for (repeat).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Add a task to a board.

    Example: tenure task add web login "Add the login page" --priority high --depends-on schema
    """
    body: Json = {
        "id": task_id, "title": title, "description": description, "priority": priority,
        "labels": label or [], "required_skills": skill or [], "dependencies": depends_on or [],
    }  # fmt: skip
    if estimate is not None:
        body["estimated_hours"] = estimate
    answer = ApiCall(url, token)("POST", f"/boards/{board_id}/tasks", json=body)
    emit(
        answer,
        as_json,
        lambda t: console.print(
            f"task [bold]{t['id']}[/bold] added to {t['board_id']} ({t['status']})"
        ),
    )


@task_app.command("list")
def task_list(
    board_id: Board,
    url: Url = DEFAULT_URL,
    token: Token = None,
    status: Annotated[str | None, typer.Option(help="Only tasks of this status.")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, max=PAGE_MAX, help="At most this many tasks (a page).")
    ] = None,
    after: Annotated[
        str | None, typer.Option(help="The page after this cursor (a listing's `next`).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List a board's tasks with their leases, oldest first.

    Example: tenure task list web --status in_progress
    Example: tenure task list web --limit 100
    """
    params: dict[str, Any] = {"status": status, "limit": limit, "after": after}
    params = {name: value for name, value in params.items() if value is not None}
    answer = ApiCall(url, token)("GET", f"/boards/{board_id}/tasks", params=params)

    def show(listing: Json) -> None:
        show_tasks(listing["tasks"])
        if listing.get("next"):
            console.print(f"more: tenure task list {board_id} --limit {limit} "
                          f"--after {listing['next']}")  # fmt: skip

    emit(answer, as_json, show)


@task_app.command("show")
def task_show(
    board_id: Board,
    task_id: TaskId,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Show one task: its lease, handoff, lease history and comments.

    Example: tenure task show web login
    """
    answer = ApiCall(url, token)("GET", f"/boards/{board_id}/tasks/{task_id}")

    def human(t: Json) -> None:
        facts = (
            f"{t['status']}, {t['priority']}, epoch {t['epoch']}, {t['recovery_count']} recoveries"
        )
        console.print(f"[bold]{t['id']}[/bold] {t['title']}  ({facts})")
        if t.get("lease"):
            show_leases([t["lease"]])
        if t.get("handoff"):
            console.print("handoff:")
            console.print(t["handoff"].get("instructions", ""), markup=False)
        history = t.get("history") or []
        rows = [
            [h["epoch"], h["agent_id"], (h["assigned_at"] or "")[:19], (h["ended_at"] or "")[:19],
             h["end_reason"], h["progress"]]
            for h in history
        ]  # fmt: skip
        table("lease history", ["EPOCH", "AGENT", "ASSIGNED", "ENDED", "REASON", "PROGRESS"], rows)
        for comment in t.get("comments") or []:
            console.print(
                f"- {comment['at'][:19]} {comment['author']}: {comment['body']}", markup=False
            )

    emit(answer, as_json, human)


@task_app.command("import")
def task_import(
    board_id: Board,
    file: Annotated[
        Path, typer.Argument(help="A YAML or JSON list of tasks; - reads stdin.", allow_dash=True)
    ],
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Add many tasks from a YAML or JSON file (a list of tasks, or `tasks:`).

    Example: tenure task import web tasks.yaml
    """
    text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    kind = "application/json" if file.suffix == ".json" else "application/yaml"
    answer = ApiCall(url, token)(
        "POST",
        f"/boards/{board_id}/tasks/import",
        content=text.encode("utf-8"),
        headers={"Content-Type": kind},
    )
    emit(
        answer,
        as_json,
        lambda a: console.print(f"{len(a['tasks'])} tasks imported into {board_id}"),
    )


@task_app.command("cancel")
def task_cancel(
    board_id: Board,
    task_id: TaskId,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Cancel a task: any lease ends, the task leaves the queue.

    Example: tenure task cancel web login
    """
    answer = ApiCall(url, token)("POST", f"/boards/{board_id}/tasks/{task_id}/cancel")
    emit(answer, as_json, lambda t: console.print(f"task {t['id']} cancelled ({t['status']})"))


# ------------------------------------------------------------------- agents
agent_app = typer.Typer(
    name="agent",
    help="Register, list and revoke agents. Example: tenure agent list web",
    no_args_is_help=True,
)


@agent_app.command("register")
def agent_register(
    board_id: Board,
    agent_id: AgentId,
    url: Url = DEFAULT_URL,
    token: Token = None,
    name: Annotated[str, typer.Option(help="A name for people.")] = "",
    role: Annotated[str, typer.Option(help="What the agent does.")] = "",
    skill: Annotated[list[str] | None, typer.Option(help="A skill (repeat for more).")] = None,
    worktree: Annotated[str | None, typer.Option(help="The agent's git worktree.")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the agent's token.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Register an agent on a board (admin token or the board's enrolment key);
    prints the agent's token once.

    Example: AGENT_TOKEN=$(tenure agent register web worker-1 --skill python --quiet)
    """
    body: Json = {
        "agent_id": agent_id,
        "name": name,
        "role": role,
        "skills": skill or [],
        "board_id": board_id,
    }
    if worktree:
        body["worktree"] = worktree
    answer = ApiCall(url, token)("POST", "/agents", json=body)
    if quiet:
        typer.echo(answer["token"])
        return

    def human(a: Json) -> None:
        console.print(
            f"agent [bold]{a['agent']['id']}[/bold] registered on {a['agent']['board_id']}"
        )
        console.print(f"agent token (shown once): {a['token']}")

    emit(answer, as_json, human)


@agent_app.command("list")
def agent_list(
    board_id: Board, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """List a board's agents.

    Example: tenure agent list web
    """
    answer = ApiCall(url, token)("GET", f"/boards/{board_id}/agents")

    def human(a: Json) -> None:
        rows = [
            [
                x["id"],
                x["name"],
                ",".join(x["skills"]),
                x["revoked"],
                (x["last_seen_at"] or "")[:19],
            ]
            for x in a["agents"]
        ]
        table("agents", ["ID", "NAME", "SKILLS", "REVOKED", "LAST SEEN"], rows)

    emit(answer, as_json, human)


@agent_app.command("revoke")
def agent_revoke(
    board_id: Board,
    agent_id: AgentId,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Revoke an agent's token at once; its leases run on to recovery.

    Example: tenure agent revoke web worker-1
    """
    answer = ApiCall(url, token)("POST", f"/boards/{board_id}/agents/{agent_id}/revoke")
    emit(answer, as_json, lambda a: console.print(f"agent {a['agent']['id']} revoked"))


# ------------------------------------------------------------------- leases
lease_app = typer.Typer(
    name="lease", help="Look at leases. Example: tenure lease list", no_args_is_help=True
)


@lease_app.command("list")
def lease_list(
    url: Url = DEFAULT_URL,
    token: Token = None,
    board: Annotated[str | None, typer.Option(help="Only this board's leases.")] = None,
    as_json: AsJson = False,
) -> None:
    """List the live leases: holder, state, time left, progress.

    Example: tenure lease list --board web
    """
    answer = ApiCall(url, token)("GET", "/leases", params={"board_id": board} if board else {})
    emit(answer, as_json, lambda a: show_leases(a["leases"]))


# --------------------------------------------------------- single commands
def stats(
    url: Url = DEFAULT_URL,
    token: Token = None,
    board: Annotated[str | None, typer.Option(help="Only this board.")] = None,
    as_json: AsJson = False,
) -> None:
    """Show statistics: leases by state, recoveries, revivals, false recoveries.

    Example: tenure stats --board web --json
    """
    answer = ApiCall(url, token)("GET", "/statistics", params={"board_id": board} if board else {})

    def human(s: Json) -> None:
        rows = [
            [key, json.dumps(value) if isinstance(value, dict) else value]
            for key, value in s.items()
        ]
        table("statistics", ["FIGURE", "VALUE"], rows)

    emit(answer, as_json, human)


events_app = typer.Typer(
    name="events",
    invoke_without_command=True,
)


@events_app.callback()
def events(
    ctx: typer.Context,
    url: Url = DEFAULT_URL,
    token: Token = None,
    board: Annotated[str | None, typer.Option(help="Only this board.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent.")] = None,
    after: Annotated[int, typer.Option(help="Only events after this id.")] = 0,
    limit: Annotated[
        int, typer.Option(help="At most this many events (with --follow: stop after them).")
    ] = 500,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events as they happen.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Print the event log (the lease history); --follow tails it live.

    `tenure events prune` removes old history from the database by hand.

    Example: tenure events --board web --follow
    """
    if ctx.invoked_subcommand is not None:
        return  # a subcommand (`tenure events prune`) runs instead
    params: Json = {
        k: v for k, v in (("board_id", board), ("task_id", task), ("agent_id", agent)) if v
    }
    call = ApiCall(url, token)
    if not follow:
        answer = call("GET", "/events", params={**params, "after": after, "limit": limit})
        if as_json:
            typer.echo(json.dumps(answer, indent=2))
        else:
            for event in answer["events"]:
                typer.echo(event_line(event))
        return
    try:
        for count, event in enumerate(follow_events(call, params, after), start=1):
            typer.echo(json.dumps(event) if as_json else event_line(event))
            if count >= limit:
                return
    except KeyboardInterrupt:
        return


def follow_events(call: ApiCall, params: Json, after: int) -> Iterator[Json]:
    """Events from the server's SSE stream, reconnecting with Last-Event-ID."""
    last = after
    connected = False
    while True:
        headers = {"Last-Event-ID": str(last)} if last else {}
        try:
            with call.http.stream(
                "GET", "/api/v1/events/stream", params=params, headers=headers, timeout=None
            ) as response:
                if response.status_code != 200:
                    response.read()
                    error = response.json().get("error", {}) if response.content else {}
                    fail(f"{error.get('code', response.status_code)}: {error.get('message', '')}")
                connected = True
                for line in response.iter_lines():
                    if line.startswith("id:"):
                        last = int(line[3:].strip())
                    elif line.startswith("data:"):
                        yield json.loads(line[5:].strip())
        except httpx.TransportError as exc:
            if not connected:
                fail(f"cannot reach the server at {call.url} ({exc}); is `tenure serve` running?")
            typer.echo("tenure: the event stream dropped; reconnecting", err=True)
            time.sleep(1.0)


def assign(
    board_id: Board,
    task_id: TaskId,
    agent_id: AgentId,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Give a todo task to a named agent, under a new lease.

    Example: tenure assign web login worker-1
    """
    answer = ApiCall(url, token)(
        "POST", f"/boards/{board_id}/tasks/{task_id}/assign", json={"agent_id": agent_id}
    )
    emit(
        answer,
        as_json,
        lambda a: console.print(
            f"task {task_id} assigned to {agent_id} (epoch {a['lease']['epoch']})"
        ),
    )


def unassign(
    board_id: Board,
    task_id: TaskId,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """End a task's live lease and put it back on the board, with a handoff.

    Example: tenure unassign web login
    """
    answer = ApiCall(url, token)("POST", f"/boards/{board_id}/tasks/{task_id}/unassign")
    emit(answer, as_json, lambda t: console.print(f"task {t['id']} unassigned ({t['status']})"))


def requeue(
    board_id: Board,
    task_id: TaskId,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Bring a blocked or dead-lettered task back to todo.

    Example: tenure requeue web login
    """
    answer = ApiCall(url, token)("POST", f"/boards/{board_id}/tasks/{task_id}/requeue")
    emit(answer, as_json, lambda t: console.print(f"task {t['id']} requeued ({t['status']})"))


def register(app: typer.Typer) -> None:
    """Add the client commands to the root app."""
    for group in (board_app, task_app, agent_app, lease_app, events_app):
        app.add_typer(group)
    for command in (stats, assign, unassign, requeue):
        app.command()(command)


# Shared with other command modules (e.g. `tenure board watch`).
__all__ = [
    "DEFAULT_URL",
    "ApiCall",
    "AsJson",
    "Token",
    "Url",
    "board_app",
    "events_app",
    "register",
]
