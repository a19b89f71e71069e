"""Writing the core's decisions: one `Change` into one open transaction.

The core decides; this module stores what it decided, in the order that
keeps the database consistent: task row, lease row (conditional on the
version the decision was made from), events, counters, comments, outbox.
A lease write that finds another version stored raises `RaceLost`, which
rolls the whole unit of work back so the caller can read again and decide
again; nothing of a lost race is ever kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from tenure.core.decisions import Change
from tenure.core.model import Agent, Comment, Lease
from tenure.store.base import Tx

#: Who signs the comments Tenure itself writes on a task.
TENURE_AUTHOR = "tenure"


class RaceLost(Exception):
    """Another writer changed the lease since this unit of work read it."""


@dataclass
class Effects:
    """What to do after a unit of work commits: metrics, telemetry, errors."""

    changes: list[Change] = field(default_factory=list)

    def add(self, change: Change) -> None:
        self.changes.append(change)

    @property
    def error(self) -> BaseException | None:
        """The first refusal to raise once the unit has committed."""
        for change in self.changes:
            if change.error is not None:
                return change.error
        return None


def board_of(change: Change) -> str | None:
    """The board a change belongs to."""
    if change.lease is not None:
        return change.lease.board_id
    if change.task is not None:
        return change.task.board_id
    if change.events:
        return change.events[0].board_id
    return None


def hook_key(kind: str, board_id: str, payload: dict[str, Any]) -> str:
    """An idempotency key that names one happening exactly once."""
    return f"{kind}:{board_id}:{payload.get('task_id')}:{payload.get('epoch')}"


def write(tx: Tx, change: Change, effects: Effects | None = None) -> None:
    """Store `change` in `tx`; raise `RaceLost` if its lease moved on."""
    if change.task is not None:
        tx.update_task(change.task)
    if change.lease is not None:
        if change.expected_version is None:
            tx.insert_lease(change.lease)
        elif not tx.update_lease(change.lease, change.expected_version):
            raise RaceLost(f"lease {change.lease.task_id}@{change.lease.epoch} moved on")
    board_id = board_of(change)
    for event in change.events:
        tx.queue_event(event)
    if board_id is not None:
        for counter in change.counters:
            tx.bump(board_id, str(counter))
        task_id = change.task.id if change.task else change.lease.task_id if change.lease else None
        if task_id is not None:
            for body in change.comments:
                tx.queue_comment(Comment(board_id, task_id, tx.now, TENURE_AUTHOR, body))
        for kind, payload in change.hooks:
            tx.queue_hook(str(kind), board_id, payload, hook_key(str(kind), board_id, payload))
    if effects is not None:
        effects.add(change)


class Held:
    """The calling agent's live leases within one unit of work, and those that
    ended since its last call (for its notice).

    Read once (one statement) and kept current as the unit writes leases,
    so an agent's call asks the store for them once instead of at every step
    (subject, touches, answer, notice): fewer statements and fewer lease rows
    decoded per call, and no read after the unit's writes (on PostgreSQL they
    then travel with the commit).
    """

    __slots__ = ("_by_task", "agent_id", "ended")

    def __init__(
        self, agent_id: str, leases: list[Lease], ended: list[Lease] | None = None
    ) -> None:
        self.agent_id = agent_id
        self._by_task = {lease.task_id: lease for lease in leases}
        #: The agent's leases ended since its last call, oldest end first.
        self.ended: list[Lease] = list(ended or ())

    @classmethod
    def read(cls, tx: Tx, agent: Agent) -> Held:
        since = agent.last_seen_at or agent.created_at
        live, ended = tx.leases_of_agent(agent.board_id, agent.id, since)
        return cls(agent.id, live, ended)

    def leases(self) -> list[Lease]:
        """The live leases, in the store's order (oldest assignment first)."""
        return sorted(self._by_task.values(), key=lambda lease: (lease.assigned_at, lease.task_id))

    def get(self, task_id: str) -> Lease | None:
        return self._by_task.get(task_id)

    def apply(self, change: Change) -> None:
        """Follow a change just written: a lease of this agent started, moved or ended."""
        lease = change.lease
        if lease is None:
            return
        if lease.agent_id == self.agent_id and not lease.live:
            self.ended.append(lease)
        if lease.agent_id == self.agent_id and lease.live:
            self._by_task[lease.task_id] = lease
        elif (mine := self._by_task.get(lease.task_id)) is not None and mine.epoch <= lease.epoch:
            # the agent's lease on that task ended, or the task moved on to another
            del self._by_task[lease.task_id]


def merge(first: Change, second: Change) -> Change:
    """Two successive changes of one lease as one (the second was made from the first)."""
    return replace(
        second,
        task=second.task or first.task,
        expected_version=first.expected_version,
        events=first.events + second.events,
        counters=first.counters + second.counters,
        comments=first.comments + second.comments,
        hooks=first.hooks + second.hooks,
        telemetry=second.telemetry or first.telemetry,
        error=first.error or second.error,
    )
