"""Tenure's records: boards, agents, tasks, leases, handoffs, events.

Every record is a frozen dataclass: a change is a new value made with
`dataclasses.replace`, so the store can compare what it loaded with what it
writes, and the core can never mutate something behind the service's back.
All datetimes are aware and in UTC; `ensure_utc` refuses naive ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from tenure.core.errors import InvalidInput

UTC = timezone.utc  # noqa: UP017 (kept importable as tenure.core.model.UTC)

#: The form of every id Tenure accepts (agents, tasks, boards): safe in a path,
#: a URL and a git ref, never starting with `-` or `.`.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: How many progress timestamps the cadence window keeps.
CADENCE_WINDOW = 20


class TaskStatus(StrEnum):
    """Where a task stands on its board."""

    TODO = "todo"
    IN_PROGRESS = "in_progress"
    BLOCKED = "blocked"
    DONE = "done"


class Priority(StrEnum):
    """How urgent a task is; the conservative policy scales leases by it."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


class LeaseState(StrEnum):
    """SPEC's one list of lease states, judged at a moment (see `lease_state`)."""

    ACTIVE = "active"
    EXPIRING_SOON = "expiring_soon"
    IN_GRACE = "in_grace"
    SUSPECT = "suspect"
    EXPIRED = "expired"
    ENDED = "ended"


class LeaseFlag(StrEnum):
    """Flags shown beside a lease's state."""

    STALLED = "stalled"
    ESCALATED = "escalated"
    VALIDATING = "validating"


class TaskFlag(StrEnum):
    """Flags kept on a task."""

    DEAD_LETTER = "dead_letter"
    ESCALATED = "escalated"
    VALIDATING = "validating"


class EndReason(StrEnum):
    """Why a lease ended; the first five are also a handoff's `recovery_reason`."""

    LEASE_EXPIRED = "lease_expired"
    AGENT_DISCONNECTED = "agent_disconnected"
    VALIDATION_TIMEOUT = "validation_timeout"
    RELEASED = "released"
    UNASSIGNED = "unassigned"
    COMPLETED = "completed"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"
    DEAD_LETTERED = "dead_lettered"
    STALE = "stale"
    RECLAIMED = "reclaimed"


#: End reasons that count as a recovery (against the budget, with a handoff).
RECOVERY_REASONS = frozenset(
    {EndReason.LEASE_EXPIRED, EndReason.AGENT_DISCONNECTED, EndReason.VALIDATION_TIMEOUT}
)


class EventType(StrEnum):
    """The durable event log's types (SPEC, Statistics and events)."""

    LEASE_CREATED = "lease.created"
    LEASE_RENEWED = "lease.renewed"
    LEASE_EXTENDED = "lease.extended"
    LEASE_SUSPECT = "lease.suspect"
    LEASE_REVIVED = "lease.revived"
    LEASE_RECOVERED = "lease.recovered"
    LEASE_RECLAIMED = "lease.reclaimed"
    LEASE_RELEASED = "lease.released"
    LEASE_STALE_REFUSED = "lease.stale_refused"
    LEASE_ESCALATED = "lease.escalated"
    LEASE_STALLED = "lease.stalled"
    TASK_DEAD_LETTERED = "task.dead_lettered"
    TASK_VALIDATION = "task.validation"
    TASK_CREATED = "task.created"
    TASK_UPDATED = "task.updated"
    TASK_DELETED = "task.deleted"
    TASK_REQUEUED = "task.requeued"


class Counter(StrEnum):
    """Named counters kept per board for statistics."""

    RECOVERIES_LEASE_EXPIRED = "recoveries.lease_expired"
    RECOVERIES_AGENT_DISCONNECTED = "recoveries.agent_disconnected"
    RECOVERIES_VALIDATION_TIMEOUT = "recoveries.validation_timeout"
    REVIVALS = "revivals"
    FALSE_RECOVERY_RECLAIMED = "false_recovery.reclaimed"
    FALSE_RECOVERY_LOST = "false_recovery.lost"
    STALE_REFUSED = "stale_refused"
    STALE_LEASES_RELEASED = "stale_leases_released"
    EXTENSIONS_MERGE_CONFLICT = "extensions.merge_conflict"
    EXTENSIONS_VALIDATION = "extensions.validation"
    DEAD_LETTERS = "dead_letters"
    ESCALATIONS = "escalations"
    RENEWALS = "renewals"
    TOUCHES = "touches"


def ensure_utc(moment: datetime, what: str = "time") -> datetime:
    """Return `moment` in UTC; refuse a naive datetime (its zone is unknown)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(f"{what} must be timezone-aware", details={"field": what})
    return moment.astimezone(UTC)


def is_id(value: object) -> bool:
    """Whether `value` is a valid Tenure id (see `check_id`)."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def check_id(value: str, what: str = "id") -> str:
    """Return `value` if it is a valid Tenure id, else raise `InvalidInput`."""
    if not is_id(value):
        raise InvalidInput(
            f"{what} must match {ID_PATTERN.pattern}",
            details={"field": what, "value": str(value)[:80]},
        )
    return value


@dataclass(frozen=True, slots=True)
class Board:
    """A namespace of tasks and agents; agents see only their own board."""

    id: str
    name: str
    created_at: datetime
    project_root: str | None = None
    enrolment_key_hash: str | None = None
    viewer_token_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Agent:
    """A registered worker. Its token is stored only as a hash."""

    board_id: str
    id: str
    name: str
    token_hash: str
    created_at: datetime
    role: str = ""
    skills: tuple[str, ...] = ()
    worktree: str | None = None
    revoked: bool = False
    open_sessions: int = 0
    last_seen_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Handoff:
    """What the next holder of a recovered task receives (SPEC, The handoff)."""

    recovered_at: datetime
    recovered_from_agent: str
    previous_progress: int
    time_spent_minutes: float
    recovery_reason: str
    previous_agent_branch: str
    instructions: str
    expires_at: datetime
    head_sha: str | None = None
    last_progress_message: str = ""
    late_notes: tuple[str, ...] = ()
    epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field."""
        return {
            "recovered_at": self.recovered_at.isoformat(),
            "recovered_from_agent": self.recovered_from_agent,
            "previous_progress": self.previous_progress,
            "time_spent_minutes": round(self.time_spent_minutes, 2),
            "recovery_reason": self.recovery_reason,
            "previous_agent_branch": self.previous_agent_branch,
            "head_sha": self.head_sha,
            "last_progress_message": self.last_progress_message,
            "late_notes": list(self.late_notes),
            "expires_at": self.expires_at.isoformat(),
            "instructions": self.instructions,
            "epoch": self.epoch,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Handoff:
        """Rebuild a handoff written by `to_dict` (naive datetimes read as UTC)."""
        return cls(
            recovered_at=parse_time(data["recovered_at"]),
            recovered_from_agent=data["recovered_from_agent"],
            previous_progress=int(data["previous_progress"]),
            time_spent_minutes=float(data["time_spent_minutes"]),
            recovery_reason=data["recovery_reason"],
            previous_agent_branch=data["previous_agent_branch"],
            head_sha=data.get("head_sha"),
            last_progress_message=data.get("last_progress_message", ""),
            late_notes=tuple(data.get("late_notes", ())),
            expires_at=parse_time(data["expires_at"]),
            instructions=data["instructions"],
            epoch=int(data.get("epoch", 0)),
        )


@dataclass(frozen=True, slots=True)
class Task:
    """A unit of work on a board. `epoch` counts every lease it ever had."""

    board_id: str
    id: str
    title: str
    created_at: datetime
    updated_at: datetime
    description: str = ""
    status: TaskStatus = TaskStatus.TODO
    priority: Priority = Priority.MEDIUM
    labels: tuple[str, ...] = ()
    required_skills: tuple[str, ...] = ()
    estimated_hours: float | None = None
    dependencies: tuple[str, ...] = ()
    assignee: str | None = None
    epoch: int = 0
    handoff: Handoff | None = None
    recovery_count: int = 0
    flags: frozenset[TaskFlag] = frozenset()
    blocked_reason: str | None = None
    completed_at: datetime | None = None

    @property
    def dead_lettered(self) -> bool:
        """True once the recovery budget sent the task to `blocked`."""
        return TaskFlag.DEAD_LETTER in self.flags


@dataclass(frozen=True, slots=True)
class Lease:
    """One agent's right to one task (SPEC, Glossary).

    `epoch` is the task's lease counter at creation, the fencing token agents
    quote; `version` grows with every write and guards every write.
    """

    board_id: str
    task_id: str
    agent_id: str
    epoch: int
    assigned_at: datetime
    expires_at: datetime
    grace_s: float
    recover_after: datetime
    last_renewed_at: datetime
    last_signal_at: datetime
    version: int = 1
    renewal_count: int = 0
    progress: int = 0
    message: str = ""
    progress_stamps: tuple[datetime, ...] = ()
    conflict_extensions: int = 0
    flags: frozenset[LeaseFlag] = frozenset()
    branch: str | None = None
    head_sha: str | None = None
    suspect_since: datetime | None = None
    # True when the suspicion came from a dropped connection (the session's
    # stream ended with no DELETE) rather than an explicit close (a DELETE, a
    # stdio proxy whose agent exited). False whenever `suspect_since` is None.
    suspect_dropped: bool = False
    progress_changed_at: datetime | None = None
    renewals_without_progress: int = 0
    max_progress: int = 0
    ended_at: datetime | None = None
    end_reason: EndReason | None = None
    # The holder's rhythm, learned by the `adaptive` detector: its last call
    # (report or other call; None until the first) and recent gaps between calls.
    last_call_at: datetime | None = None
    signal_gaps: tuple[float, ...] = ()

    @property
    def live(self) -> bool:
        """True until the lease ends (recovered, released, completed...)."""
        return self.ended_at is None

    @property
    def report_count(self) -> int:
        """Progress reports received (the renewals)."""
        return self.renewal_count


@dataclass(frozen=True, slots=True)
class Event:
    """One row of the durable event log, before the store gives it an id."""

    type: EventType
    board_id: str
    at: datetime
    task_id: str | None = None
    agent_id: str | None = None
    epoch: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the log holds it, with its id (the order of the log)."""

    id: int
    type: str
    board_id: str
    at: datetime
    task_id: str | None
    agent_id: str | None
    epoch: int | None
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "id": self.id,
            "type": self.type,
            "board_id": self.board_id,
            "at": self.at.isoformat(),
            "task_id": self.task_id,
            "agent_id": self.agent_id,
            "epoch": self.epoch,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class Comment:
    """A note on a task's board card (recoveries, escalations, blockers)."""

    board_id: str
    task_id: str
    at: datetime
    author: str
    body: str
    id: int | None = None


def parse_time(value: str | datetime) -> datetime:
    """Parse an ISO time; a naive value is taken as UTC (SPEC, Persistence)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def seconds(value: float) -> timedelta:
    """A timedelta of `value` seconds (settings accept fractions)."""
    return timedelta(seconds=value)
