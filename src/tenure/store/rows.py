"""Records to rows and back, shared by every SQL dialect.

Each record has a column list (`TASK_COLUMNS`, `LEASE_COLUMNS`...) and a pair
of functions: `*_to_row` gives the values in that column order, `*_from_row`
rebuilds the record from a row selected in the same order. Tuples, flag sets,
the handoff, the progress stamps and event data are JSON text on every
dialect. Times are the one dialect-dependent part: `*_to_row` takes a `time`
encoder (default `encode_time`, ISO text for SQLite; PostgreSQL may pass
`keep_time` to hand aware datetimes to timestamptz), and `decode_time`
accepts both forms, so the `*_from_row` functions serve both dialects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from tenure.core.errors import InvalidInput
from tenure.core.model import (
    Agent,
    Board,
    Comment,
    EndReason,
    Handoff,
    Lease,
    LeaseFlag,
    Priority,
    StoredEvent,
    Task,
    TaskFlag,
    TaskStatus,
)
from tenure.store.base import OutboxRow
from tenure.store.memo import Memo

#: How a dialect wants an aware datetime (or None) written.
TimeEncoder = Callable[[datetime | None], Any]

_EMPTY_LIST = "[]"


# times -----------------------------------------------------------------------


def encode_time(moment: datetime | None) -> str | None:
    """ISO text in UTC, always with microseconds and "+00:00".

    Fixed width on purpose: text order is then time order, so SQLite's
    indexes and comparisons on these columns order by time.
    """
    return None if moment is None else _TEXTS.of(moment)


def _format_time(moment: datetime) -> str:
    utc = moment
    if moment.tzinfo is not UTC:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise InvalidInput("refusing to store a naive datetime (its zone is unknown)")
        utc = moment.astimezone(UTC)
    return utc.isoformat(timespec="microseconds")


#: Recently encoded moments: a lease's times repeat from one write of it to
#: the next (assigned at, last progress...), and formatting is a good part of
#: a renewal's cost. Equal aware datetimes are the same instant, whatever
#: their zones, and encode to the same UTC text; a naive one is never kept.
_TEXTS: Memo[datetime, str] = Memo(_format_time)


def keep_time(moment: datetime | None) -> datetime | None:
    """The encoder for dialects with a native aware timestamp type."""
    return moment


def decode_time(value: str | datetime | None) -> datetime | None:
    """An aware UTC datetime from ISO text or a driver's datetime (naive = UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        return _TIMES.of(value)
    return _utc(value)


def _parse_time(text: str) -> datetime:
    return _utc(datetime.fromisoformat(text))


#: Recently decoded texts: a lease's progress stamps and times come back from
#: one read of it to the next, and parsing them is a good part of a read.
_TIMES: Memo[str, datetime] = Memo(_parse_time)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    if moment.tzinfo is UTC:
        return moment
    return moment.astimezone(UTC)


def _time(value: str | datetime) -> datetime:
    """`decode_time` for NOT NULL columns."""
    moment = decode_time(value)
    assert moment is not None
    return moment


# JSON ------------------------------------------------------------------------


#: One encoder for every column: `json.dumps` with options builds a new one
#: per call, a measurable part of writing an event.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dump_json(value: Any) -> str:
    """Compact JSON text (what every JSON column holds)."""
    return _JSON.encode(value)


def load_json(value: str | bytes | Any) -> Any:
    """Parse JSON text; a value a driver already decoded (jsonb) passes through."""
    if isinstance(value, str | bytes):
        return json.loads(value)
    return value


def dump_strings(values: Iterable[str]) -> str:
    """A tuple of strings (labels, skills, dependencies) as a JSON array."""
    items = list(values)
    return dump_json(items) if items else _EMPTY_LIST


def load_strings(value: str | Any) -> tuple[str, ...]:
    """The inverse of `dump_strings`."""
    if value == _EMPTY_LIST:
        return ()
    return tuple(load_json(value))


def dump_flags(flags: Collection[str]) -> str:
    """A flag set as a sorted JSON array (stable text for equal sets)."""
    return _FLAG_TEXTS.of(frozenset(flags)) if flags else _EMPTY_LIST


def _flag_text(flags: frozenset[str]) -> str:
    return dump_strings(sorted(str(flag) for flag in flags))


#: The text of each flag set seen (there are a handful: flags are few).
_FLAG_TEXTS: Memo[frozenset[str], str] = Memo(_flag_text)


def dump_stamps(stamps: Sequence[datetime]) -> str:
    """Progress timestamps as a JSON array of `encode_time` strings.

    Joined by hand: ISO text needs no escaping, so this is `dump_json`'s very
    output, at a fraction of its cost on a renewal's hottest column.
    """
    if not stamps:
        return _EMPTY_LIST
    # The memo's dict looked up in line: a renewal writes twenty stamps, and
    # two calls per stamp cost more than the join.
    known = _TEXTS.records
    return '["' + '","'.join([known.get(stamp) or _TEXTS.of(stamp) for stamp in stamps]) + '"]'


def load_stamps(value: str | Any) -> tuple[datetime, ...]:
    """The inverse of `dump_stamps` (any JSON array of ISO texts is read)."""
    if value == _EMPTY_LIST:
        return ()
    if isinstance(value, str) and value.startswith('["') and value.endswith('"]'):
        # `dump_stamps`'s own text: no escapes, so splitting on '","' is exact;
        # anything else fails to parse as a time and is read as JSON.
        try:
            return tuple(_time(item) for item in value[2:-2].split('","'))
        except ValueError:
            pass
    return tuple(_time(item) for item in load_strings(value))


def dump_gaps(gaps: Sequence[float]) -> str:
    """A lease's rhythm gaps as a JSON array of numbers (`dump_json`'s text)."""
    if not gaps:
        return _EMPTY_LIST
    if all(type(gap) is float and math.isfinite(gap) for gap in gaps):
        # json writes a finite float as its repr
        return "[" + ",".join([repr(gap) for gap in gaps]) + "]"
    return dump_json(list(gaps))


def load_gaps(value: str | Any) -> tuple[float, ...]:
    """The inverse of `dump_gaps`."""
    if value == _EMPTY_LIST:
        return ()
    return tuple(float(gap) for gap in load_json(value))


def dump_handoff(handoff: Handoff | None) -> str | None:
    """A handoff as JSON text; every field exact (no rounding of the minutes)."""
    if handoff is None:
        return None
    data = handoff.to_dict()
    data["time_spent_minutes"] = handoff.time_spent_minutes
    data["recovered_at"] = encode_time(handoff.recovered_at)
    data["expires_at"] = encode_time(handoff.expires_at)
    return dump_json(data)


def load_handoff(value: str | Any | None) -> Handoff | None:
    """The inverse of `dump_handoff`."""
    if value is None:
        return None
    return Handoff.from_dict(load_json(value))


# boards ----------------------------------------------------------------------

BOARD_COLUMNS = (
    "id",
    "name",
    "project_root",
    "enrolment_key_hash",
    "viewer_token_hash",
    "created_at",
)


def board_to_row(board: Board, time: TimeEncoder = encode_time) -> tuple[Any, ...]:
    """A board's values in `BOARD_COLUMNS` order."""
    return (
        board.id,
        board.name,
        board.project_root,
        board.enrolment_key_hash,
        board.viewer_token_hash,
        time(board.created_at),
    )


def board_from_row(row: Sequence[Any]) -> Board:
    """A board from a row in `BOARD_COLUMNS` order."""
    return Board(
        id=row[0],
        name=row[1],
        project_root=row[2],
        enrolment_key_hash=row[3],
        viewer_token_hash=row[4],
        created_at=_time(row[5]),
    )


# agents ----------------------------------------------------------------------

AGENT_COLUMNS = (
    "board_id",
    "id",
    "name",
    "token_hash",
    "role",
    "skills",
    "worktree",
    "revoked",
    "open_sessions",
    "last_seen_at",
    "created_at",
)


#: The columns `update_agent` writes: all but the keys, and the two that
#: statements of their own move as agents call (`open_sessions`: the session
#: statements of `tenure.store.session_rows`; `last_seen_at`: `mark_seen`),
#: so an agent written back from an earlier read never undoes one of those.
AGENT_UPDATED = tuple(
    name for name in AGENT_COLUMNS[2:] if name not in {"open_sessions", "last_seen_at"}
)
_UPDATED_AT = tuple(AGENT_COLUMNS.index(name) for name in AGENT_UPDATED)


def agent_update_values(row: Sequence[Any]) -> tuple[Any, ...]:
    """The values of `AGENT_UPDATED` from a row in `AGENT_COLUMNS` order."""
    return tuple(row[at] for at in _UPDATED_AT)


def agent_to_row(agent: Agent, time: TimeEncoder = encode_time) -> tuple[Any, ...]:
    """An agent's values in `AGENT_COLUMNS` order (`revoked` as 0/1)."""
    return (
        agent.board_id,
        agent.id,
        agent.name,
        agent.token_hash,
        agent.role,
        dump_strings(agent.skills),
        agent.worktree,
        int(agent.revoked),
        agent.open_sessions,
        time(agent.last_seen_at),
        time(agent.created_at),
    )


def agent_from_row(row: Sequence[Any]) -> Agent:
    """An agent from a row in `AGENT_COLUMNS` order."""
    return Agent(
        board_id=row[0],
        id=row[1],
        name=row[2],
        token_hash=row[3],
        role=row[4],
        skills=load_strings(row[5]),
        worktree=row[6],
        revoked=bool(row[7]),
        open_sessions=row[8],
        last_seen_at=decode_time(row[9]),
        created_at=_time(row[10]),
    )


# tasks -----------------------------------------------------------------------

TASK_COLUMNS = (
    "board_id",
    "id",
    "title",
    "description",
    "status",
    "priority",
    "labels",
    "required_skills",
    "estimated_hours",
    "dependencies",
    "assignee",
    "epoch",
    "handoff",
    "recovery_count",
    "flags",
    "blocked_reason",
    "completed_at",
    "created_at",
    "updated_at",
)


def task_to_row(task: Task, time: TimeEncoder = encode_time) -> tuple[Any, ...]:
    """A task's values in `TASK_COLUMNS` order."""
    return (
        task.board_id,
        task.id,
        task.title,
        task.description,
        str(task.status),
        str(task.priority),
        dump_strings(task.labels),
        dump_strings(task.required_skills),
        task.estimated_hours,
        dump_strings(task.dependencies),
        task.assignee,
        task.epoch,
        dump_handoff(task.handoff),
        task.recovery_count,
        dump_flags(task.flags),
        task.blocked_reason,
        time(task.completed_at),
        time(task.created_at),
        time(task.updated_at),
    )


def task_from_row(row: Sequence[Any]) -> Task:
    """A task from a row in `TASK_COLUMNS` order."""
    return Task(
        board_id=row[0],
        id=row[1],
        title=row[2],
        description=row[3],
        status=TaskStatus(row[4]),
        priority=Priority(row[5]),
        labels=load_strings(row[6]),
        required_skills=load_strings(row[7]),
        estimated_hours=None if row[8] is None else float(row[8]),
        dependencies=load_strings(row[9]),
        assignee=row[10],
        epoch=row[11],
        handoff=load_handoff(row[12]),
        recovery_count=row[13],
        flags=frozenset(TaskFlag(flag) for flag in load_strings(row[14])),
        blocked_reason=row[15],
        completed_at=decode_time(row[16]),
        created_at=_time(row[17]),
        updated_at=_time(row[18]),
    )


# leases ----------------------------------------------------------------------

#: The key first, so an UPDATE can bind `row[3:] + row[:3]` (see `lease_to_row`).
LEASE_KEY_COLUMNS = ("board_id", "task_id", "epoch")
LEASE_COLUMNS = (
    *LEASE_KEY_COLUMNS,
    "agent_id",
    "version",
    "assigned_at",
    "expires_at",
    "grace_s",
    "recover_after",
    "last_renewed_at",
    "last_signal_at",
    "renewal_count",
    "progress",
    "message",
    "progress_stamps",
    "conflict_extensions",
    "flags",
    "branch",
    "head_sha",
    "suspect_since",
    "progress_changed_at",
    "renewals_without_progress",
    "max_progress",
    "ended_at",
    "end_reason",
    "last_call_at",
    "signal_gaps",
    "suspect_dropped",
)


def lease_to_row(lease: Lease, time: TimeEncoder = encode_time) -> tuple[Any, ...]:
    """A lease's values in `LEASE_COLUMNS` order (`suspect_dropped` as 0/1)."""
    return (
        lease.board_id,
        lease.task_id,
        lease.epoch,
        lease.agent_id,
        lease.version,
        time(lease.assigned_at),
        time(lease.expires_at),
        float(lease.grace_s),
        time(lease.recover_after),
        time(lease.last_renewed_at),
        time(lease.last_signal_at),
        lease.renewal_count,
        lease.progress,
        lease.message,
        dump_stamps(lease.progress_stamps),
        lease.conflict_extensions,
        dump_flags(lease.flags),
        lease.branch,
        lease.head_sha,
        time(lease.suspect_since),
        time(lease.progress_changed_at),
        lease.renewals_without_progress,
        lease.max_progress,
        time(lease.ended_at),
        None if lease.end_reason is None else str(lease.end_reason),
        time(lease.last_call_at),
        dump_gaps(lease.signal_gaps),
        int(lease.suspect_dropped),
    )


def lease_from_row(row: Sequence[Any]) -> Lease:
    """A lease from a row in `LEASE_COLUMNS` order."""
    return Lease(
        board_id=row[0],
        task_id=row[1],
        epoch=row[2],
        agent_id=row[3],
        version=row[4],
        assigned_at=_time(row[5]),
        expires_at=_time(row[6]),
        grace_s=float(row[7]),
        recover_after=_time(row[8]),
        last_renewed_at=_time(row[9]),
        last_signal_at=_time(row[10]),
        renewal_count=row[11],
        progress=row[12],
        message=row[13],
        progress_stamps=load_stamps(row[14]),
        conflict_extensions=row[15],
        flags=frozenset(LeaseFlag(flag) for flag in load_strings(row[16])),
        branch=row[17],
        head_sha=row[18],
        suspect_since=decode_time(row[19]),
        progress_changed_at=decode_time(row[20]),
        renewals_without_progress=row[21],
        max_progress=row[22],
        ended_at=decode_time(row[23]),
        end_reason=None if row[24] is None else EndReason(row[24]),
        last_call_at=decode_time(row[25]),
        signal_gaps=load_gaps(row[26]),
        suspect_dropped=bool(row[27]),
    )


# events and comments -----------------------------------------------------------

EVENT_COLUMNS = ("id", "type", "board_id", "at", "task_id", "agent_id", "epoch", "data")


def event_from_row(row: Sequence[Any]) -> StoredEvent:
    """A stored event from a row in `EVENT_COLUMNS` order."""
    return StoredEvent(
        id=row[0],
        type=row[1],
        board_id=row[2],
        at=_time(row[3]),
        task_id=row[4],
        agent_id=row[5],
        epoch=row[6],
        data=load_json(row[7]),
    )


COMMENT_COLUMNS = ("id", "board_id", "task_id", "at", "author", "body")


def comment_from_row(row: Sequence[Any]) -> Comment:
    """A comment from a row in `COMMENT_COLUMNS` order."""
    return Comment(
        id=row[0],
        board_id=row[1],
        task_id=row[2],
        at=_time(row[3]),
        author=row[4],
        body=row[5],
    )


OUTBOX_COLUMNS = (
    "id",
    "kind",
    "board_id",
    "payload",
    "idempotency_key",
    "attempts",
    "next_attempt_at",
    "created_at",
    "delivered_at",
    "last_error",
)


def outbox_from_row(row: Sequence[Any]) -> OutboxRow:
    """An outbox row from a row in `OUTBOX_COLUMNS` order."""
    return OutboxRow(
        id=row[0],
        kind=row[1],
        board_id=row[2],
        payload=load_json(row[3]),
        idempotency_key=row[4],
        attempts=row[5],
        next_attempt_at=_time(row[6]),
        created_at=_time(row[7]),
        delivered_at=decode_time(row[8]),
        last_error=row[9],
    )


def columns(names: Sequence[str]) -> str:
    """A column list for SQL text: "a, b, c"."""
    return ", ".join(names)


def placeholders(count: int, mark: str = "?") -> str:
    """`count` parameter marks for SQL text ("?" for sqlite3, "%s" for psycopg)."""
    return ", ".join([mark] * count)
