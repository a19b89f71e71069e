"""The `tenure` command: a thin Typer layer over the library.

This module holds the root app and the few commands that belong to no group.
Command groups live in their own modules (`tenure.cli_<name>`), each exposing
`register(app)`; add the module's name to `COMMAND_MODULES` to plug it in.
Every command's help ends with an example.
"""

from __future__ import annotations

import importlib

import typer

from tenure import __version__

app = typer.Typer(
    name="tenure",
    help=(
        "Tenure hands tasks to agents under leases and recovers the work of dead ones.\n\n"
        "Example: tenure config show"
    ),
    no_args_is_help=True,
    add_completion=False,
)

# Modules that add commands or groups to `app` through `register(app)`.
COMMAND_MODULES: tuple[str, ...] = (
    "tenure.cli_config",
    "tenure.cli_server",
    "tenure.cli_client",
    "tenure.cli_watch",
    "tenure.cli_mcp",
    "tenure.cli_lab",
    "tenure.cli_ops",
    "tenure.cli_lifecycle",
    "tenure.cli_token",
)


@app.command()
def version() -> None:
    """Print Tenure's version.

    Example: tenure version
    """
    typer.echo(f"tenure {__version__}")


def _register_command_modules() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_command_modules()


def main() -> None:
    """Entry point of the `tenure` console script."""
    app()
