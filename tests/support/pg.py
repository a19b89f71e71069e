"""Fresh PostgreSQL databases for tests, cheaply, from a migrated template.

The server is the machine's PostgreSQL at 127.0.0.1:5432 (trust auth, user
`postgres`); `TENURE_TEST_PG` may name another admin DSN. Each test process
(each pytest-xdist worker is one) migrates one template database,
`tenure_tpl_<pid>_<random>`, the first time it needs one; every fresh
database is then `CREATE DATABASE tenure_t_<pid>_<random> TEMPLATE ...`, a
copy of a few megabytes instead of a migration. Workers never share a
template, so no lock is needed between them. Every database a process made is
dropped when it exits; those of a process that died (a killed run) are
dropped by the next run.

When PostgreSQL cannot be reached its tests skip with a loud reason; with
CI=true they fail instead, so CI never passes without having run them.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tenure.clock import Clock
from tenure.store.postgres import PostgresStore, migrate_postgres, open_postgres

ADMIN_DSN = os.environ.get(
    "TENURE_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
_PREFIX = "tenure_"
_OURS = re.compile(r"tenure_(?:tpl|t)_(\d+)_[0-9a-f]{12}")

_lock = threading.Lock()
_available: bool | None = None
_unavailable_reason = ""
_template: str | None = None
_created: list[str] = []


def _new_name(kind: str) -> str:
    # The pid lets a later run find the leftovers of a dead process; the
    # random part keeps names unique even across pid namespaces.
    return f"{_PREFIX}{kind}_{os.getpid()}_{uuid.uuid4().hex[:12]}"


def dsn_for(database: str) -> str:
    """The DSN of `database` on the test server."""
    return psycopg.conninfo.make_conninfo(ADMIN_DSN, dbname=database)


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=3)


def postgres_available() -> bool:
    """True if the test server answers (asked once per process)."""
    global _available, _unavailable_reason
    with _lock:
        if _available is None:
            try:
                with _admin() as conn:
                    conn.execute("SELECT 1")
                _available = True
            except psycopg.Error as exc:
                _available = False
                _unavailable_reason = str(exc).strip().splitlines()[0] if str(exc) else repr(exc)
        return _available


def require_postgres() -> None:
    """Skip the calling test loudly if PostgreSQL is down; fail it under CI=true."""
    if postgres_available():
        return
    message = (
        f"POSTGRESQL IS NOT REACHABLE at {ADMIN_DSN!r} ({_unavailable_reason}): "
        "the PostgreSQL tests did NOT run. Start it with "
        "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`."
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " CI=true: a missing PostgreSQL fails the run.", pytrace=False)
    pytest.skip(message)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _drop_orphans(conn: psycopg.Connection[Any]) -> None:
    """Drop test databases of processes that are gone (a killed earlier run).

    Without FORCE: a database somebody is still connected to (a process in
    another pid namespace, say) is left alone.
    """
    names = [row[0] for row in conn.execute("SELECT datname FROM pg_database")]
    for name in names:
        match = _OURS.fullmatch(name)
        if match and not _alive(int(match.group(1))):
            try:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            except psycopg.Error:
                continue


def _ensure_template() -> str:
    global _template
    with _lock:
        if _template is not None:
            return _template
        name = _new_name("tpl")
        with _admin() as conn:
            _drop_orphans(conn)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        migrate_postgres(dsn_for(name))
        with _admin() as conn:
            # Nobody may connect to it any more: a session on a template
            # would make every CREATE DATABASE ... TEMPLATE fail.
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                    sql.Identifier(name)
                )
            )
        _template = name
        if not _created:
            atexit.register(_drop_everything)
        _created.append(name)
        return name


def fresh_postgres_dsn() -> str:
    """The DSN of a new, empty database migrated to the code's schema version.

    Synchronous, for tests that hand the DSN to servers in other processes.
    Skips (or under CI=true fails) the test when PostgreSQL is down.
    """
    require_postgres()
    template = _ensure_template()
    name = _new_name("t")
    with _admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    with _lock:
        _created.append(name)
    return dsn_for(name)


def empty_postgres_dsn() -> str:
    """The DSN of a new database with no schema at all (for migration tests)."""
    require_postgres()
    name = _new_name("t")
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with _lock:
        if not _created:
            atexit.register(_drop_everything)
        _created.append(name)
    return dsn_for(name)


async def open_postgres_store(clock: Clock | None, **options: Any) -> PostgresStore:
    """A `PostgresStore` on a fresh database; `clock` None means the database's."""
    dsn = await asyncio.to_thread(fresh_postgres_dsn)
    options.setdefault("max_size", 4)
    return await open_postgres(dsn, clock, **options)


async def reopen_postgres_store(
    store: PostgresStore, clock: Clock | None, **options: Any
) -> PostgresStore:
    """Another `PostgresStore` on the same database as `store`."""
    options.setdefault("max_size", 4)
    return await open_postgres(store.dsn, clock, **options)


def _drop_everything() -> None:
    """At exit: drop every database this process made (the template last)."""
    with _lock:
        names = list(reversed(_created))
        _created.clear()
    if not names:
        return
    try:
        with _admin() as conn:
            for name in names:
                _drop(conn, name)
    except psycopg.Error:
        pass  # the next run drops what this one could not (see _drop_orphans)


def terminate_sessions(dsn: str) -> None:
    """End every other session on `dsn`'s database, as a server restart would:
    pooled connections then die while idle. Waits (up to 5 s each) until
    the backends are gone."""
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(
        psycopg.conninfo.make_conninfo(dsn, dbname="postgres"), autocommit=True
    ) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def postgres_url(dsn: str) -> str:
    """A libpq DSN as the postgresql:// URL `tenure serve` takes."""
    parts = psycopg.conninfo.conninfo_to_dict(dsn)
    user = parts.get("user", "postgres")
    return f"postgresql://{user}@{parts['host']}:{parts['port']}/{parts['dbname']}"


async def open_into(stores: list[PostgresStore], dsn: str, **options: Any) -> PostgresStore:
    """A store on `dsn` (a pool of 2 unless `options` say otherwise), kept
    in `stores` so the test's fixture closes it."""
    options.setdefault("max_size", 2)
    store = await open_postgres(dsn, **options)
    stores.append(store)
    return store
