"""`tenure config ...`: the effective settings and the settings reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tenure.settings import SettingsError, load_settings, render_settings_markdown

config_app = typer.Typer(
    name="config",
    help="Inspect Tenure's settings. Example: tenure config show",
    no_args_is_help=True,
)


@config_app.command("show")
def show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: Annotated[
        Path | None,
        typer.Option(help="Settings file to read instead of $TENURE_CONFIG or ./tenure.toml."),
    ] = None,
) -> None:
    """Print every setting's effective value and where it came from.

    Sources: `env TENURE_...`, the settings file, or `default`. Secrets are
    masked. Exits 2 when a value is wrong, naming the setting.

    Example: TENURE_MONITOR_INTERVAL=2 tenure config show --json
    """
    try:
        settings = load_settings(toml_path=config)
    except SettingsError as error:
        typer.echo(f"tenure: {error.message}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(settings.as_dict(), indent=2))
        return
    rows = [("SETTING", "VALUE", "SOURCE")]
    rows += [(name, settings.display(name), settings.source(name)) for name in settings]
    width = max(len(name) for name, _, _ in rows)
    value_width = min(40, max(len(value) for _, value, _ in rows))
    for name, value, source in rows:
        typer.echo(f"{name:<{width}}  {value:<{value_width}}  {source}".rstrip())


@config_app.command("docs")
def docs() -> None:
    """Print the settings reference in Markdown (the source of docs/settings.md).

    Example: tenure config docs > docs/settings.md
    """
    typer.echo(render_settings_markdown(), nl=False)


def register(app: typer.Typer) -> None:
    """Add the `config` group to the root app."""
    app.add_typer(config_app)
