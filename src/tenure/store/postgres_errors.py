"""What PostgreSQL's and psycopg's exceptions mean to Tenure: the stable
error codes SPEC names, from SQLSTATEs and connection failures."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pg_errors

from tenure.core.errors import Conflict, InvalidInput, NotFound, StoreUnavailable, TenureError
from tenure.store.base import TransientFailure

#: The SQLSTATEs `tenure_expect_one` (migration 0005) raises when a checked
#: write changed no row: its lease moved on; its row does not exist.
EXPECTED_ONE_ROW = "TN001"
ROW_MISSING = "TN002"


def translate(exc: BaseException) -> TenureError | None:
    """The `TenureError` a driver or pool exception stands for (None: a bug).

    Connection trouble of any kind is `StoreUnavailable`; constraint
    violations get SPEC's codes; deadlocks are `TransientFailure`.
    """
    if isinstance(exc, TenureError):
        return exc
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate in (EXPECTED_ONE_ROW, ROW_MISSING):
        # A write kept for the commit changed no row (see `PostgresTx.write_together`).
        diag = getattr(exc, "diag", None)
        message = getattr(diag, "message_primary", None) or str(exc)
        if sqlstate == ROW_MISSING:
            return NotFound(message, details={"sqlstate": sqlstate})
        return TransientFailure(
            f"{message}: lost a race; try again", details={"sqlstate": sqlstate}
        )
    if sqlstate.startswith("40"):
        # Class 40, transaction rollback: deadlock_detected, serialization_failure...
        # (psycopg does not make them subclasses of TransactionRollback).
        return TransientFailure(
            "the database aborted the transaction in a race; try again",
            details={"sqlstate": sqlstate},
        )
    if sqlstate == "26000":
        # invalid_sql_statement_name: a statement the store prepared on this
        # connection was deallocated behind its back (`postgres_pipe` reads
        # them again); the transaction is aborted, so nothing of it is kept.
        return TransientFailure(
            "a prepared statement was missing on the connection; try again",
            details={"sqlstate": sqlstate},
        )
    if isinstance(exc, pg_errors.UniqueViolation):
        return Conflict("a record with this id already exists", details=_diag(exc))
    if isinstance(exc, pg_errors.ForeignKeyViolation):
        return Conflict(
            "the record refers to a board or task that does not exist", details=_diag(exc)
        )
    if isinstance(
        exc,
        pg_errors.CheckViolation
        | pg_errors.NotNullViolation
        | pg_errors.DataError
        | pg_errors.IntegrityError,
    ):
        return InvalidInput("the database refused a value", details=_diag(exc))
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        # PoolTimeout and PoolClosed are OperationalErrors too.
        return StoreUnavailable(
            "the database cannot be reached", details={"reason": str(exc)[:300]}
        )
    return None


def _diag(exc: psycopg.Error) -> dict[str, Any]:
    details: dict[str, Any] = {"sqlstate": exc.sqlstate}
    if exc.diag.constraint_name:
        details["constraint"] = exc.diag.constraint_name
    return details
