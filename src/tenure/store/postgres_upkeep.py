"""PostgreSQL's upkeep statements: pruning old history, and writing imported history.

A mixin of `PostgresTx`, the twin of `tenure.store.sqlite_upkeep` (the same
rules, in PostgreSQL's SQL): retention deletes, in small batches, events
and comments older than a cutoff whose task is `done` or gone (events
naming no task too); an import appends a board's events and comments with
their own times. Rows another replica is pruning at the same moment are
skipped (SKIP LOCKED), so several monitors prune side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tenure.core.model import Comment, Event
from tenure.store.postgres_log import EVENTS_CHANNEL, EVENTS_LOCK_KEY
from tenure.store.rows import dump_json

if TYPE_CHECKING:
    import psycopg

_PRUNE_EVENTS = (
    "DELETE FROM events WHERE id IN ("
    "SELECT e.id FROM events AS e WHERE e.at < %s AND ("
    "e.task_id IS NULL OR NOT EXISTS (SELECT 1 FROM tasks AS t "
    "WHERE t.board_id = e.board_id AND t.id = e.task_id AND t.status <> 'done')) "
    "ORDER BY e.at LIMIT %s FOR UPDATE OF e SKIP LOCKED)"
)
_PRUNE_COMMENTS = (
    "DELETE FROM comments WHERE id IN ("
    "SELECT c.id FROM comments AS c JOIN tasks AS t "
    "ON t.board_id = c.board_id AND t.id = c.task_id "
    "WHERE c.at < %s AND t.status = 'done' ORDER BY c.at LIMIT %s FOR UPDATE OF c SKIP LOCKED)"
)
# Imported events are appended under the events lock like any others (see
# PostgresTx.append_event), and followers are told once, with the last id.
_LOCK_EVENTS = "SELECT pg_advisory_xact_lock(%s)"
_INSERT_EVENTS = (
    "INSERT INTO events (type, board_id, task_id, agent_id, epoch, at, data) "
    "SELECT y, b, t, a, p, w, d FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::integer[], %s::timestamptz[], %s::jsonb[]) WITH ORDINALITY AS u(y, b, t, a, p, w, d, n) "
    "ORDER BY n RETURNING id"
)
_INSERT_COMMENTS = (
    "INSERT INTO comments (board_id, task_id, at, author, body) "
    "SELECT b, t, a, w, x FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[], "
    "%s::text[]) WITH ORDINALITY AS u(b, t, a, w, x, n) ORDER BY n"
)


class PostgresUpkeep:
    """Retention and import statements of an open PostgreSQL transaction."""

    if TYPE_CHECKING:
        last_event_id: int
        _locked_events: bool

        def _exec(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]: ...

    def prune_events(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` of the oldest prunable events older than `before`."""
        return self._exec(_PRUNE_EVENTS, (before, limit)).rowcount

    def prune_comments(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` of the oldest comments of done tasks older than `before`."""
        return self._exec(_PRUNE_COMMENTS, (before, limit)).rowcount

    def insert_events(self, events: Sequence[Event]) -> int:
        """Append `events` in their order, each keeping its own time; returns how many."""
        if not events:
            return 0
        if not self._locked_events:
            self._exec(_LOCK_EVENTS, (EVENTS_LOCK_KEY,))
            self._locked_events = True
        cursor = self._exec(
            _INSERT_EVENTS,
            (
                [str(e.type) for e in events],
                [e.board_id for e in events],
                [e.task_id for e in events],
                [e.agent_id for e in events],
                [e.epoch for e in events],
                [e.at for e in events],
                [dump_json(e.data) for e in events],
            ),
        )
        ids = [int(row[0]) for row in cursor.fetchall()]
        self.last_event_id = max(self.last_event_id, *ids)
        self._exec("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, str(self.last_event_id)))
        return len(ids)

    def insert_comments(self, comments: Sequence[Comment]) -> int:
        """Add `comments` in their order, each keeping its time and author."""
        if not comments:
            return 0
        self._exec(
            _INSERT_COMMENTS,
            (
                [c.board_id for c in comments],
                [c.task_id for c in comments],
                [c.at for c in comments],
                [c.author for c in comments],
                [c.body for c in comments],
            ),
        )
        return len(comments)
