"""A lease's life through the Coordinator: claim, report, silence, recovery, handoff."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.support.world import World

from tenure.core.errors import LeaseLost, NotFound, NotHolder
from tenure.core.model import TaskStatus


async def test_silent_agent_is_recovered_after_the_deadline_and_the_next_claim_gets_the_handoff(
    world: World,
) -> None:
    a1 = await world.add_agent("a1")
    a2 = await world.add_agent("a2")
    await world.add_task("T1")
    claimed = await world.claim(a1)
    assert claimed["task"]["id"] == "T1"
    assert claimed["lease"]["phase"] == 1
    assert claimed["lease"]["epoch"] == 1

    world.clock.advance(30)
    await world.report(a1, "T1", progress=10, message="parsed the config", branch="feat/t1")
    world.clock.advance(30)
    await world.report(a1, "T1", progress=20, message="wrote the loader\nnext: tests")
    # Two reports 30 s apart: phase default (240 s) + 60 s grace from t=60,
    # so recover-after is t=360; silence must then exceed 30 s x 5 = 150 s.
    await world.run_for(290)  # now t=350
    assert (await world.task("T1"))["status"] == "in_progress"
    await world.advance(11)  # t=361, past recover-after, 301 s of silence
    task = await world.task("T1")
    assert task["status"] == "todo"
    assert task["recovery_count"] == 1
    assert "lease.recovered" in await world.event_types("T1")
    assert any("[tenure:recovered]" in c["body"] for c in task["comments"])
    assert world.sink.expired and world.sink.expired[0]["progress_pct_at_expiry"] == 20

    answer = await world.claim(a2)
    handoff = answer["handoff"]
    assert answer["task"]["id"] == "T1"
    assert answer["lease"]["epoch"] == 2
    assert handoff["recovered_from_agent"] == "a1"
    assert handoff["previous_progress"] == 20
    assert handoff["previous_agent_branch"] == "feat/t1"
    assert "git merge feat/t1 --no-edit" in handoff["instructions"]
    assert "> wrote the loader" in handoff["instructions"]
    assert "> next: tests" in handoff["instructions"]

    done = await world.report(a2, "T1", status="completed", progress=100)
    assert done["task"]["status"] == "done"


async def test_no_recovery_before_recover_after_even_for_an_agent_that_never_reported(
    world: World,
) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.claim(a1)
    await world.advance(239)  # phase 1: 180 s + 60 s grace
    assert (await world.task("T1"))["status"] == "in_progress"
    await world.advance(2)
    assert (await world.task("T1"))["status"] == "todo"


async def test_report_during_grace_revives_the_lease(world: World) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.claim(a1)
    await world.advance(200)  # expired at 180, in grace until 240
    answer = await world.report(a1, "T1", progress=5)
    assert answer["lease"]["state"] == "active"
    assert "lease.revived" in await world.event_types("T1")
    assert world.sink.counts.get("revivals") == 1


async def test_report_after_expiry_before_recovery_revives_the_lease(world: World) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.claim(a1)
    world.clock.advance(30)
    await world.report(a1, "T1", progress=10)
    world.clock.advance(100)
    await world.report(a1, "T1", progress=20)
    # Median interval 100 s: the detector waits until 500 s of silence.
    await world.advance(320)  # t=450: past recover-after (430), only 320 s silent
    assert (await world.task("T1"))["status"] == "in_progress"
    answer = await world.report(a1, "T1", progress=30)
    assert answer["lease"]["state"] == "active"
    assert "lease.revived" in await world.event_types("T1")


async def test_old_holder_claims_back_a_recovered_task_nobody_took(world: World) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.claim(a1)
    await world.advance(241)
    assert (await world.task("T1"))["recovery_count"] == 1
    answer = await world.report(a1, "T1", progress=40, message="still here")
    assert answer["ok"] is True
    assert answer["lease"]["epoch"] == 2
    task = await world.task("T1")
    assert task["status"] == "in_progress"
    assert task["assignee"] == "a1"
    assert task["recovery_count"] == 0
    assert task["handoff"] is None
    assert "lease.reclaimed" in await world.event_types("T1")
    assert world.sink.counts.get("false_recovery.reclaimed") == 1


async def test_zombie_gets_lease_lost_and_its_late_note_joins_the_handoff(world: World) -> None:
    a1 = await world.add_agent("a1")
    a2 = await world.add_agent("a2")
    await world.add_task("T1")
    await world.claim(a1)
    world.clock.advance(10)
    await world.report(a1, "T1", progress=50)
    await world.advance(400)
    await world.claim(a2)
    with pytest.raises(LeaseLost) as lost:
        await world.report(a1, "T1", progress=30, message="late but done with the parser")
    assert "request your next task" in lost.value.message
    task = await world.task("T1")
    assert task["assignee"] == "a2"
    assert any("late but done" in note for note in task["handoff"]["late_notes"])
    assert task["handoff"]["previous_progress"] == 50  # never lowered by the late 30
    assert world.sink.counts.get("false_recovery.lost") == 1
    assert "lease.stale_refused" in await world.event_types("T1")


async def test_an_agent_that_never_held_the_task_is_not_holder(world: World) -> None:
    a1 = await world.add_agent("a1")
    a3 = await world.add_agent("a3")
    await world.add_task("T1")
    await world.claim(a1)
    with pytest.raises(NotHolder):
        await world.report(a3, "T1", progress=10)
    assert (await world.task("T1"))["lease"]["agent_id"] == "a1"


async def test_an_agent_of_another_board_gets_not_found(world: World) -> None:
    a1 = await world.add_agent("a1")
    await world.setup_board("b2")
    x1 = await world.add_agent("x1", board_id="b2")
    await world.add_task("T1")
    await world.claim(a1)
    with pytest.raises(NotFound):
        await world.report(x1, "T1", progress=10)
    with pytest.raises(NotFound):
        await world.coordinator.get_task_context(x1, "T1")


async def test_a_stale_epoch_is_refused(world: World) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.claim(a1)
    with pytest.raises(LeaseLost):
        await world.report(a1, "T1", progress=10, epoch=7)
    assert (await world.task("T1"))["lease"]["progress"] == 0


async def test_a_done_task_with_a_stale_lease_is_released_never_recovered(world: World) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.claim(a1)

    def finish_behind_the_lease(tx):  # type: ignore[no-untyped-def]
        task = tx.get_task("b1", "T1")
        tx.update_task(replace(task, status=TaskStatus.DONE))

    await world.store.run(finish_behind_the_lease)
    await world.advance(300)
    task = await world.task("T1")
    assert task["status"] == "done"
    assert task["lease"] is None
    assert task["recovery_count"] == 0
    types = await world.event_types("T1")
    assert "lease.released" in types and "lease.recovered" not in types
    assert world.sink.counts.get("stale_leases_released") == 1


async def test_the_third_recovery_dead_letters_and_a_requeue_brings_the_task_back(
    world: World,
) -> None:
    await world.add_task("T1")
    for n in range(3):
        agent = await world.add_agent(f"a{n}")
        answer = await world.claim(agent)
        assert answer["task"]["id"] == "T1"
        await world.advance(241)
    task = await world.task("T1")
    assert task["status"] == "blocked"
    assert task["dead_lettered"] is True
    assert task["blocked_reason"] == "recovery_budget_exhausted"
    assert "task.dead_lettered" in await world.event_types("T1")
    late = await world.add_agent("late")
    assert (await world.claim(late))["task"] is None

    requeued = await world.coordinator.admin.requeue(world.admin, "b1", "T1")
    assert requeued["status"] == "todo"
    assert (await world.claim(late))["task"]["id"] == "T1"


async def test_restart_keeps_the_lease_exactly(world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.claim(a1)
    world.clock.advance(20)
    before = await world.report(a1, "T1", progress=30, message="half", branch="w/a1")
    if world.store.dialect == "sqlite":
        from tenure.service import Coordinator
        from tenure.store.sqlite import open_sqlite

        await world.store.close()
        world.store = await open_sqlite(tmp_path / "tenure.db", world.clock)
        world.coordinator = Coordinator(world.store, world.coordinator.policy, sink=world.sink)
        world.monitor.c = world.coordinator
    after = await world.task("T1")
    assert after["lease"]["expires_at"] == before["lease"]["expires_at"]
    assert after["lease"]["progress"] == 30
    assert after["lease"]["branch"] == "w/a1"
    assert after["lease"]["version"] == before["lease"]["version"]
