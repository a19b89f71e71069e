"""Session close, the ways an assignment ends, validation and escalation."""

from __future__ import annotations

import pytest
from tests.support.world import World

from tenure.core.errors import Conflict


async def _working(world: World, agent_id: str = "a1", task_id: str = "T1"):  # type: ignore[no-untyped-def]
    agent = await world.add_agent(agent_id)
    await world.add_task(task_id)
    await world.claim(agent)
    world.clock.advance(20)
    await world.report(agent, task_id, progress=10)
    world.clock.advance(20)
    await world.report(agent, task_id, progress=20)
    return agent


async def test_closing_the_last_session_gets_the_task_recovered_within_30_s_and_a_pass(
    world: World,
) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.coordinator.session_opened(a1)
    await world.claim(a1)
    for progress in (10, 20, 30):
        world.clock.advance(20)
        await world.report(a1, "T1", progress=progress)
    await world.coordinator.session_closed(a1)
    assert (await world.task("T1"))["lease"]["state"] == "suspect"
    await world.advance(29)
    assert (await world.task("T1"))["status"] == "in_progress"
    await world.advance(2)
    await world.advance(10)
    task = await world.task("T1")
    assert task["status"] == "todo"
    assert task["handoff"]["recovery_reason"] == "agent_disconnected"


@pytest.mark.parametrize("dropped", [False, True])
async def test_a_suspect_lease_shows_whether_its_connection_dropped(
    world: World, dropped: bool
) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.coordinator.session_opened(a1)
    await world.claim(a1)
    assert (await world.task("T1"))["lease"]["suspect_dropped"] is False
    await world.coordinator.session_closed(a1, dropped=dropped)
    lease = (await world.task("T1"))["lease"]
    assert lease["state"] == "suspect"
    assert lease["suspect_dropped"] is dropped


async def test_a_signal_after_the_close_clears_the_suspicion(world: World) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.coordinator.session_opened(a1)
    await world.claim(a1)
    await world.coordinator.session_closed(a1)
    world.clock.advance(10)
    await world.coordinator.touch(a1)  # any call counts
    await world.run_for(40)
    task = await world.task("T1")
    assert task["status"] == "in_progress"
    assert task["lease"]["state"] == "active"


async def test_a_second_open_session_prevents_suspicion(world: World) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.coordinator.session_opened(a1)
    await world.coordinator.session_opened(a1)
    await world.claim(a1)
    await world.coordinator.session_closed(a1)
    assert (await world.task("T1"))["lease"]["suspect_since"] is None
    await world.run_for(60)
    assert (await world.task("T1"))["status"] == "in_progress"


async def test_every_way_an_assignment_ends_goes_through_one_path(world: World) -> None:
    a1 = await _working(world)
    await world.report(a1, "T1", status="completed", progress=100)
    await world.add_task("T2")
    await world.claim(a1)
    await world.report(a1, "T2", status="blocked", message="needs credentials")
    await world.add_task("T3")
    await world.claim(a1)
    await world.coordinator.report_blocker(a1, "T3", "the API is down", "high")
    await world.add_task("T4")
    await world.claim(a1)
    await world.coordinator.release_task(a1, "T4", "not my area")
    a2 = await world.add_agent("a2")
    await world.claim(a2)  # takes T4 again
    await world.coordinator.admin.unassign(world.admin, "b1", "T4")

    ended = {
        e["task_id"]: e["data"].get("reason")
        for e in await world.events()
        if e["type"] == "lease.released"
    }
    assert ended == {"T1": "completed", "T2": "blocked", "T3": "blocked", "T4": "unassigned"}
    statuses = {tid: (await world.task(tid))["status"] for tid in ("T1", "T2", "T3", "T4")}
    assert statuses == {"T1": "done", "T2": "blocked", "T3": "blocked", "T4": "todo"}
    assert (await world.task("T4"))["handoff"]["recovery_reason"] == "unassigned"
    assert (await world.task("T4"))["recovery_count"] == 0  # only recoveries count


async def test_validation_passed_marks_the_task_done(world: World) -> None:
    a1 = await _working(world)
    answer = await world.report(a1, "T1", status="completed", progress=100, validate=True)
    assert answer["task"]["status"] == "in_progress"
    assert "validating" in answer["lease"]["flags"]
    window = answer["lease"]["seconds_left"]
    assert window == pytest.approx(600, abs=1)
    world.clock.advance(100)
    again = await world.report(a1, "T1", status="completed", progress=100, validate=True)
    assert again["lease"]["seconds_left"] == pytest.approx(600, abs=1)  # anchored on now
    result = await world.coordinator.validation_result(a1, "T1", True, "all green")
    assert result["task"]["status"] == "done"


async def test_validation_failed_keeps_the_holder_in_phase_4(world: World) -> None:
    a1 = await _working(world)
    await world.report(a1, "T1", status="completed", progress=100, validate=True)
    result = await world.coordinator.validation_result(a1, "T1", False, "2 tests fail")
    assert result["task"]["status"] == "in_progress"
    assert result["lease"]["phase"] == 4
    assert "validating" not in result["lease"]["flags"]
    assert result["lease"]["message"] == "2 tests fail"


async def test_a_validation_window_that_runs_out_is_recovered(world: World) -> None:
    a1 = await _working(world)
    await world.report(a1, "T1", status="completed", progress=100, validate=True)
    await world.run_for(700)
    task = await world.task("T1")
    assert task["status"] == "todo"
    assert task["handoff"]["recovery_reason"] == "validation_timeout"


async def test_excessive_renewals_escalate_once(world: World) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.claim(a1)
    for n in range(12):
        world.clock.advance(10)
        await world.report(a1, "T1", progress=min(99, n * 8))
    escalations = [e for e in await world.events(task_id="T1") if e["type"] == "lease.escalated"]
    assert len(escalations) == 1


async def test_a_holder_whose_progress_does_not_move_is_flagged_stalled(world: World) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.claim(a1)
    for _ in range(7):
        world.clock.advance(10)
        answer = await world.report(a1, "T1", progress=40)
    assert "stalled" in answer["lease"]["flags"]
    assert "lease.stalled" in await world.event_types("T1")


async def test_deleting_a_task_with_a_live_lease_is_refused(world: World) -> None:
    await _working(world)
    with pytest.raises(Conflict):
        await world.coordinator.admin.delete_task(world.admin, "b1", "T1")
