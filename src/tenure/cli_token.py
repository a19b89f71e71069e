"""`tenure token rotate-admin`: replace the admin token on the database itself.

The admin token is printed once, at the first start. When it is lost or
leaked, whoever can open the database (the server's own host) makes a new
one here; the old token stops working at once, on every replica, because
every request authenticates against the store.
"""

from __future__ import annotations

import typer

from tenure.cli_ops import on_store
from tenure.cli_server import DatabaseUrl
from tenure.service import Coordinator
from tenure.store.base import Store

token_app = typer.Typer(
    help="Manage the admin token. Example: tenure token rotate-admin",
    no_args_is_help=True,
)


@token_app.command("rotate-admin")
def rotate_admin(database_url: DatabaseUrl = None) -> None:
    """Make a new admin token and print it once; the old one stops working at once.

    Example: tenure token rotate-admin --database-url sqlite:///./tenure.db
    """

    async def rotate(store: Store) -> str:
        return await Coordinator(store).admin.rotate_admin_token()

    token = on_store(database_url, rotate, migrate=False)
    typer.echo(token)
    typer.echo(
        "The previous admin token no longer works. Keep this one: it is shown once.", err=True
    )


def register(app: typer.Typer) -> None:
    """Add the `token` group to the root app."""
    app.add_typer(token_app, name="token")
