"""SQLite's upkeep statements: pruning old history, and writing imported history.

A mixin of `SqliteTx` (kept apart so the everyday statements stay short to
read): retention deletes old events and comments in small batches, and an
import appends a board's events and comments with their own times. What may
be pruned is decided here, in SQL, the same way as on PostgreSQL: a row
older than the cutoff whose task is `done`, no longer exists, or (events
only) that names no task. Tasks not yet done keep their whole history.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tenure.core.model import Comment, Event
from tenure.store.rows import dump_json, encode_time

# Oldest first through events_by_at; a row whose task is still open is
# skipped (it stays, however old), so each batch only deletes what may go.
_PRUNE_EVENTS = (
    "DELETE FROM events WHERE id IN ("
    "SELECT e.id FROM events AS e INDEXED BY events_by_at WHERE e.at < ? AND ("
    "e.task_id IS NULL OR NOT EXISTS (SELECT 1 FROM tasks AS t "
    "WHERE t.board_id = e.board_id AND t.id = e.task_id AND t.status != 'done')) "
    "ORDER BY e.at LIMIT ?)"
)
# Comments belong to a task (deleting the task deletes them): only a done
# task's old comments go.
_PRUNE_COMMENTS = (
    "DELETE FROM comments WHERE id IN ("
    "SELECT c.id FROM comments AS c JOIN tasks AS t "
    "ON t.board_id = c.board_id AND t.id = c.task_id "
    "WHERE c.at < ? AND t.status = 'done' ORDER BY c.at LIMIT ?)"
)
_INSERT_EVENT = (
    "INSERT INTO events (type, board_id, task_id, agent_id, epoch, at, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_COMMENT = (
    "INSERT INTO comments (board_id, task_id, at, author, body) VALUES (?, ?, ?, ?, ?)"
)


class SqliteUpkeep:
    """Retention and import statements of an open SQLite transaction."""

    if not TYPE_CHECKING:
        # SqliteTx declares the slots (mypy would check the mixin's empty ones).
        __slots__ = ()
    else:
        last_event_id: int

        def _exec(
            self, sql: str, params: Sequence[Any] = (), what: str | None = None
        ) -> sqlite3.Cursor:
            raise NotImplementedError  # SqliteTx's

    def prune_events(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` of the oldest prunable events older than `before`."""
        return self._exec(_PRUNE_EVENTS, (encode_time(before), limit)).rowcount

    def prune_comments(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` of the oldest comments of done tasks older than `before`."""
        return self._exec(_PRUNE_COMMENTS, (encode_time(before), limit)).rowcount

    def insert_events(self, events: Sequence[Event]) -> int:
        """Append `events` in their order, each keeping its own time; returns how many."""
        for event in events:
            cursor = self._exec(
                _INSERT_EVENT,
                (
                    str(event.type),
                    event.board_id,
                    event.task_id,
                    event.agent_id,
                    event.epoch,
                    encode_time(event.at),
                    dump_json(event.data),
                ),
                f"event {event.type}",
            )
            self.last_event_id = int(cursor.lastrowid or self.last_event_id)
        return len(events)

    def insert_comments(self, comments: Sequence[Comment]) -> int:
        """Add `comments` in their order, each keeping its time and author."""
        for comment in comments:
            self._exec(
                _INSERT_COMMENT,
                (
                    comment.board_id,
                    comment.task_id,
                    encode_time(comment.at),
                    comment.author,
                    comment.body,
                ),
                f"comment on task {comment.task_id!r}",
            )
        return len(comments)
