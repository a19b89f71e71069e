"""Schema migrations: numbered SQL files per dialect, applied in order.

The files live in the package, `tenure/store/migrations/<dialect>/NNNN_name.sql`.
The version a database is at is the `schema_version` row of its `meta`
table (0 when there is no such table: an empty database). `migrate` applies
the missing files in order, each followed by the statement that records its
number, and refuses a database newer than the code (`SchemaTooNew`).

The framework never touches a connection itself, so every store can call
it with its own: it takes an `execute_script` callable (run some SQL text,
possibly several statements, inside the caller's transaction) and a
`current_version` callable. The caller opens the transaction around
`migrate(...)` and commits it, so either every missing file is applied or
none is, and two processes migrating at once are serialised by the
database's own lock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from tenure.core.errors import StoreUnavailable

#: The `meta` key holding the schema version.
VERSION_KEY = "schema_version"

_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


class SchemaTooNew(StoreUnavailable):
    """The database was migrated by a newer Tenure than this one."""


class SchemaOutdated(StoreUnavailable):
    """The database needs migrations this process was told not to apply."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file of one dialect."""

    dialect: str
    version: int
    name: str
    sql: str


@cache
def available(dialect: str) -> tuple[Migration, ...]:
    """Every migration of `dialect`, in version order (numbers must be 1..n)."""
    folder = resources.files("tenure.store") / "migrations" / dialect
    if not folder.is_dir():
        raise ValueError(f"no migrations for dialect {dialect!r}")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            continue
        found.append(
            Migration(dialect, int(match.group(1)), match.group(2), entry.read_text("utf-8"))
        )
    found.sort(key=lambda migration: migration.version)
    numbers = [migration.version for migration in found]
    if numbers != list(range(1, len(found) + 1)):
        raise ValueError(f"{dialect} migrations must be numbered 1..n, found {numbers}")
    return tuple(found)


def latest_version(dialect: str) -> int:
    """The version this code migrates a `dialect` database to."""
    return len(available(dialect))


def check_not_newer(dialect: str, current: int) -> None:
    """Raise `SchemaTooNew` if a database at `current` is newer than this code."""
    latest = latest_version(dialect)
    if current > latest:
        raise SchemaTooNew(
            f"the database is at schema version {current}, newer than this Tenure "
            f"knows ({latest}); upgrade Tenure before opening it",
            details={"database_version": current, "code_version": latest},
        )


def pending(dialect: str, current: int) -> list[Migration]:
    """The migrations a database at version `current` still needs, in order."""
    check_not_newer(dialect, current)
    return [migration for migration in available(dialect) if migration.version > current]


def version_statement(version: int) -> str:
    """SQL recording `version` in `meta` (valid on SQLite and PostgreSQL)."""
    return (
        f"INSERT INTO meta (key, value) VALUES ('{VERSION_KEY}', '{int(version)}') "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value;"
    )


def migrate(
    dialect: str,
    execute_script: Callable[[str], None],
    current_version: Callable[[], int],
    *,
    target: int | None = None,
) -> list[Migration]:
    """Apply the missing migrations (up to `target`, default the latest) in order.

    Call it inside one transaction of the database being migrated; returns
    what was applied (empty when the database was up to date).
    """
    current = current_version()
    todo = pending(dialect, current)
    if target is not None:
        todo = [migration for migration in todo if migration.version <= target]
    for migration in todo:
        execute_script(migration.sql)
        execute_script(version_statement(migration.version))
    return todo


def require_current(dialect: str, current: int) -> None:
    """Raise unless a database at `current` is exactly at this code's version."""
    check_not_newer(dialect, current)
    latest = latest_version(dialect)
    if current < latest:
        raise SchemaOutdated(
            f"the database is at schema version {current}, this Tenure needs {latest}; "
            "run `tenure db migrate`",
            details={"database_version": current, "code_version": latest},
        )
