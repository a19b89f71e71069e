"""A report with `claim_next`: the report, then a claim, in one unit of work
(on both stores, with a FakeClock)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from tests.support.world import World

from tenure.auth import Caller
from tenure.core.decisions import Report
from tenure.core.errors import LeaseLost
from tenure.store.base import Reads


async def _finish(world: World, caller: Caller, task_id: str, **fields: Any) -> dict[str, Any]:
    report = Report(**{"status": "completed", "progress": 100, **fields})
    return await world.coordinator.report_progress(caller, task_id, report, claim_next=True)


async def _holding_t1_with_t2_waiting(world: World) -> Caller:
    """Agent a1, holding task T1, with T2 ready on the board."""
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.add_task("T2")
    assert (await world.claim(a1))["task"]["id"] == "T1"
    return a1


async def test_a_completion_with_claim_next_gives_the_next_task_in_claim_order(
    world: World,
) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("base", priority="low")
    await world.add_task("after", priority="urgent", dependencies=["base"])
    await world.add_task("medium")
    assert (await world.claim(a1))["task"]["id"] == "medium"

    done = await _finish(world, a1, "medium")
    assert done["result"] == "ended" and done["task"]["status"] == "done"
    assert done["lease"] is None
    assert done["next"]["task"]["id"] == "base"  # 'after' waits on 'base'
    assert done["next"]["lease"]["epoch"] == 1 and done["next"]["handoff"] is None
    # The notice is built last: it shows the lease the claim just gave.
    assert [lease["task_id"] for lease in done["notice"]["leases"]] == ["base"]

    # 'after' is ready only once 'base' is done: in this same unit.
    assert (await _finish(world, a1, "base"))["next"]["task"]["id"] == "after"
    last = await _finish(world, a1, "after")
    assert last["next"]["task"] is None and last["next"]["reason"] == "no_todo_tasks"
    assert last["next"]["retry_after_s"] > 0 and last["notice"]["leases"] == []
    for task_id in ("medium", "base", "after"):
        assert (await world.task(task_id))["status"] == "done"
    assert await world.event_types("base") == ["task.created", "lease.created", "lease.released"]


async def test_claim_next_after_a_report_that_keeps_the_lease_is_told_it_holds_a_task(
    world: World,
) -> None:
    a1 = await _holding_t1_with_t2_waiting(world)
    validating = await _finish(world, a1, "T1", validate=True)
    assert validating["task"]["status"] == "in_progress"
    assert validating["next"]["task"] is None
    assert validating["next"]["reason"] == "agent_holds_a_task"
    assert [lease["task_id"] for lease in validating["next"]["held"]] == ["T1"]
    going = await world.coordinator.report_progress(
        a1, "T1", Report(status="in_progress", progress=50), claim_next=True
    )
    assert going["next"]["reason"] == "agent_holds_a_task"
    assert (await world.task("T2"))["status"] == "todo"


async def test_a_blocked_report_with_claim_next_moves_on_to_the_next_task(world: World) -> None:
    a1 = await _holding_t1_with_t2_waiting(world)
    blocked = await world.coordinator.report_progress(
        a1, "T1", Report(status="blocked", message="needs a key"), claim_next=True
    )
    assert blocked["task"]["status"] == "blocked"
    assert blocked["next"]["task"]["id"] == "T2"


async def test_a_blocker_report_with_claim_next_moves_on_to_the_next_task(world: World) -> None:
    a1 = await _holding_t1_with_t2_waiting(world)
    blocked = await world.coordinator.report_blocker(
        a1, "T1", "no credentials for the staging database", "high", claim_next=True
    )
    assert blocked["task"]["status"] == "blocked"
    assert blocked["next"]["task"]["id"] == "T2"
    assert [lease["task_id"] for lease in blocked["notice"]["leases"]] == ["T2"]


async def test_a_refused_report_with_claim_next_claims_nothing(world: World) -> None:
    a1 = await world.add_agent("a1")
    a2 = await world.add_agent("a2")
    await world.add_task("T1", priority="high")
    await world.add_task("T2")
    await world.claim(a1)
    await world.advance(241)  # a1 goes silent: T1 is recovered...
    assert (await world.claim(a2))["task"]["id"] == "T1"  # ...and taken by a2
    with pytest.raises(LeaseLost):
        await _finish(world, a1, "T1")
    assert (await world.task("T2"))["status"] == "todo"
    again = await world.claim(a1)  # nothing was granted behind the refusal
    assert again["task"]["id"] == "T2"


async def test_agents_finishing_and_claiming_at_once_never_share_a_task(world: World) -> None:
    agents = [await world.add_agent(f"a{i}") for i in range(6)]
    for i in range(30):
        await world.add_task(f"T{i:02d}")
    given: Counter[str] = Counter()

    async def work(agent: Caller) -> None:
        answer = await world.claim(agent)
        for _ in range(40):  # bounded: 30 tasks among 6 agents
            task = answer["task"] if "task" in answer and "next" not in answer else None
            task = answer["next"]["task"] if "next" in answer else task
            if task is None:
                return
            given[task["id"]] += 1
            answer = await _finish(world, agent, task["id"])

    await asyncio.wait_for(asyncio.gather(*(work(agent) for agent in agents)), timeout=60)
    assert sorted(given) == [f"T{i:02d}" for i in range(30)]
    assert set(given.values()) == {1}


async def test_an_admin_assignment_does_not_swallow_the_agents_notice_of_a_loss(
    world: World,
) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T0")
    await world.add_task("T1")
    assert (await world.claim(a1))["task"]["id"] == "T0"
    await world.advance(241)  # a1 goes silent: T0 is recovered
    answer = await world.coordinator.assign(world.admin, world.board_id, "T1", "a1")
    assert answer["task"]["id"] == "T1" and "notice" not in answer
    notice = await world.coordinator.touch(a1)
    assert [lost["task_id"] for lost in notice["lost"]] == ["T0"]
    assert [lease["task_id"] for lease in notice["leases"]] == ["T1"]


async def test_only_a_report_that_may_end_the_lease_reads_a_claim_candidate_with_begin(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL reads the candidate locked, so other claimers skip it while
    the unit runs: a report that keeps the lease (in progress, or asking for
    validation) must not ask for it, whatever `claim_next` says."""
    a1 = await _holding_t1_with_t2_waiting(world)
    hints: list[Reads | None] = []
    real = world.store.run

    async def recording(fn: Any, *, quick: bool = False, reads: Reads | None = None) -> Any:
        hints.append(reads)
        return await real(fn, quick=quick, reads=reads)

    monkeypatch.setattr(world.store, "run", recording)
    for fields in ({"status": "in_progress"}, {"status": "completed", "validate": True}):
        answer = await world.coordinator.report_progress(
            a1, "T1", Report(progress=50, **fields), claim_next=True
        )
        assert answer["next"]["reason"] == "agent_holds_a_task"
    await _finish(world, a1, "T1")
    limit = world.coordinator.options.max_tasks_per_agent
    assert [hint.claim_below if hint else None for hint in hints] == [None, None, limit + 1]
