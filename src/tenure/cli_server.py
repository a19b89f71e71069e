"""`tenure serve` and `tenure db migrate`: the commands that run on the server's host.

`serve` flags override the settings (they become the `TENURE_*` values they
stand for, so they are validated like any other); everything else comes from
the environment and tenure.toml.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Annotated

import typer

from tenure.core.errors import TenureError
from tenure.settings import Settings, SettingsError, load_settings

db_app = typer.Typer(
    name="db", help="Manage the database. Example: tenure db migrate", no_args_is_help=True
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///path/to/tenure.db (default ./tenure.db) or postgresql://user@host/db.",
        show_default=False,
    ),
]


def settings_with(overrides: dict[str, str]) -> Settings:
    """The settings, with command-line flags taking the place of their env vars."""
    env = {**os.environ, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return load_settings(env)
    except SettingsError as error:
        typer.echo(f"tenure: {error.message}", err=True)
        raise typer.Exit(2) from None


def serve(
    database_url: DatabaseUrl = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default 127.0.0.1).", show_default=False),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default 8321).", show_default=False)
    ] = None,
    demo: Annotated[
        bool,
        typer.Option("--demo", help="Run a demo board with simulated agents and short leases."),
    ] = False,
    demo_seconds: Annotated[
        float, typer.Option(help="With --demo: stop the server after this many seconds.")
    ] = 300.0,
) -> None:
    """Start the Tenure server: the HTTP API, the monitor, and (first start) the admin token.

    The embedded store is ./tenure.db unless --database-url says otherwise; it is
    created and migrated at start. The admin token is printed once, at the
    first start. Listens on 127.0.0.1:8321 by default.

    Example: tenure serve --port 8321 --database-url sqlite:///./tenure.db
    """
    from tenure import server

    overrides: dict[str, str] = {}
    if database_url is not None:
        overrides["TENURE_STORE_DATABASE_URL"] = database_url
    if host is not None:
        overrides["TENURE_SERVER_HOST"] = host
    if port is not None:
        overrides["TENURE_SERVER_PORT"] = str(port)
    if not demo:
        raise typer.Exit(server.serve(settings_with(overrides)))

    from tenure.demo import DEMO_SETTINGS, run_demo

    if database_url is not None:
        typer.echo("tenure: --demo uses a fresh temporary database; drop --database-url", err=True)
        raise typer.Exit(2)
    folder = tempfile.mkdtemp(prefix="tenure-demo-")
    overrides = {
        **DEMO_SETTINGS,
        **overrides,
        "TENURE_STORE_DATABASE_URL": f"sqlite:///{folder}/demo.db",
    }
    settings = settings_with(overrides)
    tokens: list[str] = []

    def keep_token(token: str) -> None:
        server.announce_admin_token(token)
        tokens.append(token)

    app = server.create_app(settings, announce=keep_token)
    url = f"http://{_connectable(settings.host)}:{settings.port}"

    def start_demo(stop: Callable[[], None]) -> None:
        if not tokens:
            stop()
            return
        threading.Thread(
            target=run_demo,
            args=(url, tokens[0]),
            kwargs={"seconds": demo_seconds, "stop_server": stop},
            name="tenure-demo",
            daemon=True,
        ).start()

    typer.echo(f"tenure: demo database in {folder} (removed when the demo ends)", err=True)
    try:
        status = server.serve(settings, app=app, on_started=start_demo)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    raise typer.Exit(status)


def _connectable(host: str) -> str:
    """An address a local client can connect to for a listening `host`."""
    if host in {"0.0.0.0", ""}:
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@db_app.command("migrate")
def migrate(
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Create the database or bring its schema up to date (the server does this
    at start for the embedded store); refuses a database newer than this Tenure.

    Example: tenure db migrate --database-url postgresql://postgres@127.0.0.1/tenure
    """
    from tenure.server import open_store

    overrides = {"TENURE_STORE_DATABASE_URL": database_url} if database_url else {}
    settings = settings_with(overrides)

    async def run() -> int:
        store = await open_store(settings.database_url, migrate=True)
        try:
            version = getattr(store, "schema_version", None)
            return int(await version()) if version is not None else -1
        finally:
            await store.close()

    try:
        version = asyncio.run(run())
    except TenureError as error:
        typer.echo(f"tenure: {error.code}: {error.message}", err=True)
        raise typer.Exit(1) from None
    result = {"database_url": settings.display("store.database_url"), "schema_version": version}
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"{result['database_url']}: schema version {version}")


def register(app: typer.Typer) -> None:
    """Add `serve` and the `db` group to the root app."""
    app.command()(serve)
    app.add_typer(db_app)
