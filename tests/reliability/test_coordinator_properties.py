"""Property tests of the Coordinator, beyond the core's: random sequences of
claims, reports (some quoting old epochs), heartbeats, touches, releases,
blocks, validations, session closes, clock advances, monitor passes and
admin acts (unassign, cancel, requeue) on a real SQLite store with a
FakeClock. After every step:

- at most one live lease per task, and only the newest epoch may be live;
- an `in_progress` task has exactly one live lease, of its epoch and its
  assignee; a `todo` task has none;
- a task's epoch never goes down, and each new lease has a higher epoch;
- no monitor recovery happens before the lease's recover-after;
- a task's handoff progress never goes down while it has a handoff.

Bounded by the Hypothesis profile of tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import event as event_kind
from hypothesis import given
from hypothesis import strategies as st

from tenure.auth import ADMIN, Caller, Role
from tenure.clock import FakeClock
from tenure.core.decisions import Report
from tenure.core.errors import TenureError
from tenure.core.model import TaskStatus
from tenure.core.policy import Policy
from tenure.monitor import Monitor
from tenure.service import Coordinator
from tenure.store.base import Store
from tenure.store.sqlite import open_sqlite

BOARD = "props"
AGENTS = ("a0", "a1", "a2")
TASKS = ("t0", "t1", "t2", "t3")
MONITOR_ENDS = {"lease_expired", "agent_disconnected", "validation_timeout"}

agents = st.sampled_from(AGENTS)
#: "mine" is the task the agent holds when the step runs (else the first task).
tasks = st.sampled_from((*TASKS, "mine", "mine", "mine", "mine"))
progress = st.one_of(st.none(), st.integers(0, 100))
#: "current" and "old" are the held lease's epoch and the one before it.
epochs = st.sampled_from((None, None, "current", "old", 1, 2))

step = st.one_of(
    st.tuples(st.just("claim"), agents),
    st.tuples(st.just("claim"), agents),
    st.tuples(st.just("report"), agents, tasks, progress, epochs),
    st.tuples(st.just("report"), agents, tasks, progress, epochs),
    st.tuples(st.just("complete"), agents, tasks, st.booleans(), epochs),
    st.tuples(st.just("heartbeat"), agents, tasks, epochs),
    st.tuples(st.just("touch"), agents),
    st.tuples(st.just("release"), agents, tasks),
    st.tuples(st.just("block"), agents, tasks),
    st.tuples(st.just("validation"), agents, tasks, st.booleans()),
    st.tuples(st.just("session"), agents, st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from((1.0, 15.0, 61.0, 130.0, 250.0, 700.0))),
    st.tuples(st.just("pass")),
    st.tuples(st.just("advance+pass"), st.sampled_from((30.0, 61.0, 130.0, 250.0, 700.0))),
    st.tuples(st.just("admin"), st.sampled_from(("unassign", "cancel", "requeue")), tasks),
)


def caller(agent_id: str) -> Caller:
    return Caller(Role.AGENT, BOARD, agent_id)


@dataclass
class Watch:
    """What the invariants remember from one step to the next."""

    epochs: dict[str, int] = field(default_factory=dict)
    handoff_progress: dict[str, int] = field(default_factory=dict)
    seen_events: int = 0


async def resolve(store: Store, op: tuple[Any, ...]) -> tuple[Any, ...]:
    """`op` with "mine", "current" and "old" replaced by what the agent holds now."""
    if op[0] in {"claim", "touch", "session", "advance", "advance+pass", "pass", "admin"}:
        return op
    agent_id = op[1]

    def held(tx: Any) -> Any:
        live = tx.live_leases_of_agent(BOARD, agent_id)
        if live:
            return live[0]
        ended = [tx.last_lease_of(BOARD, t, agent_id) for t in TASKS]
        return max((x for x in ended if x is not None), key=lambda x: x.assigned_at, default=None)

    lease = await store.read(held)
    out = list(op)
    if out[2] == "mine":
        out[2] = lease.task_id if lease is not None else TASKS[0]
    for i, value in enumerate(out):
        if i > 2 and value in {"current", "old"}:
            epoch = lease.epoch if lease is not None else 1
            out[i] = max(1, epoch - 1) if value == "old" else epoch
    return tuple(out)


async def apply(c: Coordinator, monitor: Monitor, clock: FakeClock, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "claim":
        await c.request_next_task(caller(op[1]))
    elif kind == "report":
        await c.report_progress(caller(op[1]), op[2], Report(progress=op[3], epoch=op[4]))
    elif kind == "complete":
        report = Report(status="completed", validate=op[3], epoch=op[4])
        await c.report_progress(caller(op[1]), op[2], report)
    elif kind == "heartbeat":
        await c.heartbeat(caller(op[1]), op[2], epoch=op[3])
    elif kind == "touch":
        await c.touch(caller(op[1]))
    elif kind == "release":
        await c.release_task(caller(op[1]), op[2], "over to you")
    elif kind == "block":
        await c.report_blocker(caller(op[1]), op[2], "stuck")
    elif kind == "validation":
        await c.validation_result(caller(op[1]), op[2], op[3])
    elif kind == "session":
        await (c.session_opened if op[2] else c.session_closed)(caller(op[1]))
    elif kind == "advance":
        clock.advance(op[1])
    elif kind == "pass":
        await monitor.run_pass()
    elif kind == "advance+pass":
        clock.advance(op[1])
        await monitor.run_pass()
    elif kind == "admin":
        act = {
            "unassign": c.admin.unassign,
            "cancel": c.admin.cancel_task,
            "requeue": c.admin.requeue,
        }[op[1]]
        await act(ADMIN, BOARD, op[2])


async def check(store: Store, watch: Watch, op: tuple[Any, ...]) -> None:
    def load(tx: Any) -> Any:
        return [(t, tx.lease_history(BOARD, t.id)) for t in tx.list_tasks(BOARD)]

    state = await store.read(load)
    for task, history in state:
        where = f"after {op}: task {task.id}"
        live = [x for x in history if x.ended_at is None]
        assert len(live) <= 1, f"{where} has {len(live)} live leases"
        ordered = sorted(history, key=lambda x: x.epoch)
        assert all(x.ended_at is not None for x in ordered[:-1]), f"{where}: an old epoch lives"
        for before, after in itertools.pairwise(ordered):
            assert before.assigned_at <= after.assigned_at, f"{where}: epochs out of time order"
        if task.status is TaskStatus.IN_PROGRESS:
            assert len(live) == 1, f"{where} is in_progress with {len(live)} live leases"
            assert live[0].epoch == task.epoch and live[0].agent_id == task.assignee, where
        if task.status is TaskStatus.TODO:
            assert not live, f"{where} is todo with a live lease"
        assert task.epoch >= watch.epochs.get(task.id, 0), f"{where}: epoch went down"
        if history:
            assert task.epoch == ordered[-1].epoch, f"{where}: epoch is not its newest lease's"
        watch.epochs[task.id] = task.epoch
        if task.handoff is not None:
            before = watch.handoff_progress.get(task.id, 0)
            assert task.handoff.previous_progress >= before, f"{where}: handoff progress fell"
            watch.handoff_progress[task.id] = task.handoff.previous_progress
        else:
            watch.handoff_progress.pop(task.id, None)

    rows = {(t.id, x.epoch): x for t, history in state for x in history}
    events = await store.events_after(watch.seen_events, board_id=BOARD, limit=10_000)
    for event in events:
        event_kind(event.type)
        if event.type == "lease.recovered" and event.data.get("reason") in MONITOR_ENDS:
            lease = rows[(event.task_id, event.epoch)]
            assert event.at >= lease.recover_after, (
                f"after {op}: {event.task_id}@{event.epoch} recovered at {event.at}, "
                f"before its recover-after {lease.recover_after}"
            )
        watch.seen_events = max(watch.seen_events, event.id)


async def scenario(folder: Path, ops: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    store = await open_sqlite(folder / "tenure.db", clock)
    try:
        c = Coordinator(store, Policy())
        monitor = Monitor(c, interval=10.0)
        await c.admin.create_board(ADMIN, BOARD)
        for agent_id in AGENTS:
            await c.admin.register_agent(ADMIN, {"agent_id": agent_id}, BOARD)
        for task_id in TASKS:
            await c.admin.add_task(ADMIN, BOARD, {"id": task_id, "title": task_id})
        watch = Watch()
        for op in ops:
            op = await resolve(store, op)
            try:
                await apply(c, monitor, clock, op)
            except TenureError as refusal:  # an answer; the invariants hold either way
                event_kind(f"refused: {refusal.code}")
            await check(store, watch, op)
    finally:
        await store.close()


@given(st.lists(step, min_size=15, max_size=60))
def test_random_sequences_of_calls_keep_the_coordinators_invariants(
    ops: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(Path(folder), ops))
