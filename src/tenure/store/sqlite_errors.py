"""SQLite's errors as Tenure's: what a failed statement means to the caller.

A UNIQUE violation is a `Conflict` that says what already exists; a broken
reference is a `Conflict` too; another constraint is `InvalidInput`; a
busy, locked, unreadable or full database is `StoreUnavailable`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from tenure.core.errors import Conflict, InvalidInput, StoreUnavailable, TenureError

# SQLite's primary result codes that mean "the database cannot be used now".
_UNAVAILABLE_CODES = {
    3,  # SQLITE_PERM
    5,  # SQLITE_BUSY
    6,  # SQLITE_LOCKED
    8,  # SQLITE_READONLY
    10,  # SQLITE_IOERR
    11,  # SQLITE_CORRUPT
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
    22,  # SQLITE_NOLFS
    26,  # SQLITE_NOTADB
}


def translate_error(exc: sqlite3.Error, what: str | None = None) -> TenureError:
    """The `TenureError` for a driver error; `what` names the row being written."""
    message = str(exc)
    details: dict[str, Any] = {"sqlite": message}
    if isinstance(exc, sqlite3.IntegrityError):
        subject = what or "the row"
        if "UNIQUE" in message or "PRIMARY KEY" in message:
            if "leases.board_id, leases.task_id" in message and "leases.epoch" not in message:
                return Conflict(f"{subject}: the task already has a live lease", details=details)
            return Conflict(f"{subject} already exists", details=details)
        if "FOREIGN KEY" in message:
            return Conflict(
                f"{subject} refers to a board or task that does not exist", details=details
            )
        return InvalidInput(f"{subject} breaks a constraint: {message}", details=details)
    code = getattr(exc, "sqlite_errorcode", None)
    if (code is not None and code & 0xFF in _UNAVAILABLE_CODES) or (
        isinstance(exc, sqlite3.ProgrammingError) and "closed" in message
    ):
        return StoreUnavailable(f"the SQLite database cannot be used: {message}", details=details)
    if isinstance(exc, sqlite3.OperationalError) and (
        "locked" in message or "disk" in message or "unable to open" in message
    ):
        return StoreUnavailable(f"the SQLite database cannot be used: {message}", details=details)
    return TenureError(f"SQLite error: {message}", details=details)
