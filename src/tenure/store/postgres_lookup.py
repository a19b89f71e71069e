"""A quick read on PostgreSQL: each statement on its own, one round trip.

`Store.read(fn, quick=True)` is for lookups such as a bearer token's owner,
made before every call over HTTP or MCP. Run as a unit of work it cost three
round trips (BEGIN with the clock, the lookup, COMMIT), about 0.56 ms here,
nearly as much as the call it let in. A lookup needs none of what
the unit gave: no snapshot across statements (under READ COMMITTED each
statement sees what committed before it ran anyway), no lock, no clock. So
each of its statements is sent alone as a READ ONLY transaction, BEGIN,
the statement (prepared once per connection, like a unit's) and COMMIT in
one pipeline: one round trip.

`LookupTx` refuses what a lookup must not do: PostgreSQL refuses a write
in a READ ONLY transaction, writes kept for a COMMIT are refused before
they are kept, and the clock cannot be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

import psycopg

from tenure.core.errors import TenureError
from tenure.core.model import Event
from tenure.store import postgres_pipe
from tenure.store.postgres_pipe import Prepared, Step
from tenure.store.postgres_tx import PostgresTx

#: Stands for a lookup's moment, which nothing may read (see `LookupTx.now`).
_NO_MOMENT = datetime.min

_BEGIN_READ_ONLY = "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY"
_COMMIT = "COMMIT"


def _not_a_lookup() -> TenureError:
    return TenureError("a quick read only looks rows up: run this in a unit of work")


class LookupTx(PostgresTx):
    """The `Tx` of a quick read: `_one` and `_all` send their statement at
    once, in a READ ONLY transaction of its own. After a failure (the
    connection is then left in an aborted transaction, for the store to roll
    back) every statement raises it again."""

    def __init__(self, conn: psycopg.Connection[Any], statements: Prepared) -> None:
        super().__init__(conn, _NO_MOMENT, 0, statements=statements)

    @property
    def now(self) -> datetime:
        """A lookup has no moment: it must not judge time (use a unit of work)."""
        raise TenureError("a quick read has no clock: read tx.now in a unit of work")

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self.failure is not None:
            raise self.failure
        steps: list[Step] = [(_BEGIN_READ_ONLY, None), (sql, params), (_COMMIT, None)]
        try:
            _, result, _ = postgres_pipe.execute(self._conn, self._statements, steps)
            return self._statements.rows(self._conn, result)
        except psycopg.Error as exc:
            self._fail(exc)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        found = self._rows(sql, params)
        return found[0] if found else None

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._rows(sql, params)

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> NoReturn:
        # The statements that use the cursor itself (writes, a few reads).
        raise _not_a_lookup()

    def _later(self, sql: str, params: Sequence[Any] = ()) -> NoReturn:
        raise _not_a_lookup()

    def queue_event(self, event: Event) -> NoReturn:
        raise _not_a_lookup()

    def bump(self, board_id: str, counter: str, by: int = 1) -> NoReturn:
        raise _not_a_lookup()
