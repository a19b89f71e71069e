"""`tenure task edit|delete` and `tenure agent rotate|deregister`: the rest of a
task's and an agent's life, from the command line, over the server's HTTP API.

They join the `task` and `agent` groups of `tenure.cli_client` and talk to the
same routes as any other client (`PATCH`/`DELETE /boards/{b}/tasks/{t}`,
`POST .../agents/{a}/rotate`, `DELETE .../agents/{a}`), with the admin token.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tenure.cli_client import DEFAULT_URL, AsJson, Token, Url
from tenure.cli_output import ApiCall, console, emit, fail

BoardArg = Annotated[str, typer.Argument(help="The board's id.")]
TaskArg = Annotated[str, typer.Argument(help="The task's id.")]
AgentArg = Annotated[str, typer.Argument(help="The agent's id.")]


def task_edit(
    board_id: BoardArg,
    task_id: TaskArg,
    url: Url = DEFAULT_URL,
    token: Token = None,
    title: Annotated[str | None, typer.Option(help="A new title.")] = None,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
    priority: Annotated[str | None, typer.Option(help="low, medium, high or urgent.")] = None,
    label: Annotated[
        list[str] | None, typer.Option(help="The labels (repeat; replaces the old ones).")
    ] = None,
    skill: Annotated[
        list[str] | None, typer.Option(help="The required skills (repeat; replaces).")
    ] = None,
    estimate: Annotated[float | None, typer.Option(help="Estimated hours.")] = None,
    depends_on: Annotated[
        list[str] | None,
        typer.Option(help="The tasks this one waits for (repeat; replaces; cycles refused)."),
    ] = None,
    no_dependencies: Annotated[
        bool, typer.Option("--no-dependencies", help="Wait for no task any more.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Change a task's fields; those not given stay as they are.

    Example: tenure task edit web login --priority urgent --depends-on schema --depends-on api
    """
    if no_dependencies and depends_on:
        fail("give --depends-on or --no-dependencies, not both")
    body: dict[str, Any] = {
        name: value
        for name, value in (
            ("title", title),
            ("description", description),
            ("priority", priority),
            ("labels", label),
            ("required_skills", skill),
            ("estimated_hours", estimate),
            ("dependencies", [] if no_dependencies else depends_on),
        )
        if value is not None
    }
    if not body:
        fail("nothing to change: give at least one option (see --help)")
    answer = ApiCall(url, token)("PATCH", f"/boards/{board_id}/tasks/{task_id}", json=body)
    emit(
        answer,
        as_json,
        lambda t: console.print(f"task [bold]{t['id']}[/bold] updated: {', '.join(sorted(body))}"),
    )


def task_delete(
    board_id: BoardArg,
    task_id: TaskArg,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Delete a task; refused while it has a live lease (cancel it first) or other
    tasks depend on it.

    Example: tenure task delete web login
    """
    ApiCall(url, token)("DELETE", f"/boards/{board_id}/tasks/{task_id}")
    emit(
        {"board_id": board_id, "task_id": task_id, "deleted": True},
        as_json,
        lambda _: console.print(f"task {task_id} deleted from {board_id}"),
    )


def agent_rotate(
    board_id: BoardArg,
    agent_id: AgentArg,
    url: Url = DEFAULT_URL,
    token: Token = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the new token.")] = False,
    as_json: AsJson = False,
) -> None:
    """Give an agent a new token (shown once); the old one stops working at once.
    Its leases are untouched.

    Example: AGENT_TOKEN=$(tenure agent rotate web worker-1 --quiet)
    """
    answer = ApiCall(url, token)("POST", f"/boards/{board_id}/agents/{agent_id}/rotate")
    if quiet:
        typer.echo(answer["token"])
        return

    def human(a: dict[str, Any]) -> None:
        console.print(f"agent [bold]{a['agent']['id']}[/bold] has a new token")
        console.print(f"agent token (shown once): {a['token']}")

    emit(answer, as_json, human)


def agent_deregister(
    board_id: BoardArg,
    agent_id: AgentArg,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Remove an agent from its board; refused while it holds a live lease.

    Example: tenure agent deregister web worker-1
    """
    ApiCall(url, token)("DELETE", f"/boards/{board_id}/agents/{agent_id}")
    emit(
        {"board_id": board_id, "agent_id": agent_id, "deregistered": True},
        as_json,
        lambda _: console.print(f"agent {agent_id} deregistered from {board_id}"),
    )


def register(app: typer.Typer) -> None:
    """Add the commands to the `task` and `agent` groups."""
    from tenure.cli_client import agent_app, task_app

    task_app.command("edit")(task_edit)
    task_app.command("delete")(task_delete)
    agent_app.command("rotate")(agent_rotate)
    agent_app.command("deregister")(agent_deregister)
