"""PostgreSQL's event log, board comments, counters and hook outbox.

A mixin of `PostgresTx` (the plumbing it calls, `_exec`, `_one`, `_all` and
`_later`, is there). Events are appended under a transaction-scoped advisory
lock, so ids become visible in id order, and each append NOTIFYs followers
at commit. The Coordinator's events, comments and outbox rows are written
late (`queue_*`): with COMMIT, in one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tenure.core.model import Comment, Event, StoredEvent
from tenure.store import rows
from tenure.store.base import OutboxRow

if TYPE_CHECKING:
    import psycopg

#: The channel every event-appending transaction notifies, with the new id.
EVENTS_CHANNEL = "tenure_events"
#: Advisory lock taken by every transaction that appends events, held to its
#: commit: event ids then become visible in id order (see `append_event`).
EVENTS_LOCK_KEY = 0x74656E7572650001
#: Counter rows per (board, name); each connection bumps its own shard.
COUNTER_SHARDS = 16

_EVENTS = rows.columns(rows.EVENT_COLUMNS)
_COMMENTS = rows.columns(rows.COMMENT_COLUMNS)
_OUTBOX = rows.columns(rows.OUTBOX_COLUMNS)
EVENT_SELECT = f"SELECT {_EVENTS} FROM events"

_EVENT_INSERT = (
    "INSERT INTO events (type, board_id, task_id, agent_id, epoch, at, data) "
    "SELECT %s, %s, %s, %s, %s, %s, %s"
)
# The first append of a transaction takes the events lock in the same
# statement (the CTE's row exists only once the lock is held, so the id is
# drawn after it); NOTIFY rides along and fires at commit.
_SQL_APPEND_FIRST_EVENT = (
    f"WITH events_lock AS (SELECT pg_advisory_xact_lock({EVENTS_LOCK_KEY})), "
    f"appended AS ({_EVENT_INSERT} FROM events_lock RETURNING id) "
    f"SELECT id, pg_notify('{EVENTS_CHANNEL}', id::text) FROM appended"
)
_SQL_APPEND_EVENT = (
    f"WITH appended AS ({_EVENT_INSERT} RETURNING id) "
    f"SELECT id, pg_notify('{EVENTS_CHANNEL}', id::text) FROM appended"
)
SQL_BUMP = (
    "INSERT INTO counters (board_id, name, shard, value) "
    "SELECT b, n, %s, v FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS u(b, n, v) "
    "ON CONFLICT (board_id, name, shard) DO UPDATE SET value = counters.value + excluded.value"
)


class PostgresLog:
    """Events, comments, counters and the outbox of an open PostgreSQL transaction."""

    if TYPE_CHECKING:
        last_event_id: int
        _locked_events: bool
        _pending_events: list[Event]
        _pending_counts: dict[tuple[str, str], int]

        @property
        def now(self) -> datetime: ...

        def _exec(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]: ...

        def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...

        def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

        def _later(self, sql: str, params: Sequence[Any] = ()) -> None: ...

        def flush(self) -> None: ...

    def queue_event(self, event: Event) -> None:
        """Keep `event` back until `flush`, just before COMMIT: the events lock
        (see `append_event`) is then held for the commit alone, not for the
        rest of the unit of work."""
        self._pending_events.append(event)

    def append_event(self, event: Event) -> int:
        """Append to the log (and NOTIFY followers at commit); returns the id.

        The first append of a transaction takes the events advisory lock,
        held until commit: an id is drawn only by the one transaction that
        will commit next among appenders, so ids become visible in order and
        "everything after id N" never misses a lower id committed later.
        """
        row = self._one(self._append_sql(), event_params(event))
        assert row is not None
        self._locked_events = True
        event_id = int(row[0])
        self.last_event_id = max(self.last_event_id, event_id)
        return event_id

    def _append_sql(self) -> str:
        return _SQL_APPEND_EVENT if self._locked_events else _SQL_APPEND_FIRST_EVENT

    def add_comment(self, comment: Comment) -> int:
        row = self._one(
            "INSERT INTO comments (board_id, task_id, at, author, body) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (comment.board_id, comment.task_id, comment.at, comment.author, comment.body),
        )
        assert row is not None
        return int(row[0])

    def queue_comment(self, comment: Comment) -> None:
        """Add a comment whose id nobody needs: sent with the next round trip."""
        self._later(
            "INSERT INTO comments (board_id, task_id, at, author, body) "
            "VALUES (%s, %s, %s, %s, %s)",
            (comment.board_id, comment.task_id, comment.at, comment.author, comment.body),
        )

    def comments(self, board_id: str, task_id: str) -> list[Comment]:
        found = self._all(
            f"SELECT {_COMMENTS} FROM comments WHERE board_id = %s AND task_id = %s ORDER BY id",
            (board_id, task_id),
        )
        return [rows.comment_from_row(row) for row in found]

    def bump(self, board_id: str, counter: str, by: int = 1) -> None:
        """Add `by` to a counter (written with the rest at the end; see `flush`)."""
        key = (board_id, str(counter))
        self._pending_counts[key] = self._pending_counts.get(key, 0) + by

    def counters(self, board_id: str | None = None) -> dict[str, int]:
        """Counter totals, of one board or of all boards together."""
        self.flush()
        if board_id is None:
            found = self._all("SELECT name, sum(value) FROM counters GROUP BY name ORDER BY name")
        else:
            found = self._all(
                "SELECT name, sum(value) FROM counters WHERE board_id = %s "
                "GROUP BY name ORDER BY name",
                (board_id,),
            )
        return {name: int(total) for name, total in found}

    def enqueue_hook(
        self, kind: str, board_id: str, payload: dict[str, Any], idempotency_key: str
    ) -> int:
        """Add an outbox row; a repeated idempotency key returns the existing row's id."""
        row = self._one(
            "INSERT INTO outbox (kind, board_id, payload, idempotency_key, next_attempt_at, "
            "created_at) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            (kind, board_id, rows.dump_json(payload), idempotency_key, self.now, self.now),
        )
        if row is None:
            row = self._one("SELECT id FROM outbox WHERE idempotency_key = %s", (idempotency_key,))
            assert row is not None
        return int(row[0])

    def queue_hook(
        self, kind: str, board_id: str, payload: dict[str, Any], idempotency_key: str
    ) -> None:
        """`enqueue_hook` whose row id nobody needs: sent with the next round trip."""
        self._later(
            "INSERT INTO outbox (kind, board_id, payload, idempotency_key, next_attempt_at, "
            "created_at) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (idempotency_key) DO NOTHING",
            (kind, board_id, rows.dump_json(payload), idempotency_key, self.now, self.now),
        )

    def due_hooks(self, now: datetime, limit: int) -> list[OutboxRow]:
        """Undelivered rows whose next attempt is due, locked (SKIP LOCKED)."""
        found = self._all(
            f"SELECT {_OUTBOX} FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= %s "
            "ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
            (now, limit),
        )
        return [rows.outbox_from_row(row) for row in found]

    def mark_hook(
        self,
        row_id: int,
        *,
        delivered: bool,
        next_attempt_at: datetime | None = None,
        error: str | None = None,
    ) -> None:
        """Record one delivery attempt: delivered, or when to try again."""
        if delivered:
            self._exec(
                "UPDATE outbox SET attempts = attempts + 1, delivered_at = %s, last_error = %s "
                "WHERE id = %s",
                (self.now, error, row_id),
            )
        else:
            self._exec(
                "UPDATE outbox SET attempts = attempts + 1, "
                "next_attempt_at = coalesce(%s, next_attempt_at), last_error = %s WHERE id = %s",
                (next_attempt_at, error, row_id),
            )


def stored_event(row: Sequence[Any]) -> StoredEvent:
    """A stored event from a row in `rows.EVENT_COLUMNS` order."""
    return rows.event_from_row(row)


def event_params(event: Event) -> tuple[Any, ...]:
    return (
        str(event.type),
        event.board_id,
        event.task_id,
        event.agent_id,
        event.epoch,
        event.at,
        rows.dump_json(event.data),
    )
