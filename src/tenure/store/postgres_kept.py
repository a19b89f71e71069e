"""The writes a PostgreSQL transaction keeps back and sends with COMMIT.

A unit of work's writes whose answers nothing waits for (events, counters,
comments, outbox rows, last-seen marks) are kept until its end and sent
with COMMIT in one round trip, through libpq's pipeline (`postgres_pipe`).
Under `write_together` (every Coordinator unit, the monitor's batches) the
task and lease writes join them, each wrapped so the server checks that it
changed exactly one row (`tenure_expect_one`, migration 0005); a read
before the end sends them first, so it sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import psycopg

from tenure.core.errors import TenureError
from tenure.core.model import Event
from tenure.store import postgres_pipe
from tenure.store import postgres_sql as pgsql
from tenure.store.postgres_errors import EXPECTED_ONE_ROW, ROW_MISSING
from tenure.store.postgres_log import SQL_BUMP, event_params
from tenure.store.postgres_pipe import Prepared


class KeptWrites:
    """The kept-back writes of an open PostgreSQL transaction (a mixin of
    `PostgresTx`, whose constructor sets the state below)."""

    if TYPE_CHECKING:
        failure: TenureError | None
        _conn: psycopg.Connection[Any]
        _statements: Prepared
        _shard: int
        _deferred: list[tuple[str, Sequence[Any]]]
        _together: bool
        _writes_kept: bool
        _locked_events: bool
        _pending_events: list[Event]
        _pending_counts: dict[tuple[str, str], int]

        def _fail(self, exc: psycopg.Error) -> NoReturn: ...

        def _append_sql(self) -> str: ...

    def _later(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Keep a write whose answer nothing waits for (an event, a counter, a
        comment, an outbox row, a last-seen mark) until the end of the unit:
        `commit` sends all of them and COMMIT in one round trip."""
        if self.failure is not None:
            raise self.failure
        self._deferred.append((sql, params))

    def flush(self) -> None:
        """Send what was kept back: the counter bumps (one statement, taken in
        one sorted order, so two transactions never deadlock on them), the
        deferred writes, then the queued events (last, so the events lock is
        held only until the commit), in one round trip."""
        self._send(self._batch())

    def commit(self) -> None:
        """Send what was kept back and COMMIT, in one round trip.

        A connection lost meanwhile leaves the outcome unknown:
        `StoreUnavailable`, like any broken connection.
        """
        self._send(self._batch(), commit=True)

    def write_together(self) -> None:
        """Keep this unit's task and lease writes until its next read or its
        commit, and send them with it (a claim: 2 round trips fewer; a monitor
        batch of 200 recoveries: 400 fewer).

        Each stays conditional, checked on the server as it runs (the
        function `tenure_expect_one`, migration 0005): a lease that moved on
        aborts the transaction, which `translate` reads as a lost race
        (`TransientFailure`), so the unit is rolled back whole and tried again.
        """
        self._together = True

    def _checked_later(
        self, sql: str, params: Sequence[Any], what: str, *, missing: bool = False
    ) -> None:
        """Keep `sql` (one INSERT or UPDATE) for the next round trip, wrapped so
        that changing anything but exactly one row aborts the transaction:
        as a lost race, or with `missing` as a row that does not exist."""
        code = ROW_MISSING if missing else EXPECTED_ONE_ROW
        self._later(pgsql.SQL_EXPECT_ONE.format(write=sql), (*params, what, code))
        self._writes_kept = True

    def _send_kept(self) -> None:
        """Send the deferred writes now (not the counters and events: those
        go with COMMIT, so the events lock is held as briefly as ever)."""
        self._writes_kept = False
        deferred, self._deferred = self._deferred, []
        self._send(deferred)

    def _batch(self) -> list[tuple[str, Sequence[Any]]]:
        if self.failure is not None:
            raise self.failure
        if self._pending_counts:
            self._flush_counts()
        pending, self._pending_events = self._pending_events, []
        for event in pending:
            self._deferred.append((self._append_sql(), event_params(event)))
            self._locked_events = True
        deferred, self._deferred = self._deferred, []
        self._writes_kept = False
        return deferred

    def _send(self, deferred: list[tuple[str, Sequence[Any]]], *, commit: bool = False) -> None:
        """Send `deferred` (and COMMIT) in one round trip, in libpq's pipeline
        mode, each statement prepared on the server (see `postgres_pipe`).

        (Bound on the client into one simple query instead, as before, every
        value went through Python's quoting and every statement was planned
        anew: claim+complete 10-15 % slower, and a monitor pass recovering
        1,000 leases about twice as slow. Through psycopg's own pipeline, each
        statement cost some 30 us of Python.)
        """
        if not deferred and not commit:
            return
        try:
            postgres_pipe.send(self._conn, self._statements, deferred, commit=commit)
        except psycopg.Error as exc:
            self._fail(exc)

    def _flush_counts(self) -> None:
        keys = sorted(self._pending_counts)
        values = [self._pending_counts[key] for key in keys]
        self._pending_counts = {}
        self._deferred.append(
            (SQL_BUMP, (self._shard, [k[0] for k in keys], [k[1] for k in keys], values))
        )
