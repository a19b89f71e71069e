"""The PostgreSQL test support itself: fresh databases, and the skip rule."""

from __future__ import annotations

import socket

import psycopg
import pytest
import tests.support.pg as pg

from tenure.store import migrate


def _closed_port_dsn() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"host=127.0.0.1 port={port} user=postgres dbname=postgres"


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "ADMIN_DSN", _closed_port_dsn())
    monkeypatch.setattr(pg, "_available", None)


@pytest.mark.usefixtures("unreachable")
def test_an_unreachable_server_skips_loudly_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    assert pg.postgres_available() is False
    with pytest.raises(pytest.skip.Exception, match="POSTGRESQL IS NOT REACHABLE"):
        pg.fresh_postgres_dsn()


@pytest.mark.usefixtures("unreachable")
def test_an_unreachable_server_fails_the_run_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        pg.fresh_postgres_dsn()


@pytest.mark.postgres
def test_each_fresh_database_is_new_empty_and_migrated() -> None:
    first, second = pg.fresh_postgres_dsn(), pg.fresh_postgres_dsn()
    assert first != second
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('mark', 'first')")
    with psycopg.connect(second) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'mark'").fetchone() is None
        (version,) = conn.execute(
            "SELECT value FROM meta WHERE key = %s", (migrate.VERSION_KEY,)
        ).fetchone() or (None,)
        assert version == str(migrate.latest_version("postgres"))
