"""Records and units of work shared by the contract suite.

Builders give every record sensible values and let a test override any field;
`full_lease` sets every Lease field to a non-default value, for round trips.
The claim and recover units are written with plain `Tx` calls, the same calls
the service's own units make.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tenure.core.model import (
    Agent,
    Board,
    EndReason,
    Handoff,
    Lease,
    LeaseFlag,
    Priority,
    Task,
    TaskFlag,
    TaskStatus,
)
from tenure.store.base import ClaimFilter, Tx

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BOARD = "b1"


def at(seconds: float) -> datetime:
    """A moment `seconds` after T0 (the FakeClock's start)."""
    return T0 + timedelta(seconds=seconds)


def board(board_id: str = BOARD, **fields: Any) -> Board:
    return replace(Board(id=board_id, name=f"Board {board_id}", created_at=T0), **fields)


def agent(agent_id: str = "a1", board_id: str = BOARD, **fields: Any) -> Agent:
    base = Agent(
        board_id=board_id,
        id=agent_id,
        name=f"Agent {agent_id}",
        token_hash=f"hash-{board_id}-{agent_id}",
        created_at=T0,
    )
    return replace(base, **fields)


def task(task_id: str = "t1", board_id: str = BOARD, **fields: Any) -> Task:
    base = Task(
        board_id=board_id, id=task_id, title=f"Task {task_id}", created_at=T0, updated_at=T0
    )
    return replace(base, **fields)


def lease(
    task_id: str = "t1", agent_id: str = "a1", epoch: int = 1, board_id: str = BOARD, **fields: Any
) -> Lease:
    start = fields.pop("assigned_at", T0)
    base = Lease(
        board_id=board_id,
        task_id=task_id,
        agent_id=agent_id,
        epoch=epoch,
        assigned_at=start,
        expires_at=start + timedelta(seconds=180),
        grace_s=60.0,
        recover_after=start + timedelta(seconds=240),
        last_renewed_at=start,
        last_signal_at=start,
    )
    return replace(base, **fields)


def full_handoff() -> Handoff:
    """A handoff with every field set, the minutes not round."""
    return Handoff(
        recovered_at=at(1000.123456),
        recovered_from_agent="a0",
        previous_progress=42,
        time_spent_minutes=12.345678901,
        recovery_reason="lease_expired",
        previous_agent_branch="tenure/a0",
        instructions="merge `tenure/a0` first\n> last note",
        expires_at=at(1000.123456 + 86400),
        head_sha="0123456789abcdef0123456789abcdef01234567",
        last_progress_message="halfway – ünïcode ✓",
        late_notes=("late one", "late two"),
        epoch=3,
    )


def full_task(task_id: str = "t1", board_id: str = BOARD) -> Task:
    """A task with every field set to a non-default value."""
    return Task(
        board_id=board_id,
        id=task_id,
        title="Everything set",
        created_at=at(1.5),
        updated_at=at(2.000001),
        description="a description\nwith lines",
        status=TaskStatus.IN_PROGRESS,
        priority=Priority.URGENT,
        labels=("complex", "research"),
        required_skills=("python", "sql"),
        estimated_hours=2.75,
        dependencies=("t0", "t-1"),
        assignee="a1",
        epoch=4,
        handoff=full_handoff(),
        recovery_count=2,
        flags=frozenset({TaskFlag.ESCALATED, TaskFlag.VALIDATING}),
        blocked_reason="waiting on review",
        completed_at=at(99.000007),
    )


def full_lease(task_id: str = "t1", board_id: str = BOARD) -> Lease:
    """A lease with every field set to a non-default value (ended, so all are set)."""
    return Lease(
        board_id=board_id,
        task_id=task_id,
        agent_id="a1",
        epoch=4,
        assigned_at=at(10.000001),
        expires_at=at(310.25),
        grace_s=61.5,
        recover_after=at(371.75),
        last_renewed_at=at(70.123456),
        last_signal_at=at(80.654321),
        version=9,
        renewal_count=7,
        progress=55,
        message="still going – ✓",
        progress_stamps=(at(20.000002), at(40.5), at(70.123456)),
        conflict_extensions=2,
        flags=frozenset({LeaseFlag.STALLED, LeaseFlag.ESCALATED, LeaseFlag.VALIDATING}),
        branch="tenure/a1",
        head_sha="fedcba9876543210fedcba9876543210fedcba98",
        suspect_since=at(75.5),
        progress_changed_at=at(70.123456),
        renewals_without_progress=3,
        max_progress=60,
        ended_at=at(400.000009),
        end_reason=EndReason.AGENT_DISCONNECTED,
        last_call_at=at(78.25),
        signal_gaps=(12.5, 40.125, 0.001),
        suspect_dropped=True,
    )


def seed(*records: Board | Agent | Task | Lease) -> Callable[[Tx], None]:
    """A unit of work inserting `records` in order."""

    def unit(tx: Tx) -> None:
        for record in records:
            if isinstance(record, Board):
                tx.insert_board(record)
            elif isinstance(record, Agent):
                tx.insert_agent(record)
            elif isinstance(record, Task):
                tx.insert_task(record)
            else:
                tx.insert_lease(record)

    return unit


def claim_first(board_id: str, agent_id: str) -> Callable[[Tx], str | None]:
    """The claim unit: the agent takes the first candidate, if it holds nothing.

    Returns the task id claimed, or None when there was nothing to take.
    """

    def unit(tx: Tx) -> str | None:
        if tx.live_leases_of_agent(board_id, agent_id):
            return None
        for candidate in tx.claim_candidates(ClaimFilter(board_id, limit=1)):
            epoch = candidate.epoch + 1
            tx.insert_lease(lease(candidate.id, agent_id, epoch, board_id, assigned_at=tx.now))
            tx.update_task(
                replace(
                    candidate,
                    status=TaskStatus.IN_PROGRESS,
                    assignee=agent_id,
                    epoch=epoch,
                    updated_at=tx.now,
                )
            )
            held = tx.live_leases_of_agent(board_id, agent_id)
            assert len(held) == 1, f"{agent_id} holds {len(held)} leases"
            return candidate.id
        return None

    return unit


def complete(board_id: str, task_id: str) -> Callable[[Tx], bool]:
    """End the live lease of the task as completed and mark the task done."""

    def unit(tx: Tx) -> bool:
        live = tx.live_lease(board_id, task_id)
        current = tx.get_task(board_id, task_id, for_update=True)
        if live is None or current is None:
            return False
        ended = replace(
            live, ended_at=tx.now, end_reason=EndReason.COMPLETED, version=live.version + 1
        )
        if not tx.update_lease(ended, live.version):
            return False
        tx.update_task(replace(current, status=TaskStatus.DONE, assignee=None, completed_at=tx.now))
        return True

    return unit


def recover_from(read: Lease) -> Callable[[Tx], bool]:
    """Recover the lease as decided from `read` (maybe an older read):
    the write is conditional on `read.version`."""

    def unit(tx: Tx) -> bool:
        ended = replace(
            read, ended_at=tx.now, end_reason=EndReason.LEASE_EXPIRED, version=read.version + 1
        )
        if not tx.update_lease(ended, read.version):
            return False
        current = tx.get_task(read.board_id, read.task_id, for_update=True)
        assert current is not None
        tx.update_task(
            replace(
                current,
                status=TaskStatus.TODO,
                assignee=None,
                recovery_count=current.recovery_count + 1,
                updated_at=tx.now,
            )
        )
        return True

    return unit
