"""The SQLite file itself: how connections are configured and how the schema is migrated.

Kept apart from `tenure.store.sqlite` (the store and its threads) so the
migration path used by `tenure db migrate` reads on its own.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tenure.core.errors import StoreUnavailable
from tenure.store import migrate as migrations
from tenure.store.sqlite_errors import translate_error

DIALECT = "sqlite"
DEFAULT_PATH = "tenure.db"


def _connect(
    path: str, *, busy_timeout_ms: int, synchronous: str, reader: bool
) -> sqlite3.Connection:
    """A configured connection (autocommit mode: we issue BEGIN/COMMIT)."""
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=512,
        timeout=busy_timeout_ms / 1000,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not reader:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"could not put {path} in WAL mode (got {mode})")
        # Under WAL, NORMAL syncs at checkpoints, not at every commit: a
        # committed transaction survives a crash of this process (the WAL is
        # in the OS's hands once COMMIT returns); only an OS crash or power
        # loss may lose the last commits. FULL also survives those, slower.
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA cache_size = -32000")
        if reader:
            conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _split_script(sql: str) -> list[str]:
    """Split SQL text into statements, so a script can run inside our transaction
    (`executescript` would commit first)."""
    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        if not buffer and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement at the end of a script: {buffer[:80]!r}")
    return statements


def _current_version(conn: sqlite3.Connection) -> int:
    """The database's schema version (0 for an empty file)."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if has_meta is None:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (migrations.VERSION_KEY,)).fetchone()
    return 0 if row is None else int(row[0])


def _migrate_connection(
    conn: sqlite3.Connection, *, apply: bool, target: int | None = None
) -> list[migrations.Migration]:
    """Check (and with `apply`, bring up to date) the schema, in one transaction."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if apply:

                def run_script(sql: str) -> None:
                    for statement in _split_script(sql):
                        conn.execute(statement)

                done = migrations.migrate(
                    DIALECT, run_script, lambda: _current_version(conn), target=target
                )
            else:
                migrations.require_current(DIALECT, _current_version(conn))
                done = []
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise translate_error(exc) from exc
    return done


def migrate_file(
    path: str | Path = DEFAULT_PATH, *, target: int | None = None
) -> list[migrations.Migration]:
    """Bring the SQLite file at `path` up to date (`tenure db migrate`); returns
    what was applied. Refuses a database newer than this code."""
    try:
        conn = _connect(str(path), busy_timeout_ms=5000, synchronous="NORMAL", reader=False)
    except sqlite3.Error as exc:
        raise translate_error(exc) from exc
    try:
        return _migrate_connection(conn, apply=True, target=target)
    finally:
        conn.close()


def schema_version_of(path: str | Path = DEFAULT_PATH) -> int:
    """The schema version of the SQLite file at `path` (0 when empty)."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None)
    except sqlite3.Error as exc:
        raise translate_error(exc) from exc
    try:
        return _current_version(conn)
    except sqlite3.Error as exc:
        raise translate_error(exc) from exc
    finally:
        conn.close()
