"""The values the core hands back: what to write, what to tell, what to raise.

The core never writes anything. Each transition returns a `Change`: the task
and lease rows as they must be stored (the lease write conditional on
`expected_version`), the events and counters it implies, board comments, the
hooks to enqueue and the telemetry to emit after commit, and, for a refusal
that still records something (a late note), the error to raise once that is
committed. The detector returns a `Decision` for one due lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from tenure.core.errors import TenureError
from tenure.core.model import Counter, EndReason, Event, Lease, Task


class ChangeKind(StrEnum):
    """What a transition did, for answers, logs and tests."""

    CREATED = "created"
    RENEWED = "renewed"
    TOUCHED = "touched"
    REVIVED = "revived"
    EXTENDED = "extended"
    RECLAIMED = "reclaimed"
    VALIDATING = "validating"
    ENDED = "ended"
    RECOVERED = "recovered"
    DEAD_LETTERED = "dead_lettered"
    SUSPECTED = "suspected"
    REFUSED = "refused"
    REQUEUED = "requeued"
    UNCHANGED = "unchanged"


class HookKind(StrEnum):
    """What the outbox tells the outside world about."""

    RECOVERED = "recovered"
    ESCALATED = "escalated"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True, slots=True)
class Change:
    """One transition's effect, for the service to write in one transaction.

    - `task`: the task row to write, or None when the task is unchanged.
    - `lease`: the lease row to write, or None when no lease changes.
    - `expected_version`: the version the stored lease must still have for
      the write to apply; None with a lease means insert a new lease (its
      epoch is new, so the store's uniqueness guards it).
    - `ended`: a second lease row to write, for the transitions that end one
      lease and start another (a claim-back ends nothing, but a requeue may);
      paired with `ended_expected_version`.
    - `error`: raise this after committing the rest (refusals that record a
      late note or a counter).
    """

    kind: ChangeKind
    task: Task | None = None
    lease: Lease | None = None
    expected_version: int | None = None
    events: tuple[Event, ...] = ()
    counters: tuple[Counter, ...] = ()
    comments: tuple[str, ...] = ()
    hooks: tuple[tuple[HookKind, dict[str, Any]], ...] = ()
    telemetry: dict[str, Any] | None = None
    error: TenureError | None = None

    @property
    def writes(self) -> bool:
        """True when there is anything to store."""
        return bool(self.task or self.lease or self.events or self.counters or self.comments)


UNCHANGED = Change(ChangeKind.UNCHANGED)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a worktree showed about a lease's holder (probed outside any transaction).

    `conflict`: the worktree has unmerged paths. `changed`: files changed since
    the lease's last signal. `observed_at`: when the probe ran. `changed_at`:
    when the latest of those changes happened (None when the source cannot
    tell: the change then counts as seen at `observed_at`, else at the
    detector's `now`). The detector stamps the signal with this time, not with
    the moment of the probe, so a dead agent's old writes cannot buy it time.
    """

    conflict: bool = False
    changed: bool = False
    observed_at: datetime | None = None
    changed_at: datetime | None = None


# Detector decisions for one lease past its recover-after -------------------


@dataclass(frozen=True, slots=True)
class Wait:
    """Not yet: look again at the next pass (or at `until`, if sooner known)."""

    until: datetime | None = None
    why: str = ""


@dataclass(frozen=True, slots=True)
class Release:
    """The task is already `done` or `blocked`: end the stale lease, never recover."""

    reason: EndReason = EndReason.STALE


@dataclass(frozen=True, slots=True)
class Extend:
    """Grant a merge-conflict extension (now + 300 s)."""

    reason: str = "merge_conflict"


@dataclass(frozen=True, slots=True)
class Signal:
    """Worktree changes count as a signal from the holder: touch the lease.

    `at`: when the holder was last seen alive (the latest change); the touch
    is stamped then. None stamps it with the monitor's `now`.
    """

    source: str = "worktree"
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Recover:
    """Take the task back with a handoff, for `reason`."""

    reason: EndReason = EndReason.LEASE_EXPIRED


Decision = Wait | Release | Extend | Signal | Recover


@dataclass(frozen=True, slots=True)
class Report:
    """A progress report as an agent sends it (already validated for form)."""

    status: str = "in_progress"  # in_progress | completed | blocked
    progress: int | None = None
    message: str = ""
    branch: str | None = None
    head_sha: str | None = None
    epoch: int | None = None
    validate: bool = False


@dataclass(frozen=True, slots=True)
class Subject:
    """What the core needs to judge an agent's act on one task.

    - `task`: the task as stored.
    - `live`: the task's live lease, whoever holds it, or None.
    - `callers_last`: the caller's most recent lease on this task (live or
      ended), or None if it never held it.
    - `caller_holds_other`: the caller holds a live lease on another task.
    """

    task: Task
    live: Lease | None = None
    callers_last: Lease | None = None
    caller_holds_other: bool = False
