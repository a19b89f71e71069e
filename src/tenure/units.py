"""Writing the core's decisions: one `Change` into one open transaction.

The core decides; this module stores what it decided, in the order that
keeps the database consistent: task row, lease row (conditional on the
version the decision was made from), events, counters, comments, outbox.
A lease write that finds another version stored raises `RaceLost`, which
rolls the whole unit of work back so the caller can read again and decide
again; nothing of a lost race is ever kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tenure.core.decisions import Change
from tenure.core.model import Comment
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
        tx.append_event(event)
    if board_id is not None:
        for counter in change.counters:
            tx.bump(board_id, str(counter))
        task_id = change.task.id if change.task else change.lease.task_id if change.lease else None
        if task_id is not None:
            for body in change.comments:
                tx.add_comment(Comment(board_id, task_id, tx.now, TENURE_AUTHOR, body))
        for kind, payload in change.hooks:
            tx.enqueue_hook(str(kind), board_id, payload, hook_key(str(kind), board_id, payload))
    if effects is not None:
        effects.add(change)
