"""PostgreSQL's schema and connections: the settings every connection gets,
and the migrations (`tenure db migrate`), run under an advisory lock so two
processes never migrate one database at once. The store itself is in
`tenure.store.postgres`."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from tenure.core.errors import InvalidInput, StoreUnavailable
from tenure.store import migrate as migrations

log = logging.getLogger("tenure.store.postgres")

DIALECT = "postgres"
#: Serialises migrations of one database between processes.
MIGRATE_LOCK_KEY = 0x74656E7572650002


def connect_kwargs(dsn: str, connect_timeout: float) -> dict[str, Any]:
    """Connection settings added to the DSN's own.

    Autocommit: the store sends BEGIN/COMMIT itself (BEGIN shares a round
    trip with the clock read). TimeZone UTC: timestamptz comes back in UTC
    (as `timezone.utc`, no conversion per value); appended to any `options`
    the DSN has, which a keyword argument would otherwise replace.
    """
    try:
        options = psycopg.conninfo.conninfo_to_dict(dsn).get("options") or ""
    except psycopg.Error as exc:
        raise InvalidInput("not a valid PostgreSQL connection string", details={}) from exc
    return {
        "autocommit": True,
        "connect_timeout": max(1, round(connect_timeout)),
        "options": f"{options} -c TimeZone=UTC".strip(),
    }


def schema_version_on(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    row = conn.execute(
        "SELECT value FROM meta WHERE key = %s", (migrations.VERSION_KEY,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def migrate_on(
    conn: psycopg.Connection[Any], *, apply: bool, target: int | None = None
) -> list[int]:
    """Check (and with `apply`, bring up to date) the schema, in one transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK_KEY,))
        current = schema_version_on(conn)
        if not apply:
            migrations.require_current(DIALECT, current)
            return []

        def execute_script(sql: str) -> None:
            # No parameters: psycopg sends the text as one simple query, so
            # a file of several statements runs as it is.
            conn.execute(sql.encode())

        done = migrations.migrate(DIALECT, execute_script, lambda: current, target=target)
        if target is None:
            migrations.require_current(DIALECT, schema_version_on(conn))
    for migration in done:
        log.info("postgres schema migrated to version %d (%s)", migration.version, migration.name)
    return [migration.version for migration in done]


def connect(dsn: str, connect_timeout: float) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, **connect_kwargs(dsn, connect_timeout))
    except psycopg.Error as exc:
        raise StoreUnavailable(
            "the PostgreSQL database cannot be reached", details={"reason": str(exc)[:300]}
        ) from exc


def migrate_postgres(
    dsn: str, *, target: int | None = None, connect_timeout: float = 5.0
) -> list[int]:
    """Apply the missing migrations to the database at `dsn` (`tenure db migrate`).

    Returns the versions applied, in order (empty when up to date). Refuses
    a database newer than this code (`migrate.SchemaTooNew`).
    """
    with connect(dsn, connect_timeout) as conn:
        return migrate_on(conn, apply=True, target=target)


def postgres_schema_version(dsn: str, *, connect_timeout: float = 5.0) -> int:
    """The schema version of the database at `dsn` (0 for an empty database)."""
    with connect(dsn, connect_timeout) as conn:
        return schema_version_on(conn)
