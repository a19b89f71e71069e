"""Upgrades: `tenure serve` migrates the embedded store itself and refuses a
PostgreSQL database one migration behind, naming `tenure db migrate`.

"One migration behind" needs a migration this code has beyond the
database's: the tests add a second, test-only migration to the loader
(in-process with monkeypatch, in a `tenure` subprocess with a wrapper).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from tests.support import pg

from tenure.settings import load_settings
from tenure.store import migrate
from tenure.store.migrate import Migration, SchemaOutdated
from tenure.store.sqlite import open_sqlite
from tenure.upgrade import open_for_serving

EXTRA_SQL = "CREATE TABLE ops_upgrade_probe (id integer PRIMARY KEY);"

# `tenure ...` with one extra migration in the loader.
_WRAPPER = f"""
import tenure.store.migrate as m
real = m.available
def available(dialect):
    base = real(dialect)
    return (*base, m.Migration(dialect, len(base) + 1, "ops_probe", {EXTRA_SQL!r}))
m.available = available
from tenure.cli import main
main()
"""


def pg_url(dsn: str) -> str:
    """A postgresql:// URL for a key=value DSN of the test server."""
    parts = psycopg.conninfo.conninfo_to_dict(dsn)
    user = parts.get("user") or "postgres"
    host = parts.get("host") or "127.0.0.1"
    port = parts.get("port") or 5432
    return f"postgresql://{user}@{host}:{port}/{parts['dbname']}"


def _with_extra_migration(monkeypatch: pytest.MonkeyPatch, dialect: str) -> int:
    real = migrate.available

    def available(dialect: str) -> tuple[Migration, ...]:
        base = real(dialect)
        return (*base, Migration(dialect, len(base) + 1, "ops_probe", EXTRA_SQL))

    monkeypatch.setattr(migrate, "available", available)
    return len(real(dialect)) + 1


def _tenure(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "TENURE_LOG_FORMAT": "text"}
    return subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_a_postgres_database_one_migration_behind(tmp_path: Path) -> None:
    dsn = pg_url(pg.fresh_postgres_dsn())  # at this code's version, one behind the wrapper's
    refused = _tenure("serve", "--port", "0", "--database-url", dsn, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "tenure db migrate" in refused.stderr
    assert "needs" in refused.stderr

    migrated = _tenure("db", "migrate", "--json", "--database-url", dsn, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    wanted = migrate.latest_version("postgres") + 1
    assert f'"schema_version": {wanted}' in migrated.stdout


async def test_a_current_postgres_database_and_an_empty_one_are_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = pg_url(await asyncio.to_thread(pg.empty_postgres_dsn))
    settings = load_settings({"TENURE_STORE_DATABASE_URL": dsn})
    store = await open_for_serving(settings)  # an empty database gets its schema
    try:
        assert await store.schema_version() == migrate.latest_version("postgres")  # type: ignore[attr-defined]
    finally:
        await store.close()
    latest = _with_extra_migration(monkeypatch, "postgres")
    with pytest.raises(SchemaOutdated, match="tenure db migrate"):
        await open_for_serving(settings)
    always = load_settings({"TENURE_STORE_DATABASE_URL": dsn, "TENURE_STORE_MIGRATE": "always"})
    store = await open_for_serving(always)
    try:
        assert await store.schema_version() == latest  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_the_embedded_store_is_migrated_at_start_unless_told_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tenure.db"
    store = await open_sqlite(str(path))
    await store.close()
    latest = _with_extra_migration(monkeypatch, "sqlite")
    url = f"sqlite:///{path}"
    never = load_settings({"TENURE_STORE_DATABASE_URL": url, "TENURE_STORE_MIGRATE": "never"})
    with pytest.raises(SchemaOutdated, match="tenure db migrate"):
        await open_for_serving(never)
    store = await open_for_serving(load_settings({"TENURE_STORE_DATABASE_URL": url}))
    try:
        assert await store.schema_version() == latest  # type: ignore[attr-defined]
    finally:
        await store.close()
