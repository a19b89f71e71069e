"""Contract: boards, agents and tasks (create, read, update, delete, claim order)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from contract_records import BOARD, T0, agent, at, board, full_task, seed, task

from tenure.core.errors import Conflict, NotFound
from tenure.core.model import Priority, TaskStatus
from tenure.store.base import ClaimFilter


async def test_a_board_round_trips_and_unknown_ids_are_none(store: Any) -> None:
    first = board(project_root="/srv/p", enrolment_key_hash="ek", viewer_token_hash="vt")
    await store.run(seed(first, board("b2")))
    assert await store.read(lambda tx: tx.get_board(BOARD)) == first
    assert await store.read(lambda tx: tx.get_board("nope")) is None
    assert [b.id for b in await store.read(lambda tx: tx.list_boards())] == [BOARD, "b2"]


async def test_a_duplicate_board_is_a_conflict(store: Any) -> None:
    await store.run(seed(board()))
    with pytest.raises(Conflict):
        await store.run(seed(board(name="again")))
    assert (await store.read(lambda tx: tx.get_board(BOARD))).name == f"Board {BOARD}"


async def test_a_board_is_found_by_enrolment_key_or_viewer_token_hash(store: Any) -> None:
    await store.run(seed(board(enrolment_key_hash="ek", viewer_token_hash="vt"), board("b2")))
    assert (await store.read(lambda tx: tx.board_by_key_hash("ek"))).id == BOARD
    assert (await store.read(lambda tx: tx.board_by_key_hash("vt"))).id == BOARD
    assert await store.read(lambda tx: tx.board_by_key_hash("other")) is None


async def test_update_board_writes_every_field(store: Any) -> None:
    await store.run(seed(board()))
    changed = board(
        name="Renamed", project_root="/p", enrolment_key_hash="k2", viewer_token_hash="v2"
    )
    await store.run(lambda tx: tx.update_board(changed))
    assert await store.read(lambda tx: tx.get_board(BOARD)) == changed


async def test_an_agent_round_trips_with_every_field(store: Any) -> None:
    full = agent(
        role="builder",
        skills=("python", "go"),
        worktree="/work/a1",
        revoked=True,
        open_sessions=3,
        last_seen_at=at(12.345678),
    )
    await store.run(seed(board(), full))
    assert await store.read(lambda tx: tx.get_agent(BOARD, "a1")) == full
    assert await store.read(lambda tx: tx.agent_by_token_hash(full.token_hash)) == full
    assert await store.read(lambda tx: tx.get_agent(BOARD, "ghost")) is None
    assert await store.read(lambda tx: tx.get_agent("b2", "a1")) is None
    assert await store.read(lambda tx: tx.agent_by_token_hash("nope")) is None


async def test_duplicate_agent_id_or_token_hash_is_a_conflict(store: Any) -> None:
    await store.run(seed(board(), agent("a1")))
    with pytest.raises(Conflict):
        await store.run(seed(agent("a1", token_hash="different")))
    with pytest.raises(Conflict):
        await store.run(seed(agent("a2", token_hash="hash-b1-a1")))
    assert [a.id for a in await store.read(lambda tx: tx.list_agents(BOARD))] == ["a1"]


async def test_agents_are_listed_per_board_updated_and_deleted(store: Any) -> None:
    await store.run(seed(board(), board("b2"), agent("a2"), agent("a1"), agent("a1", "b2")))
    assert [a.id for a in await store.read(lambda tx: tx.list_agents(BOARD))] == ["a1", "a2"]
    await store.run(lambda tx: tx.open_session(BOARD, "a1", 7))
    await store.run(lambda tx: tx.mark_seen(BOARD, "a1", at(5)))
    # Every field but the session count and the last call, which statements of
    # their own move: an agent written back from an earlier read never undoes them.
    edited = agent("a1", name="Renamed", role="r", open_sessions=5, last_seen_at=at(1))
    await store.run(lambda tx: tx.update_agent(edited))
    stored = await store.read(lambda tx: tx.get_agent(BOARD, "a1"))
    assert stored == replace(edited, open_sessions=1, last_seen_at=at(5))
    assert await store.run(lambda tx: tx.delete_agent(BOARD, "a1")) is True
    assert await store.run(lambda tx: tx.delete_agent(BOARD, "a1")) is False
    assert await store.read(lambda tx: tx.get_agent("b2", "a1")) is not None


async def test_updating_a_missing_record_is_not_found(store: Any) -> None:
    await store.run(seed(board()))
    with pytest.raises(NotFound):
        await store.run(lambda tx: tx.update_agent(agent("ghost")))
    with pytest.raises(NotFound):
        await store.run(lambda tx: tx.update_task(task("ghost")))
    with pytest.raises(NotFound):
        await store.run(lambda tx: tx.update_board(board("ghost")))


async def test_a_task_round_trips_with_every_field(store: Any) -> None:
    full = full_task()
    await store.run(seed(board(), full))
    assert await store.read(lambda tx: tx.get_task(BOARD, "t1")) == full
    assert await store.run(lambda tx: tx.get_task(BOARD, "t1", for_update=True)) == full
    assert await store.read(lambda tx: tx.get_task(BOARD, "nope")) is None
    assert await store.read(lambda tx: tx.get_task("b2", "t1")) is None


async def test_a_duplicate_task_is_a_conflict_and_ids_are_per_board(store: Any) -> None:
    await store.run(seed(board(), board("b2"), task("t1")))
    with pytest.raises(Conflict):
        await store.run(seed(task("t1", title="again")))
    await store.run(seed(task("t1", "b2")))
    assert (await store.read(lambda tx: tx.get_task(BOARD, "t1"))).title == "Task t1"


async def test_update_task_writes_every_field_and_delete_removes_it(store: Any) -> None:
    await store.run(seed(board(), task("t1")))
    await store.run(lambda tx: tx.update_task(full_task("t1")))
    assert await store.read(lambda tx: tx.get_task(BOARD, "t1")) == full_task("t1")
    cleared = task("t1", updated_at=at(3))
    await store.run(lambda tx: tx.update_task(cleared))
    assert await store.read(lambda tx: tx.get_task(BOARD, "t1")) == cleared
    assert await store.run(lambda tx: tx.delete_task(BOARD, "t1")) is True
    assert await store.run(lambda tx: tx.delete_task(BOARD, "t1")) is False
    assert await store.read(lambda tx: tx.get_task(BOARD, "t1")) is None


async def test_tasks_are_listed_oldest_first_by_status_with_a_limit(store: Any) -> None:
    await store.run(
        seed(
            board(),
            board("b2"),
            task("t3", created_at=at(3)),
            task("t1", created_at=at(1), status=TaskStatus.DONE),
            task("t2", created_at=at(2)),
            task("t4", created_at=at(4)),
            task("t0", "b2"),
        )
    )
    listed = await store.read(lambda tx: tx.list_tasks(BOARD))
    assert [t.id for t in listed] == ["t1", "t2", "t3", "t4"]
    todo = await store.read(lambda tx: tx.list_tasks(BOARD, TaskStatus.TODO))
    assert [t.id for t in todo] == ["t2", "t3", "t4"]
    assert [t.id for t in await store.read(lambda tx: tx.list_tasks(BOARD, None, 2))] == [
        "t1",
        "t2",
    ]
    assert [t.id for t in await store.read(lambda tx: tx.list_tasks("b2"))] == ["t0"]


async def test_tasks_are_listed_page_by_page_after_a_task_in_listing_order(store: Any) -> None:
    # Tasks imported together share their creation moment: a page must end
    # and the next begin between two of them without losing or repeating one.
    await store.run(
        seed(
            board(),
            task("t5", created_at=at(1)),
            task("t2", created_at=at(1), status=TaskStatus.DONE),
            task("t9", created_at=at(1)),
            task("t1", created_at=at(2)),
            task("t0", created_at=at(0), status=TaskStatus.DONE),
        )
    )

    async def page(status: TaskStatus | None, after: tuple[Any, str] | None) -> list[str]:
        listed = await store.read(lambda tx: tx.list_tasks(BOARD, status, 2, after=after))
        return [t.id for t in listed]

    assert await page(None, None) == ["t0", "t2"]
    assert await page(None, (at(1), "t2")) == ["t5", "t9"]
    assert await page(None, (at(1), "t9")) == ["t1"]
    assert await page(None, (at(2), "t1")) == []
    assert await page(TaskStatus.TODO, (at(1), "t2")) == ["t5", "t9"]
    assert await page(TaskStatus.DONE, (at(0), "t0")) == ["t2"]
    # After a task since deleted (or never there): the place it would hold.
    assert await page(None, (at(1), "t3")) == ["t5", "t9"]


async def test_the_tasks_done_last_come_newest_first_and_tasks_are_counted_by_status(
    store: Any,
) -> None:
    done = TaskStatus.DONE
    await store.run(
        seed(
            board(),
            board("b2"),
            # created in one order, completed in another; t4 and t5 together
            task("t1", created_at=at(1), status=done, completed_at=at(30)),
            task("t2", created_at=at(2), status=done, completed_at=at(10)),
            task("t3", created_at=at(3), status=done, completed_at=at(20)),
            task("t4", created_at=at(4), status=done, completed_at=at(40)),
            task("t5", created_at=at(5), status=done, completed_at=at(40)),
            task("t6", created_at=at(6)),
            task("t7", created_at=at(7), status=TaskStatus.BLOCKED),
            task("t0", "b2", status=done, completed_at=at(99)),
        )
    )
    newest = await store.read(lambda tx: tx.recently_done(BOARD, 3))
    assert [t.id for t in newest] == ["t5", "t4", "t1"]
    every = await store.read(lambda tx: tx.recently_done(BOARD, 100))
    assert [t.id for t in every] == ["t5", "t4", "t1", "t3", "t2"]
    assert await store.read(lambda tx: tx.recently_done("b3", 5)) == []
    counts = await store.read(lambda tx: tx.task_counts(BOARD))
    assert counts == {done: 5, TaskStatus.TODO: 1, TaskStatus.BLOCKED: 1}
    assert await store.read(lambda tx: tx.task_counts("b3")) == {}


async def test_claim_candidates_come_recovered_first_then_by_priority_then_oldest(
    store: Any,
) -> None:
    handoff = full_task().handoff
    await store.run(
        seed(
            board(),
            board("b2"),
            task("low-old", priority=Priority.LOW, created_at=at(1)),
            task("med-new", priority=Priority.MEDIUM, created_at=at(9)),
            task("med-old", priority=Priority.MEDIUM, created_at=at(2)),
            task("med-old-b", priority=Priority.MEDIUM, created_at=at(2)),
            task("high", priority=Priority.HIGH, created_at=at(8)),
            task("urgent", priority=Priority.URGENT, created_at=at(7)),
            task(
                "recovered-low",
                priority=Priority.LOW,
                created_at=at(20),
                recovery_count=1,
                handoff=handoff,
            ),
            # A recovery count without a handoff (e.g. a requeue) is not "recovered".
            task("count-only", priority=Priority.LOW, created_at=at(0), recovery_count=2),
            task("busy", priority=Priority.URGENT, status=TaskStatus.IN_PROGRESS),
            task("done", priority=Priority.URGENT, status=TaskStatus.DONE),
            task("blocked", priority=Priority.URGENT, status=TaskStatus.BLOCKED),
            task("other-board", "b2", priority=Priority.URGENT),
        )
    )
    order = await store.run(lambda tx: [t.id for t in tx.claim_candidates(ClaimFilter(BOARD))])
    assert order == [
        "recovered-low",
        "urgent",
        "high",
        "med-old",
        "med-old-b",
        "med-new",
        "count-only",
        "low-old",
    ]
    two = await store.run(lambda tx: tx.claim_candidates(ClaimFilter(BOARD, limit=2)))
    assert [t.id for t in two] == ["recovered-low", "urgent"]
    assert two[0] == await store.read(lambda tx: tx.get_task(BOARD, "recovered-low"))


async def test_task_statuses_names_only_tasks_that_exist_on_the_board(store: Any) -> None:
    await store.run(
        seed(board(), board("b2"), task("t1"), task("t2", status=TaskStatus.DONE), task("t3", "b2"))
    )
    statuses = await store.read(lambda tx: tx.task_statuses(BOARD, ["t1", "t2", "t3", "nope"]))
    assert statuses == {"t1": TaskStatus.TODO, "t2": TaskStatus.DONE}
    assert await store.read(lambda tx: tx.task_statuses(BOARD, [])) == {}


async def test_meta_is_set_read_and_overwritten(store: Any) -> None:
    assert await store.read(lambda tx: tx.get_meta("greeting")) is None
    await store.run(lambda tx: tx.set_meta("greeting", "hello"))
    await store.run(lambda tx: tx.set_meta("greeting", "hello again"))
    assert await store.read(lambda tx: tx.get_meta("greeting")) == "hello again"


async def test_tx_now_is_the_store_clock_read_once(store: Any, clock: Any) -> None:
    assert await store.run(lambda tx: tx.now) == T0
    clock.advance(90)

    def twice(tx: Any) -> tuple[Any, Any]:
        first = tx.now
        clock.advance(5)
        return first, tx.now

    first, second = await store.run(twice)
    assert first == second == at(90)
    assert first.utcoffset() is not None and first.utcoffset().total_seconds() == 0


async def test_mark_seen_sets_last_seen_alone_and_ignores_a_deleted_agent(store: Any) -> None:
    await store.run(seed(board(), agent("a1", name="first")))
    await store.run(lambda tx: tx.mark_seen(BOARD, "a1", at(30)))
    got = await store.read(lambda tx: tx.get_agent(BOARD, "a1"))
    assert got == agent("a1", name="first", last_seen_at=at(30))
    await store.run(lambda tx: tx.delete_agent(BOARD, "a1"))
    await store.run(lambda tx: tx.mark_seen(BOARD, "a1", at(40)))  # nothing to mark
    assert await store.read(lambda tx: tx.get_agent(BOARD, "a1")) is None
