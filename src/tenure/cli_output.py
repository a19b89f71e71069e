"""What the CLI's client commands share: one HTTP call with SPEC's errors turned
into `tenure: <code>: <message>` and exit 1, and the output for people (Rich
tables) or for programs (`--json`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

Json = dict[str, Any]


class _Console:
    """A Rich console made per print, so it measures the terminal (and COLUMNS) now."""

    def print(self, *objects: Any, **options: Any) -> None:
        Console(highlight=False, soft_wrap=True).print(*objects, **options)


console = _Console()


class ApiCall:
    """One command's connection to the server."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, "/api/v1" + path, **kwargs)
        except httpx.TransportError as exc:
            fail(f"cannot reach the server at {self.url} ({exc}); is `tenure serve` running?")
        if response.status_code == 204:
            return {}
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.is_success:
            return payload
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            error = payload["error"]
            fail(f"{error.get('code')}: {error.get('message')}")
        fail(f"HTTP {response.status_code} from {method} {path}")


def fail(message: str) -> Any:
    """Print an error and exit 1."""
    typer.echo(f"tenure: {message}", err=True)
    raise typer.Exit(1)


def emit(data: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    """Print `data` as JSON, or for people."""
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        human(data)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A Rich table (an empty one says so)."""
    if not rows:
        console.print(f"{title}: none")
        return
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*["" if cell is None else str(cell) for cell in row])
    console.print(grid)


def _lease_cells(lease: Json | None) -> list[Any]:
    if not lease:
        return ["", "", ""]
    return [lease["agent_id"], lease["state"], f"{lease['seconds_left']:.0f}s"]


def show_tasks(tasks: list[Json]) -> None:
    table(
        "tasks",
        ["ID", "TITLE", "STATUS", "PRIORITY", "HOLDER", "LEASE", "LEFT", "RECOVERIES"],
        [
            [
                t["id"],
                t["title"],
                t["status"],
                t["priority"],
                *_lease_cells(t.get("lease")),
                t["recovery_count"],
            ]
            for t in tasks
        ],
    )


def show_leases(leases: list[Json]) -> None:
    rows = []
    for lease in leases:
        flags = ",".join(lease["flags"])
        left = f"{lease['seconds_left']:.0f}s"
        rows.append(
            [lease["board_id"], lease["task_id"], lease["agent_id"], lease["epoch"], lease["state"],
             flags, left, f"{lease['progress']}%", lease["renewal_count"]]
        )  # fmt: skip
    columns = ["BOARD", "TASK", "AGENT", "EPOCH", "STATE", "FLAGS", "LEFT", "PROGRESS", "RENEWALS"]
    table("leases", columns, rows)


def event_line(event: Json) -> str:
    """One event on one line, for people."""
    who = f" agent={event['agent_id']}" if event.get("agent_id") else ""
    task = f" task={event['task_id']}" if event.get("task_id") else ""
    epoch = f" epoch={event['epoch']}" if event.get("epoch") is not None else ""
    data = event.get("data") or {}
    extra = " " + json.dumps(data, separators=(",", ":")) if data else ""
    head = f"#{event['id']} {event['at'][:23]} {event['type']:<20} board={event['board_id']}"
    return f"{head}{task}{who}{epoch}{extra}"
