"""Backup and move: a whole board as one JSON document, and back into any store.

`export_board(store, board_id)` gathers everything the board is: the board
(with its enrolment key's hash), its agents (with their token hashes, so
agents keep working after a move without new tokens), its tasks (status,
dependencies, handoffs, epochs, flags), every lease (the live ones and the
whole lease history), the comments, the event log and the counters.
`import_board(store, document)` writes it into another store, of either
dialect, in one transaction: all of it or nothing. That is how a board moves
from SQLite to PostgreSQL without losing its history.

Records travel in the stores' own column layout (`tenure.store.rows`), with
the JSON columns as JSON and times as ISO text in UTC, so a round trip is
exact. Event and comment ids are renumbered by the receiving store; their
order and their times are kept. What does not travel: the admin token (each
store has its own), open MCP sessions (agents reconnect), and hook
deliveries still in the outbox.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tenure import __version__
from tenure.core.errors import Conflict, InvalidInput, NotFound
from tenure.core.model import (
    Agent,
    Board,
    Comment,
    Event,
    EventType,
    Lease,
    StoredEvent,
    Task,
    parse_time,
)
from tenure.store import rows
from tenure.store.base import Store, Tx

#: What the document says it is, and the layout version this code writes.
FORMAT = "tenure-board"
FORMAT_VERSION = 1

#: Events read per query while exporting.
_EVENT_PAGE = 1000

# Columns that hold JSON text in the stores: exported as JSON values.
_JSON_COLUMNS = frozenset(
    {"skills", "labels", "required_skills", "dependencies", "handoff", "flags", "progress_stamps"}
)


def _record(names: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A row as a JSON-ready mapping (JSON columns decoded)."""
    out: dict[str, Any] = {}
    for name, value in zip(names, row, strict=True):
        out[name] = json.loads(value) if name in _JSON_COLUMNS and value is not None else value
    return out


#: Lease columns added after the export format was fixed, with the value a
#: lease exported before them had: such an export still imports.
_LEASE_COLUMNS_ADDED: dict[str, Any] = {
    "last_call_at": None,
    "signal_gaps": [],
    "suspect_dropped": False,
}


def _row(
    names: Sequence[str], record: dict[str, Any], what: str, added: dict[str, Any] | None = None
) -> list[Any]:
    """A mapping back in column order (the row readers accept decoded JSON);
    `added` fills columns that exports made before them lack."""
    record = {**(added or {}), **record}
    missing = [name for name in names if name not in record]
    if missing:
        raise InvalidInput(f"{what} lacks {', '.join(missing)}", details={"missing": missing})
    return [record[name] for name in names]


# export ----------------------------------------------------------------------------


def _snapshot(tx: Tx, board_id: str) -> dict[str, Any]:
    board = tx.get_board(board_id)
    if board is None:
        raise NotFound(f"board {board_id!r} does not exist")
    tasks = tx.list_tasks(board_id)
    agents = []
    for agent in tx.list_agents(board_id):
        record = _record(rows.AGENT_COLUMNS, rows.agent_to_row(agent))
        record["revoked"] = bool(record["revoked"])
        agents.append(record)
    leases = [lease for task in tasks for lease in tx.lease_history(board_id, task.id)]
    comments = [comment for task in tasks for comment in tx.comments(board_id, task.id)]
    comments.sort(key=lambda comment: comment.id or 0)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tenure": __version__,
        "exported_at": rows.encode_time(tx.now),
        "board": _record(rows.BOARD_COLUMNS, rows.board_to_row(board)),
        "agents": agents,
        "tasks": [_record(rows.TASK_COLUMNS, rows.task_to_row(task)) for task in tasks],
        "leases": [_record(rows.LEASE_COLUMNS, rows.lease_to_row(lease)) for lease in leases],
        "comments": [_comment_record(comment) for comment in comments],
        "counters": tx.counters(board_id),
    }


def _comment_record(comment: Comment) -> dict[str, Any]:
    return {
        "task_id": comment.task_id,
        "at": rows.encode_time(comment.at),
        "author": comment.author,
        "body": comment.body,
    }


def _event_record(event: StoredEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "at": rows.encode_time(event.at),
        "task_id": event.task_id,
        "agent_id": event.agent_id,
        "epoch": event.epoch,
        "data": event.data,
    }


async def export_board(store: Store, board_id: str) -> dict[str, Any]:
    """The whole board as a JSON-ready document (`NotFound` if there is none).

    The records are read in one transaction; the event log after it, page by
    page. Export a quiet board (or stop the server) for a move, so nothing
    happens between the two.
    """
    document = await store.read(lambda tx: _snapshot(tx, board_id))
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await store.events_after(after, board_id=board_id, limit=_EVENT_PAGE)
        if not page:  # (not "a short page": a store may cap the limit lower)
            break
        events.extend(_event_record(event) for event in page)
        after = page[-1].id
    document["events"] = events
    return document


# import ----------------------------------------------------------------------------


def _parse(document: dict[str, Any]) -> tuple[Board, list[Agent], list[Task], list[Lease]]:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidInput(f"not a Tenure board export (expected format {FORMAT!r})")
    version = document.get("version")
    if version != FORMAT_VERSION:
        raise InvalidInput(
            f"board export version {version!r}; this Tenure reads version {FORMAT_VERSION}",
            details={"version": version},
        )
    try:
        board = rows.board_from_row(_row(rows.BOARD_COLUMNS, document["board"], "the board"))
        agents = [
            rows.agent_from_row(_row(rows.AGENT_COLUMNS, record, "an agent"))
            for record in document.get("agents", [])
        ]
        tasks = [
            rows.task_from_row(_row(rows.TASK_COLUMNS, record, "a task"))
            for record in document.get("tasks", [])
        ]
        leases = [
            rows.lease_from_row(_row(rows.LEASE_COLUMNS, record, "a lease", _LEASE_COLUMNS_ADDED))
            for record in document.get("leases", [])
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"the board export is damaged: {exc}") from exc
    strays = {r.board_id for r in agents} | {r.board_id for r in tasks}
    strays |= {r.board_id for r in leases}
    strays.discard(board.id)
    if strays:
        raise InvalidInput(
            f"records of other boards ({', '.join(sorted(strays))}) "
            f"in the export of board {board.id!r}"
        )
    return board, agents, tasks, leases


def _events(document: dict[str, Any], board_id: str) -> list[Event]:
    records = sorted(document.get("events", []), key=lambda record: record.get("id", 0))
    try:
        return [
            Event(
                type=EventType(record["type"]),
                board_id=board_id,
                at=parse_time(record["at"]),
                task_id=record.get("task_id"),
                agent_id=record.get("agent_id"),
                epoch=record.get("epoch"),
                data=dict(record.get("data") or {}),
            )
            for record in records
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"an event of the board export is damaged: {exc}") from exc


def _comments(document: dict[str, Any], board_id: str) -> list[Comment]:
    try:
        return [
            Comment(
                board_id=board_id,
                task_id=record["task_id"],
                at=parse_time(record["at"]),
                author=record["author"],
                body=record["body"],
            )
            for record in document.get("comments", [])
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"a comment of the board export is damaged: {exc}") from exc


async def import_board(store: Store, document: dict[str, Any]) -> dict[str, int]:
    """Write an exported board into `store`, all in one transaction.

    `Conflict` if the store already has a board with that id (or an agent
    token or enrolment key the export carries); `InvalidInput` for a
    document that is not a readable export. Returns how many of each record
    were written.
    """
    board, agents, tasks, leases = _parse(document)
    events = _events(document, board.id)
    comments = _comments(document, board.id)
    counters = {str(name): int(value) for name, value in dict(document.get("counters", {})).items()}

    def unit(tx: Tx) -> None:
        if tx.get_board(board.id) is not None:
            raise Conflict(
                f"board {board.id!r} already exists in this store; "
                "import into a store without it (or delete it first)",
                details={"board": board.id},
            )
        tx.insert_board(board)
        for agent in agents:
            # Sessions do not travel: agents reconnect to the new server.
            tx.insert_agent(_closed(agent))
        for task in tasks:
            tx.insert_task(task)
        # Ended leases first, in epoch order, then the live ones.
        for lease in sorted(leases, key=lambda item: (item.live, item.task_id, item.epoch)):
            tx.insert_lease(lease)
        tx.insert_comments(comments)
        tx.insert_events(events)
        for name, value in sorted(counters.items()):
            if value:
                tx.bump(board.id, name, value)

    await store.run(unit)
    return {
        "boards": 1,
        "agents": len(agents),
        "tasks": len(tasks),
        "leases": len(leases),
        "comments": len(comments),
        "events": len(events),
        "counters": len(counters),
    }


def _closed(agent: Agent) -> Agent:
    return replace(agent, open_sessions=0)


__all__ = ["FORMAT", "FORMAT_VERSION", "export_board", "import_board"]
