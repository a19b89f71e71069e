"""`tenure token rotate-admin` replaces the admin token on the database itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenure.cli import app
from tenure.core.errors import Unauthorized
from tenure.service import Coordinator
from tenure.store.sqlite import open_sqlite


async def _first_token(path: Path) -> str:
    store = await open_sqlite(path)
    try:
        token = await Coordinator(store).admin.ensure_admin_token()
        assert token is not None
        return token
    finally:
        await store.close()


async def _role_of(path: Path, token: str) -> str:
    store = await open_sqlite(path)
    try:
        return str((await Coordinator(store).authenticate(token)).role)
    finally:
        await store.close()


def test_rotating_the_admin_token_retires_the_old_one_at_once(tmp_path: Path) -> None:
    path = tmp_path / "tenure.db"
    old = asyncio.run(_first_token(path))
    result = CliRunner().invoke(
        app, ["token", "rotate-admin", "--database-url", f"sqlite:///{path}"]
    )
    assert result.exit_code == 0, result.output
    new = result.stdout.strip().splitlines()[0]
    assert new.startswith("tnr_admin_") and new != old
    assert asyncio.run(_role_of(path, new)) == "admin"
    with pytest.raises(Unauthorized):
        asyncio.run(_role_of(path, old))
