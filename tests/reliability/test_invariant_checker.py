"""The invariant checker of the chaos tests catches what it is there to catch:
each test breaks one invariant in an otherwise sound history and expects the
checker to name it (a checker that never fails would prove nothing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.reliability.agents import LATE_PROGRESS, Ack, Ledger, Refusal
from tests.reliability.invariants import Snapshot, check

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sound() -> tuple[Snapshot, Ledger]:
    """Task t1: a1 held epoch 1 (reported 20), was recovered; a2 took epoch 2,
    reported 50 and completed. a1's late report (quoting epoch 1) was refused."""
    leases = [
        {"task_id": "t1", "epoch": 1, "agent_id": "a1", "assigned_at": at(0),
         "expires_at": at(2), "recover_after": at(2.5), "ended_at": at(2.6),
         "end_reason": "lease_expired", "progress": 20, "max_progress": 20},
        {"task_id": "t1", "epoch": 2, "agent_id": "a2", "assigned_at": at(3),
         "expires_at": at(6), "recover_after": at(6.5), "ended_at": at(5),
         "end_reason": "completed", "progress": 100, "max_progress": 100},
    ]  # fmt: skip
    events: list[dict[str, Any]] = []

    def event(kind: str, epoch: int, agent: str, when: float, **data: Any) -> None:
        events.append(
            {"id": len(events) + 1, "type": kind, "task_id": "t1", "agent_id": agent,
             "epoch": epoch, "at": at(when), "data": data}
        )  # fmt: skip

    event("lease.created", 1, "a1", 0)
    event("lease.renewed", 1, "a1", 1, progress=20)
    event("lease.recovered", 1, "a1", 2.6, reason="lease_expired")
    event("lease.created", 2, "a2", 3)
    event("lease.renewed", 2, "a2", 4, progress=50)
    event("lease.stale_refused", 1, "a1", 4.5, reason="lease_lost")
    event("lease.released", 2, "a2", 5, reason="completed")
    tasks = [{"id": "t1", "status": "done", "epoch": 2, "completed_at": at(5)}]
    ledger = Ledger()
    ledger.add("reports", Ack("a1", "t1", 1, 20, completed=False))
    ledger.add("reports", Ack("a2", "t1", 2, 50, completed=False))
    ledger.add("completions", Ack("a2", "t1", 2, 100, completed=True))
    ledger.add("stale_refused", Refusal("a1", "t1", 1, LATE_PROGRESS))
    ledger.sent |= {("a1", "t1", 20), ("a2", "t1", 50), ("a1", "t1", LATE_PROGRESS)}
    return Snapshot(tasks, leases, events), ledger


def test_a_sound_history_passes() -> None:
    assert check(*sound()) == []


def test_two_live_leases_at_once_are_caught() -> None:
    snapshot, ledger = sound()
    snapshot.leases[0]["ended_at"] = at(3.5)  # epoch 1 outlived epoch 2's start
    snapshot.events[2]["at"] = at(3.5)
    assert any("ended" in p and "began" in p for p in check(snapshot, ledger))


def test_an_epoch_going_back_is_caught() -> None:
    snapshot, ledger = sound()
    snapshot.events.append(
        {"id": 99, "type": "lease.created", "task_id": "t1", "agent_id": "a3",
         "epoch": 1, "at": at(6), "data": {}}
    )  # fmt: skip
    assert any("started" in p for p in check(snapshot, ledger))


def test_a_task_completed_twice_or_never_is_caught() -> None:
    snapshot, ledger = sound()
    snapshot.events.append(dict(snapshot.events[-1], id=99))
    assert any("completed 2 times" in p for p in check(snapshot, ledger))
    snapshot, ledger = sound()
    snapshot.tasks[0]["status"] = "todo"
    assert any("completed" in p for p in check(snapshot, ledger))


def test_a_lost_acknowledged_report_is_caught() -> None:
    snapshot, ledger = sound()
    del snapshot.events[4]  # a2's renewal at 50 never reached the log
    assert any("no lease.renewed" in p for p in check(snapshot, ledger))
    snapshot, ledger = sound()
    snapshot.leases[0]["max_progress"] = 10
    assert any("progress lost" in p for p in check(snapshot, ledger))


def test_an_accepted_stale_write_is_caught() -> None:
    snapshot, ledger = sound()
    # The zombie's late report landed on a2's lease.
    snapshot.events.insert(
        5,
        {"id": 50, "type": "lease.renewed", "task_id": "t1", "agent_id": "a2", "epoch": 2,
         "at": at(4.5), "data": {"progress": LATE_PROGRESS}},
    )  # fmt: skip
    problems = check(snapshot, ledger)
    assert any("never sent" in p for p in problems)
    assert any("shows as applied" in p for p in problems)


def test_a_write_after_its_lease_ended_is_caught() -> None:
    snapshot, ledger = sound()
    snapshot.events.insert(
        3,
        {"id": 40, "type": "lease.renewed", "task_id": "t1", "agent_id": "a1", "epoch": 1,
         "at": at(2.8), "data": {"progress": 20}},
    )  # fmt: skip
    assert any("outside its lease's life" in p for p in check(snapshot, ledger))
