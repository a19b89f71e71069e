"""`tenure export`, `tenure import`, `tenure events prune`: upkeep on the database itself.

Like `tenure db migrate`, these commands open the store a database URL
names (`--database-url`, else `store.database_url` from the settings)
directly, not through a running server: they are how a board is backed up,
moved from SQLite to PostgreSQL, and how old history is pruned by hand.
Errors print `tenure: <code>: <message>` on stderr and exit 1.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tenure.cli_server import DatabaseUrl, settings_with
from tenure.core.errors import InvalidInput, TenureError
from tenure.store.base import Store

T = TypeVar("T")

AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def on_store(
    database_url: str | None, work: Callable[[Store], Awaitable[T]], *, migrate: bool
) -> T:
    """Run `work` on the store the URL (or the settings) names, then close it."""
    from tenure.server import open_store

    overrides = {"TENURE_STORE_DATABASE_URL": database_url} if database_url else {}
    settings = settings_with(overrides)

    async def run() -> T:
        store = await open_store(settings.database_url, migrate=migrate)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except TenureError as error:
        typer.echo(f"tenure: {error.code}: {error.message}", err=True)
        raise typer.Exit(1) from None


def export(
    board_id: Annotated[str, typer.Argument(help="The board to export.")],
    database_url: DatabaseUrl = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of stdout."),
    ] = None,
) -> None:
    """Write a board as JSON: tasks with dependencies and handoffs, agents (with
    their token hashes, so they keep working after a move), every lease live
    and past, comments, events and counters.

    Example: tenure export web --database-url sqlite:///./tenure.db > web.json
    """
    from tenure.backup import export_board

    document = on_store(database_url, lambda store: export_board(store, board_id), migrate=False)
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def import_(
    file: Annotated[
        Path, typer.Argument(help="A file `tenure export` wrote; - reads stdin.", allow_dash=True)
    ],
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Read a board `tenure export` wrote into this store (migrated first if
    needed). Refused if the store already has a board with that id.

    Example: tenure import web.json --database-url postgresql://postgres@127.0.0.1/tenure
    """
    from tenure.backup import import_board

    text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        typer.echo(f"tenure: invalid_input: {file} is not JSON ({exc})", err=True)
        raise typer.Exit(1) from None
    counts = on_store(database_url, lambda store: import_board(store, document), migrate=True)
    board_id = document.get("board", {}).get("id") if isinstance(document, dict) else None
    if as_json:
        typer.echo(json.dumps({"board_id": board_id, **counts}))
    else:
        typer.echo(
            f"board {board_id} imported: {counts['tasks']} tasks, {counts['agents']} agents, "
            f"{counts['leases']} leases, {counts['events']} events, "
            f"{counts['comments']} comments"
        )


def _before_of(before: str | None, older_than: float | None) -> datetime | None:
    """The cutoff the options name; None means "relative to the store's now"."""
    if before is not None and older_than is not None:
        raise InvalidInput("give --before or --older-than, not both")
    if before is None:
        return None
    try:
        moment = datetime.fromisoformat(before)
    except ValueError as exc:
        raise InvalidInput(f"--before {before!r} is not an ISO date or time") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def prune(
    database_url: DatabaseUrl = None,
    before: Annotated[
        str | None,
        typer.Option(help="Prune history older than this date or time (ISO; naive is UTC)."),
    ] = None,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            help="Prune history older than this many days (default: events.retention_days).",
            show_default=False,
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Delete old events and comments now, in small batches. Only the history of
    tasks that are done (or deleted) goes; tasks not yet done keep all of theirs.

    Example: tenure events prune --older-than 90 --database-url sqlite:///./tenure.db
    """
    from tenure.retention import prune as prune_before
    from tenure.retention import prune_older_than

    overrides = {"TENURE_STORE_DATABASE_URL": database_url} if database_url else {}
    settings = settings_with(overrides)
    batch = int(settings["events.prune_batch_size"])
    try:
        cutoff = _before_of(before, older_than)
    except InvalidInput as error:
        typer.echo(f"tenure: {error.code}: {error.message}", err=True)
        raise typer.Exit(2) from None
    days = older_than if older_than is not None else float(settings.retention_days)
    if cutoff is None and days <= 0:
        typer.echo(
            "tenure: events.retention_days is 0 (keep everything): "
            "give --older-than DAYS or --before DATE",
            err=True,
        )
        raise typer.Exit(2)

    async def work(store: Store) -> Any:
        if cutoff is not None:
            return await prune_before(store, cutoff, batch_size=batch)
        return await prune_older_than(store, days, batch_size=batch)

    result = on_store(database_url, work, migrate=False)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    else:
        typer.echo(
            f"pruned {result.events} events and {result.comments} comments "
            f"older than {result.before.isoformat()}"
        )


def register(app: typer.Typer) -> None:
    """Add `export`, `import` and `events prune` to the root app."""
    from tenure.cli_client import events_app

    app.command("export")(export)
    app.command("import")(import_)
    events_app.command("prune")(prune)
