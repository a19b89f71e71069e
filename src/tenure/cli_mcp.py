"""`tenure mcp`: Tenure's MCP tools over stdio, proxied to a running server."""

from __future__ import annotations

from typing import Annotated

import typer

DEFAULT_URL = "http://127.0.0.1:8321"


def mcp(
    url: Annotated[
        str,
        typer.Option(envvar="TENURE_URL", help="The Tenure server's base URL (or its /mcp URL)."),
    ] = DEFAULT_URL,
    token: Annotated[
        str,
        typer.Option(
            envvar="TENURE_TOKEN",
            help="An agent token, or a board's enrolment key (then call register_agent first).",
            show_default=False,
        ),
    ] = "",
) -> None:
    """Serve Tenure's MCP tools on stdin/stdout for a client that spawns its servers.

    Every tool call goes to the server at --url under --token. When stdin
    ends (the agent process exited) the upstream session is closed, and the
    server takes the agent's leases back within 30 s unless it returns.
    SIGTERM/SIGINT stop the proxy without that goodbye.

    Example: TENURE_TOKEN=tnr_agent_... tenure mcp --url http://127.0.0.1:8321
    """
    if not token:
        typer.echo("tenure mcp: a token is required (--token or TENURE_TOKEN)", err=True)
        raise typer.Exit(2)
    from tenure.mcp_stdio import main

    raise typer.Exit(main(url, token))


def register(app: typer.Typer) -> None:
    """Add `tenure mcp` to the root app."""
    app.command("mcp")(mcp)
