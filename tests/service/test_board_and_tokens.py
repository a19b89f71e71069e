"""Tokens, boards, tasks and claiming through the Coordinator."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tests.support.world import World

from tenure import admin
from tenure.core.decisions import Report
from tenure.core.errors import Conflict, Forbidden, InvalidInput, Unauthorized
from tenure.core.model import TaskStatus
from tenure.store.base import Tx


async def test_a_revoked_or_rotated_away_token_is_refused(world: World) -> None:
    await world.add_agent("a1")
    old = world.tokens["a1"]
    caller = await world.coordinator.authenticate(old)
    assert caller.agent_id == "a1"
    rotated = await world.coordinator.admin.rotate_agent_token(world.admin, "b1", "a1")
    with pytest.raises(Unauthorized):
        await world.coordinator.authenticate(old)
    assert (await world.coordinator.authenticate(rotated["token"])).agent_id == "a1"
    await world.coordinator.admin.revoke_agent(world.admin, "b1", "a1")
    with pytest.raises(Unauthorized):
        await world.coordinator.authenticate(rotated["token"])
    with pytest.raises(Unauthorized):
        await world.claim(caller)


async def test_an_enrolment_key_registers_agents_and_nothing_else(world: World) -> None:
    made = await world.setup_board("b2")
    key = await world.coordinator.authenticate(made["enrolment_key"])
    registered = await world.coordinator.admin.register_agent(key, {"agent_id": "e1"})
    assert registered["agent"]["board_id"] == "b2"
    agent = await world.coordinator.authenticate(registered["token"])
    assert (agent.board_id, agent.agent_id) == ("b2", "e1")
    with pytest.raises(Forbidden):
        await world.claim(key)
    with pytest.raises(Forbidden):
        await world.coordinator.admin.add_task(key, "b2", {"id": "T", "title": "t"})
    with pytest.raises(Forbidden):
        await world.coordinator.admin.create_board(key, "b3")


async def test_unknown_tokens_are_unauthorized(world: World) -> None:
    for token in (None, "", "tnr_agent_nope", "tnr_admin_nope", "garbage"):
        with pytest.raises(Unauthorized):
            await world.coordinator.authenticate(token)


async def test_claims_follow_dependencies_skills_and_priority(world: World) -> None:
    a1 = await world.add_agent("a1", skills=["python"])
    await world.add_task("base", priority="low")
    await world.add_task("after", priority="urgent", dependencies=["base"])
    await world.add_task("rusty", priority="urgent", required_skills=["rust"])
    await world.add_task("medium")
    first = await world.claim(a1)
    assert first["task"]["id"] == "medium"  # 'after' waits on 'base'; 'rusty' needs rust
    await world.report(a1, "medium", status="completed", progress=100)
    assert (await world.claim(a1))["task"]["id"] == "base"
    await world.report(a1, "base", status="completed", progress=100)
    assert (await world.claim(a1))["task"]["id"] == "after"
    await world.report(a1, "after", status="completed", progress=100)
    nothing = await world.claim(a1)
    assert nothing["task"] is None
    assert nothing["reason"] == "skills_unmatched"
    assert nothing["retry_after_s"] > 0


async def test_an_agent_holding_a_task_is_told_so(world: World) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.add_task("T2")
    await world.claim(a1)
    again = await world.claim(a1)
    assert again["task"] is None
    assert again["reason"] == "agent_holds_a_task"


async def test_recovered_tasks_are_claimed_first(world: World) -> None:
    a1 = await world.add_agent("a1")
    a2 = await world.add_agent("a2")
    await world.add_task("old", priority="low")
    await world.claim(a1)
    await world.add_task("new", priority="urgent")
    await world.advance(241)
    assert (await world.claim(a2))["task"]["id"] == "old"


async def test_a_dependency_cycle_or_unknown_dependency_is_refused_whole(world: World) -> None:
    await world.add_task("A")
    with pytest.raises(Conflict):
        await world.coordinator.admin.import_tasks(
            world.admin,
            "b1",
            [
                {"id": "B", "title": "b", "dependencies": ["C"]},
                {"id": "C", "title": "c", "dependencies": ["B"]},
            ],
        )
    with pytest.raises(InvalidInput):
        await world.add_task("D", dependencies=["nope"])
    with pytest.raises(Conflict):
        await world.coordinator.admin.update_task(world.admin, "b1", "A", {"dependencies": ["A"]})
    listing = await world.coordinator.admin.list_tasks(world.admin, "b1")
    listed = [t["id"] for t in listing["tasks"]]
    assert listed == ["A"]


async def test_any_call_of_the_holder_extends_its_lease_and_never_shortens_it(world: World) -> None:
    a1 = await world.add_agent("a1")
    a2 = await world.add_agent("a2")
    await world.add_task("T1")
    first = await world.claim(a1)
    world.clock.advance(100)
    notice = await world.coordinator.touch(a1)
    touched = notice["leases"][0]
    assert touched["expires_at"] > first["lease"]["expires_at"]
    world.clock.advance(10)
    await world.coordinator.touch(a2)  # another agent's call moves nothing
    assert (await world.task("T1"))["lease"]["expires_at"] == touched["expires_at"]


async def test_the_statistics_count_leases_and_recoveries(world: World) -> None:
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.add_task("T2")
    await world.claim(a1)
    await world.advance(241)
    stats = await world.coordinator.admin.statistics(world.admin, "b1")
    assert stats["counters"].get("recoveries.lease_expired") == 1


async def test_a_claim_finds_a_task_behind_many_the_agent_cannot_take(world: World) -> None:
    plain = await world.add_agent("plain")
    await world.coordinator.admin.import_tasks(
        world.admin,
        "b1",
        [
            {"id": f"rust-{n:03d}", "title": "needs rust", "required_skills": ["rust"]}
            for n in range(70)
        ]
        + [{"id": "anyone", "title": "anyone can", "priority": "low"}],
    )
    answer = await world.claim(plain)
    assert answer["task"]["id"] == "anyone"


async def test_a_worktree_given_at_claim_is_checked_and_kept(tmp_path: Path) -> None:
    from tests.support.world import make_world

    from tenure.service import Options

    root = tmp_path / "worktrees"
    (root / "a1").mkdir(parents=True)
    made = await make_world(
        "sqlite", tmp_path, options=Options(allowed_worktree_roots=(str(root),))
    )
    try:
        await made.setup_board()
        a1 = await made.add_agent("a1")
        await made.add_task("T1")
        with pytest.raises(InvalidInput):
            await made.coordinator.request_next_task(a1, worktree=str(tmp_path / "elsewhere"))
        assert (await made.task("T1"))["status"] == "todo"  # a refused claim took nothing
        answer = await made.coordinator.request_next_task(a1, worktree=str(root / "a1"))
        assert answer["task"]["id"] == "T1"
        agents = await made.coordinator.admin.list_agents(made.admin, "b1")
        assert agents[0]["worktree"] == str((root / "a1").resolve())
    finally:
        await made.store.close()


async def test_an_answer_shows_the_callers_lease_the_same_everywhere(world: World) -> None:
    """The lease in a claim's answer, in its task and in its notice is one view,
    equal to the lease read afterwards at the same moment."""
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    claimed = await world.claim(a1)
    lease = claimed["lease"]
    assert claimed["task"]["lease"] is lease
    assert claimed["notice"]["leases"] == [lease]
    assert (await world.task("T1"))["lease"] == lease
    report = await world.coordinator.report_progress(a1, "T1", Report(progress=40))
    assert report["lease"]["progress"] == 40 and report["lease"]["version"] == lease["version"] + 1
    assert report["task"]["lease"] == report["lease"] == report["notice"]["leases"][0]


async def test_an_act_on_a_malformed_task_id_is_refused_by_its_rule(world: World) -> None:
    """Ids that match no task id pattern (a NUL byte, which PostgreSQL would
    refuse as text, a path, an empty string) get the id rule's refusal on
    both stores, though the task an act names is read with BEGIN."""
    a1 = await world.add_agent("a1")
    for bad in ("t\x00", "../t", "", "t" * 500):
        with pytest.raises(InvalidInput) as refused:
            await world.coordinator.report_progress(a1, bad, Report(progress=5))
        assert refused.value.details["field"] == "task_id"


async def test_a_note_no_store_can_keep_is_refused_and_changes_nothing(world: World) -> None:
    """A NUL character in a progress note (PostgreSQL's text cannot hold one;
    libpq would cut the value at it): refused on both stores, the lease as
    it was."""
    a1 = await world.add_agent("a1")
    await world.add_task("T1")
    await world.coordinator.request_next_task(a1)
    before = await world.task("T1")
    with pytest.raises(InvalidInput) as refused:
        await world.coordinator.report_progress(a1, "T1", Report(progress=50, message="a\x00b"))
    assert refused.value.details["field"] == "message"
    assert await world.task("T1") == before


@pytest.mark.parametrize("own_up_to", [500, 1], ids=["one-by-one", "all-at-once"])
async def test_a_listing_by_status_shows_each_tasks_own_live_lease(
    world: World, own_up_to: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short listing of one status reads its tasks' leases one by one, a
    # longer one every live lease of the board: both must show the same.
    monkeypatch.setattr(admin, "_OWN_LEASES_UP_TO", own_up_to)
    agents = [await world.add_agent(name) for name in ("a1", "a2", "a3")]
    for task_id in ("T1", "T2", "T3", "T4"):
        await world.add_task(task_id)
    for agent in agents:
        await world.claim(agent)  # a1 holds T1, a2 T2, a3 T3
    await world.report(agents[1], "T2", status="completed", progress=100)
    await world.coordinator.report_blocker(agents[2], "T3", "no access")

    async def listed(status: str | None) -> dict[str, Any]:
        rows = (await world.coordinator.admin.list_tasks(world.admin, "b1", status))["tasks"]
        return {row["id"]: row["lease"] and row["lease"]["agent_id"] for row in rows}

    assert await listed(None) == {"T1": "a1", "T2": None, "T3": None, "T4": None}
    assert await listed("in_progress") == {"T1": "a1"}
    assert await listed("done") == {"T2": None}
    assert await listed("blocked") == {"T3": None}
    assert await listed("todo") == {"T4": None}

    # A lease is shown from the lease table, whatever status the task row says:
    # a filtered listing that reads only its own tasks' leases must find it.
    def relabel(tx: Tx) -> None:
        task = tx.get_task("b1", "T1")
        assert task is not None
        tx.update_task(replace(task, status=TaskStatus.TODO))

    await world.coordinator.store.run(relabel)
    assert await listed("todo") == {"T1": "a1", "T4": None}


async def test_a_listing_walked_page_by_page_shows_each_task_once_as_the_board_changes(
    world: World,
) -> None:
    # Several tasks share a creation moment (the fake clock stands still), so
    # pages end between tasks of one moment; tasks added, finished and deleted
    # between pages must not make the walk repeat or skip a task that stayed.
    agent = await world.add_agent("a1")
    for n in range(7):
        await world.add_task(f"T{n}")
        if n % 3 == 2:
            world.clock.advance(1)
    claimed = (await world.claim(agent))["task"]["id"]
    seen: list[str] = []
    after = None
    leases: dict[str, Any] = {}
    for step in range(10):
        page = await world.coordinator.admin.list_tasks(world.admin, "b1", limit=3, after=after)
        assert len(page["tasks"]) <= 3
        seen += [t["id"] for t in page["tasks"]]
        leases.update({t["id"]: t["lease"] for t in page["tasks"]})
        if step == 0:
            await world.add_task("late")  # created after every other: on the last page
            # A task already listed goes: an offset would now skip one.
            await world.coordinator.admin.delete_task(world.admin, "b1", "T1")
            await world.report(agent, claimed, status="completed", progress=100)
        after = page["next"]
        if after is None:
            break
    assert seen == ["T0", "T1", "T2", "T3", "T4", "T5", "T6", "late"]
    assert leases[claimed] is not None and leases[claimed]["agent_id"] == "a1"

    todo = await world.coordinator.admin.list_tasks(world.admin, "b1", "todo", limit=2)
    assert [t["id"] for t in todo["tasks"]] == ["T2", "T3"]
    rest = await world.coordinator.admin.list_tasks(
        world.admin, "b1", "todo", limit=1000, after=todo["next"]
    )
    assert [t["id"] for t in rest["tasks"]] == ["T4", "T5", "T6", "late"]
    assert rest["next"] is None
    whole = await world.coordinator.admin.list_tasks(world.admin, "b1")
    assert len(whole["tasks"]) == 7 and whole["next"] is None


@pytest.mark.parametrize(
    ("limit", "after"),
    [(0, None), (1001, None), (True, None), (5, "not-a-cursor"), (5, ""), (5, "x" * 600)]
    + [(5, base64.urlsafe_b64encode(place).decode()) for place in (
        b"2026-01-01T00:00:00+00:00", b"2026-01-01T00:00:00|T1", b"yesterday|T1",
        b"2026-01-01T00:00:00+00:00|bad id!", b"\xff\xfe|T1",
    )],
)  # fmt: skip
async def test_a_page_asked_for_wrongly_is_invalid_input(
    world: World, limit: Any, after: str | None
) -> None:
    await world.add_task("T1")
    with pytest.raises(InvalidInput) as refused:
        await world.coordinator.admin.list_tasks(world.admin, "b1", limit=limit, after=after)
    assert refused.value.details["field"] == ("after" if after is not None else "limit")
