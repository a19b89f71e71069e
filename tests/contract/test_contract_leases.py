"""Contract: leases (one live per task, conditional updates, due order, restart)
and units of work that roll back whole."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from contract_records import BOARD, agent, at, board, full_lease, full_task, lease, seed, task

from tenure.core.errors import Conflict, NotFound, StoreUnavailable
from tenure.core.model import Comment, EndReason, Event, EventType, LeaseFlag, TaskStatus
from tenure.store.base import ClaimFilter, Reads


async def _with_tasks(store: Any, *task_ids: str) -> None:
    await store.run(seed(board(), agent("a1"), agent("a2"), *(task(t) for t in task_ids)))


async def test_a_lease_round_trips_with_every_field(store: Any) -> None:
    await _with_tasks(store, "t1")
    full = full_lease()
    await store.run(seed(full))
    assert await store.read(lambda tx: tx.lease_history(BOARD, "t1")) == [full]
    assert await store.read(lambda tx: tx.last_lease_of(BOARD, "t1", "a1")) == full
    live = replace(full, epoch=5, ended_at=None, end_reason=None)
    await store.run(seed(live))
    assert await store.read(lambda tx: tx.live_lease(BOARD, "t1")) == live


async def test_a_second_live_lease_on_a_task_is_a_conflict(store: Any) -> None:
    await _with_tasks(store, "t1")
    await store.run(seed(lease("t1", "a1", epoch=1)))
    with pytest.raises(Conflict):
        await store.run(seed(lease("t1", "a2", epoch=2)))
    assert (await store.read(lambda tx: tx.live_lease(BOARD, "t1"))).agent_id == "a1"
    with pytest.raises(Conflict):
        await store.run(seed(lease("t1", "a1", epoch=1, ended_at=at(1))))


async def test_a_new_lease_may_follow_an_ended_one(store: Any) -> None:
    await _with_tasks(store, "t1")
    await store.run(seed(lease("t1", "a1", epoch=1, ended_at=at(5), end_reason=EndReason.RELEASED)))
    await store.run(seed(lease("t1", "a2", epoch=2)))
    history = await store.read(lambda tx: tx.lease_history(BOARD, "t1"))
    assert [(x.epoch, x.agent_id, x.live) for x in history] == [(1, "a1", False), (2, "a2", True)]


async def test_update_lease_with_the_expected_version_writes_every_field(store: Any) -> None:
    await _with_tasks(store, "t1")
    first = lease("t1", "a1", epoch=4)
    await store.run(seed(first))
    target = replace(full_lease(), ended_at=None, end_reason=None, version=2)
    assert await store.run(lambda tx: tx.update_lease(target, 1)) is True
    assert await store.read(lambda tx: tx.live_lease(BOARD, "t1")) == target


async def test_update_lease_with_a_wrong_version_changes_nothing(store: Any) -> None:
    await _with_tasks(store, "t1")
    first = lease("t1", "a1", epoch=1, version=3)
    await store.run(seed(first))
    for wrong in (2, 4):
        moved = replace(first, version=wrong + 1, progress=90, message="stale")
        assert await store.run(lambda tx, m=moved, w=wrong: tx.update_lease(m, w)) is False
    assert await store.read(lambda tx: tx.live_lease(BOARD, "t1")) == first
    # Another epoch of the same task is another lease: no match either.
    other_epoch = replace(first, epoch=2, version=4)
    assert await store.run(lambda tx: tx.update_lease(other_epoch, 3)) is False
    assert await store.read(lambda tx: tx.lease_history(BOARD, "t1")) == [first]


async def test_ending_a_lease_frees_the_task_for_a_new_live_lease(store: Any) -> None:
    await _with_tasks(store, "t1")
    first = lease("t1", "a1", epoch=1)
    await store.run(seed(first))
    ended = replace(first, version=2, ended_at=at(10), end_reason=EndReason.COMPLETED)
    assert await store.run(lambda tx: tx.update_lease(ended, 1)) is True
    assert await store.read(lambda tx: tx.live_lease(BOARD, "t1")) is None
    await store.run(seed(lease("t1", "a2", epoch=2)))


async def test_due_leases_are_live_past_recover_after_oldest_first_and_limited(
    store: Any,
) -> None:
    await _with_tasks(store, "t1", "t2", "t3", "t4", "t5", "t6")
    await store.run(
        seed(
            lease("t1", recover_after=at(50)),
            lease("t2", recover_after=at(10)),
            lease("t3", recover_after=at(30)),
            lease("t4", recover_after=at(100)),  # not due yet
            lease("t5", recover_after=at(5), ended_at=at(6), end_reason=EndReason.COMPLETED),
            lease("t6", recover_after=at(60)),  # due exactly at now
        )
    )
    due = await store.read(lambda tx: tx.due_leases(at(60), 10))
    assert [x.task_id for x in due] == ["t2", "t3", "t1", "t6"]
    assert [x.task_id for x in await store.read(lambda tx: tx.due_leases(at(60), 2))] == [
        "t2",
        "t3",
    ]
    assert await store.read(lambda tx: tx.due_leases(at(4), 10)) == []
    assert due[0] == await store.read(lambda tx: tx.live_lease(BOARD, "t2"))


async def test_live_leases_of_an_agent_and_of_a_board(store: Any) -> None:
    await store.run(seed(board(), board("b2"), agent("a1"), agent("a2")))
    await store.run(seed(task("t1"), task("t2"), task("t3"), task("t4"), task("t1", "b2")))
    await store.run(
        seed(
            lease("t2", "a1", assigned_at=at(2)),
            lease("t1", "a1", assigned_at=at(1)),
            lease("t3", "a1", ended_at=at(3), end_reason=EndReason.RELEASED),
            lease("t4", "a2"),
            lease("t1", "a1", board_id="b2"),
        )
    )
    mine = await store.read(lambda tx: tx.live_leases_of_agent(BOARD, "a1"))
    assert [x.task_id for x in mine] == ["t1", "t2"]
    assert await store.read(lambda tx: tx.live_leases_of_agent(BOARD, "ghost")) == []
    board_live = await store.read(lambda tx: tx.live_leases(BOARD))
    assert sorted(x.task_id for x in board_live) == ["t1", "t2", "t4"]
    everywhere = await store.read(lambda tx: tx.live_leases())
    assert sorted((x.board_id, x.task_id) for x in everywhere) == [
        ("b1", "t1"),
        ("b1", "t2"),
        ("b1", "t4"),
        ("b2", "t1"),
    ]


async def test_a_batch_of_tasks_and_their_live_leases_is_read_at_once(store: Any) -> None:
    """`lock_tasks` / `live_leases_of_tasks` (the monitor's batch reads): keyed by
    (board, task), across boards, leaving out what does not exist or is not live."""
    await store.run(seed(board(), board("b2"), agent("a1"), agent("a1", "b2")))
    await store.run(seed(task("t1"), task("t2"), task("t3"), task("t1", "b2")))
    await store.run(
        seed(
            lease("t1", "a1"),
            lease("t2", "a1", ended_at=at(3), end_reason=EndReason.RELEASED),
            lease("t1", "a1", board_id="b2"),
        )
    )
    keys = [("b1", "t1"), ("b1", "t2"), ("b1", "t3"), ("b1", "ghost"), ("b2", "t1")]
    tasks = await store.run(lambda tx: tx.lock_tasks(keys))
    assert tasks == {
        ("b1", "t1"): task("t1"),
        ("b1", "t2"): task("t2"),
        ("b1", "t3"): task("t3"),
        ("b2", "t1"): task("t1", "b2"),
    }
    live = await store.run(lambda tx: tx.live_leases_of_tasks(keys))
    assert live == {("b1", "t1"): lease("t1", "a1"), ("b2", "t1"): lease("t1", "a1", board_id="b2")}
    assert await store.run(lambda tx: (tx.lock_tasks([]), tx.live_leases_of_tasks([]))) == ({}, {})


async def test_updates_written_together_land_with_the_commit_or_not_at_all(store: Any) -> None:
    """`write_together` (the monitor's batches): updates keep their conditions,
    a read sees them, and one lease that moved on rolls the whole unit back."""
    await _with_tasks(store, "t1", "t2")
    await store.run(seed(lease("t1", "a1"), lease("t2", "a1")))
    one, two = lease("t1", "a1"), lease("t2", "a1")
    busy = replace(task("t1"), status=TaskStatus.IN_PROGRESS, assignee="a1")

    def together(tx: Any) -> Any:
        tx.write_together()
        tx.update_task(busy)
        assert tx.update_lease(replace(one, version=2, progress=40), 1) is True
        seen = tx.live_lease(BOARD, "t1")  # a read after them sees them
        assert tx.update_lease(replace(two, version=2), 1) is True
        return seen

    assert (await store.run(together)).version == 2
    assert (await store.read(lambda tx: tx.get_task(BOARD, "t1"))).assignee == "a1"
    assert (await store.read(lambda tx: tx.live_lease(BOARD, "t2"))).version == 2

    def one_stale(tx: Any) -> None:
        tx.write_together()
        tx.update_task(replace(busy, assignee="a2"))
        tx.update_lease(replace(one, version=3, progress=90), 2)
        if not tx.update_lease(replace(two, version=3), 1):  # version 2 is stored
            raise Conflict("SQLite answers at once")

    with pytest.raises(Conflict):
        await store.run(one_stale)

    def ghost(tx: Any) -> None:
        tx.write_together()
        tx.update_lease(replace(one, version=3, progress=90), 2)
        tx.update_task(task("ghost"))

    with pytest.raises(NotFound):
        await store.run(ghost)
    assert (await store.read(lambda tx: tx.get_task(BOARD, "t1"))).assignee == "a1"
    assert (await store.read(lambda tx: tx.live_lease(BOARD, "t1"))).version == 2


async def test_last_lease_of_is_the_agents_latest_live_or_ended(store: Any) -> None:
    await _with_tasks(store, "t1")
    await store.run(
        seed(
            lease("t1", "a1", epoch=1, ended_at=at(1), end_reason=EndReason.LEASE_EXPIRED),
            lease("t1", "a2", epoch=2, ended_at=at(2), end_reason=EndReason.RELEASED),
            lease("t1", "a1", epoch=3, ended_at=at(3), end_reason=EndReason.COMPLETED),
            lease("t1", "a2", epoch=4),
        )
    )
    mine = await store.read(lambda tx: tx.last_lease_of(BOARD, "t1", "a1"))
    assert (mine.epoch, mine.end_reason) == (3, EndReason.COMPLETED)
    assert (await store.read(lambda tx: tx.last_lease_of(BOARD, "t1", "a2"))).epoch == 4
    assert await store.read(lambda tx: tx.last_lease_of(BOARD, "t1", "a3")) is None
    assert await store.read(lambda tx: tx.last_lease_of(BOARD, "t9", "a1")) is None


async def test_ended_leases_of_an_agent_since_a_moment(store: Any) -> None:
    await _with_tasks(store, "t1", "t2", "t3")
    await store.run(
        seed(
            lease("t1", "a1", ended_at=at(10), end_reason=EndReason.LEASE_EXPIRED),
            lease("t2", "a1", ended_at=at(20), end_reason=EndReason.UNASSIGNED),
            lease("t3", "a1"),
        )
    )
    _, lost = await store.read(lambda tx: tx.leases_of_agent(BOARD, "a1", at(10)))
    assert [x.task_id for x in lost] == ["t1", "t2"]
    _, later = await store.read(lambda tx: tx.leases_of_agent(BOARD, "a1", at(15)))
    assert [x.task_id for x in later] == ["t2"]
    assert await store.read(lambda tx: tx.leases_of_agent(BOARD, "a2", at(0))) == ([], [])


async def test_leases_of_an_agent_are_its_live_ones_and_those_ended_since(store: Any) -> None:
    """`leases_of_agent`: its live half is what `live_leases_of_agent` answers,
    its ended half starts at `ended_since`; other agents' leases are left out."""
    await _with_tasks(store, "t1", "t2", "t3", "t4")
    await store.run(
        seed(
            lease("t1", "a1", ended_at=at(10), end_reason=EndReason.LEASE_EXPIRED),
            lease("t2", "a1", ended_at=at(20), end_reason=EndReason.UNASSIGNED),
            lease("t3", "a1", assigned_at=at(30)),
            lease("t4", "a1", assigned_at=at(25)),
            lease("t1", "a2", epoch=2),
        )
    )
    live_alone = await store.read(lambda tx: tx.live_leases_of_agent(BOARD, "a1"))
    for since, ended_ids in ((at(0), ["t1", "t2"]), (at(15), ["t2"]), (at(21), [])):
        live, ended = await store.read(
            lambda tx, since=since: tx.leases_of_agent(BOARD, "a1", since)
        )
        assert live == live_alone and [x.task_id for x in ended] == ended_ids
    live, ended = await store.read(lambda tx: tx.leases_of_agent(BOARD, "a1", at(15)))
    assert [x.task_id for x in live] == ["t4", "t3"] and [x.task_id for x in ended] == ["t2"]


async def test_a_unit_of_work_that_raises_leaves_nothing_behind(store: Any) -> None:
    await _with_tasks(store, "t1")

    def half_then_fail(tx: Any) -> None:
        tx.insert_task(task("t2"))
        tx.insert_lease(lease("t1", "a1"))
        tx.update_task(replace(task("t1"), status=TaskStatus.IN_PROGRESS, assignee="a1"))
        tx.append_event(Event(EventType.LEASE_CREATED, BOARD, tx.now, "t1", "a1", 1))
        tx.add_comment(Comment(BOARD, "t1", tx.now, "tenure", "claimed"))
        tx.bump(BOARD, "renewals")
        tx.enqueue_hook("lease.created", BOARD, {"task_id": "t1"}, "k1")
        tx.set_meta("half", "written")
        raise RuntimeError("the unit of work fails here")

    with pytest.raises(RuntimeError, match="fails here"):
        await store.run(half_then_fail)
    await _assert_untouched(store)


async def test_a_conflict_midway_rolls_back_the_earlier_writes(store: Any) -> None:
    await _with_tasks(store, "t1")

    def then_duplicate(tx: Any) -> None:
        tx.insert_task(task("t2"))
        tx.insert_lease(lease("t1", "a1"))
        tx.append_event(Event(EventType.LEASE_CREATED, BOARD, tx.now, "t1", "a1", 1))
        tx.set_meta("half", "written")
        tx.insert_task(task("t1"))

    with pytest.raises(Conflict):
        await store.run(then_duplicate)
    await _assert_untouched(store)


async def _assert_untouched(store: Any) -> None:
    def snapshot(tx: Any) -> dict[str, Any]:
        return {
            "tasks": [(t.id, t.status) for t in tx.list_tasks(BOARD)],
            "leases": tx.lease_history(BOARD, "t1"),
            "comments": tx.comments(BOARD, "t1"),
            "counters": tx.counters(BOARD),
            "hooks": tx.due_hooks(at(10**6), 10),
            "meta": tx.get_meta("half"),
        }

    assert await store.run(snapshot) == {
        "tasks": [("t1", TaskStatus.TODO)],
        "leases": [],
        "comments": [],
        "counters": {},
        "hooks": [],
        "meta": None,
    }
    assert await store.events_after(0) == []


async def test_after_a_restart_every_record_is_exactly_as_it_was(store: Any, reopen: Any) -> None:
    full_agent = agent(role="r", skills=("x",), worktree="/w", open_sessions=2, last_seen_at=at(3))
    await store.run(seed(board(project_root="/p", enrolment_key_hash="ek"), full_agent))
    await store.run(seed(full_task("t1"), full_task("t2"), full_lease("t1")))
    live = replace(
        full_lease("t2"),
        epoch=5,
        ended_at=None,
        end_reason=None,
        flags=frozenset({LeaseFlag.STALLED}),
    )
    await store.run(seed(live))

    def everything(tx: Any) -> Any:
        return (
            tx.get_board(BOARD),
            tx.get_agent(BOARD, "a1"),
            tx.list_tasks(BOARD),
            tx.lease_history(BOARD, "t1"),
            tx.lease_history(BOARD, "t2"),
            tx.live_leases(),
        )

    before = await store.read(everything)
    await store.close()
    again = await reopen()
    after = await again.read(everything)
    assert after == before
    assert after[3] == [full_lease("t1")]
    assert after[4] == [live]
    assert after[2] == [full_task("t1"), full_task("t2")]


async def test_a_closed_store_is_unavailable(store: Any) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.run(lambda tx: tx.list_boards())


async def test_a_unit_that_names_its_agent_reads_the_same_agent_and_leases(store: Any) -> None:
    """`run(reads=Reads(board, agent))`: the agent and its leases (PostgreSQL reads them with
    BEGIN) are what plain reads give, once; after a write of a lease or of the
    agent, or for another agent or moment, the store is asked again."""
    seen = at(15)
    await store.run(
        seed(
            board(),
            replace(agent("a1"), last_seen_at=seen),
            agent("a2"),
            *(task(t) for t in ("t1", "t2", "t3")),
            lease("t1", "a1", ended_at=at(10), end_reason=EndReason.LEASE_EXPIRED),
            lease("t2", "a1", ended_at=at(20), end_reason=EndReason.UNASSIGNED),
            lease("t3", "a1", assigned_at=at(30)),
        )
    )

    def reads(tx: Any) -> list[Any]:
        me = tx.get_agent(BOARD, "a1")
        held = tx.leases_of_agent(BOARD, "a1", me.last_seen_at)
        again = (tx.get_agent(BOARD, "a1"), tx.leases_of_agent(BOARD, "a1", me.last_seen_at))
        other = (tx.get_agent(BOARD, "a2"), tx.leases_of_agent(BOARD, "a2", at(0)))
        earlier = tx.leases_of_agent(BOARD, "a1", at(0))
        return [me, held, again, other, earlier]

    plain = await store.run(reads)
    hinted = await store.run(reads, reads=Reads(BOARD, "a1"))
    assert hinted == plain
    me, held, again, _, earlier = hinted
    assert me.last_seen_at == seen and again == (me, held)
    assert ([x.task_id for x in held[0]], [x.task_id for x in held[1]]) == (["t3"], ["t2"])
    assert [x.task_id for x in earlier[1]] == ["t1", "t2"]

    def write_then_read(tx: Any) -> tuple[Any, Any]:
        me = tx.get_agent(BOARD, "a1")
        live = tx.live_lease(BOARD, "t3")
        tx.update_lease(replace(live, version=live.version + 1, progress=40), live.version)
        tx.update_agent(replace(me, worktree="/elsewhere"))
        return tx.get_agent(BOARD, "a1"), tx.leases_of_agent(BOARD, "a1", me.last_seen_at)

    after, (live, _) = await store.run(write_then_read, reads=Reads(BOARD, "a1"))
    assert after.worktree == "/elsewhere" and [x.progress for x in live] == [40]
    nobody = await store.run(lambda tx: tx.get_agent(BOARD, "ghost"), reads=Reads(BOARD, "ghost"))
    assert nobody is None


async def test_a_unit_that_names_its_task_or_claim_reads_what_plain_reads_give(
    store: Any,
) -> None:
    """`Reads(task_id=...)` and `Reads(claim_below=...)` (PostgreSQL reads the
    task, or the first claim candidate, with BEGIN): the unit's reads answer
    as plain reads do, once; after a write of a task they read again; and an
    agent holding too many leases for the claim read still finds the task."""
    await store.run(
        seed(
            board(),
            agent("a1"),
            agent("a2"),
            task("t1", created_at=at(1)),
            task("t2", created_at=at(2)),
            task("t3", status=TaskStatus.IN_PROGRESS),
            lease("t3", "a2"),
        )
    )

    def acts(tx: Any) -> list[Any]:
        first = tx.get_task(BOARD, "t1", for_update=True)
        again = tx.get_task(BOARD, "t1", for_update=True)
        ghost = tx.get_task(BOARD, "ghost", for_update=True)
        tx.update_task(replace(first, title="renamed"))
        return [first, again, ghost, tx.get_task(BOARD, "t1")]

    plain = await store.run(acts)
    for target in ("t1", "ghost"):
        await store.run(lambda tx: tx.update_task(replace(plain[0], title="Task t1")))
        hinted = await store.run(acts, reads=Reads(BOARD, "a1", task_id=target))
        assert hinted == plain
    assert plain[2] is None and plain[3].title == "renamed"

    def claims(tx: Any) -> list[list[str]]:
        one = ClaimFilter(BOARD, limit=1)
        first = [t.id for t in tx.claim_candidates(one)]
        again = [t.id for t in tx.claim_candidates(one)]
        page = [t.id for t in tx.claim_candidates(ClaimFilter(BOARD, limit=8))]
        taken = tx.get_task(BOARD, first[0], for_update=True)
        tx.update_task(replace(taken, status=TaskStatus.IN_PROGRESS))
        after = [t.id for t in tx.claim_candidates(one)]
        tx.update_task(taken)  # back to todo: the next run claims the same
        return [first, again, page, after]

    plain_claims = await store.run(claims)
    assert plain_claims == [["t1"], ["t1"], ["t1", "t2"], ["t2"]]
    for agent_id, below in (("a1", 1), ("a2", 1), ("a2", 2)):
        hinted = await store.run(claims, reads=Reads(BOARD, agent_id, claim_below=below))
        assert hinted == plain_claims, (agent_id, below)

    def writes_first(tx: Any) -> tuple[str, list[str]]:
        # A task written before the unit reads it: BEGIN's reads are stale.
        t1 = task("t1", created_at=at(1))
        tx.update_task(replace(t1, status=TaskStatus.IN_PROGRESS, title="written"))
        got = tx.get_task(BOARD, "t1", for_update=True)
        waiting = [t.id for t in tx.claim_candidates(ClaimFilter(BOARD, limit=1))]
        tx.update_task(t1)
        return got.title, waiting

    for reads in (Reads(BOARD, "a1", task_id="t1"), Reads(BOARD, "a1", claim_below=1)):
        assert await store.run(writes_first, reads=reads) == ("written", ["t2"])


async def test_a_large_batch_written_together_lands_whole_or_not_at_all(store: Any) -> None:
    """A monitor-sized batch (PostgreSQL sends one of 40 statements or more in
    pipeline mode): its writes and events land with the commit, in order; one
    stale lease among them rolls every one back."""
    ids = [f"t{i:02d}" for i in range(30)]
    await _with_tasks(store, *ids)
    await store.run(seed(*(lease(t, "a1") for t in ids)))

    def batch(version: int, stale: str | None = None) -> Any:
        def unit(tx: Any) -> None:
            tx.write_together()
            for t in ids:
                expected = 1 if t == stale else version
                tx.update_task(replace(task(t), status=TaskStatus.IN_PROGRESS, assignee="a1"))
                updated = replace(lease(t, "a1"), version=version + 1, progress=version)
                if not tx.update_lease(updated, expected):
                    raise Conflict("SQLite answers at once")
                tx.queue_event(Event(EventType.LEASE_RENEWED, BOARD, tx.now, t, "a1", 1))
                tx.bump(BOARD, "renewals")

        return unit

    await store.run(batch(1))
    with pytest.raises(Conflict):
        await store.run(batch(2, stale="t29"))  # t29 is at version 2, not 1
    stored = await store.read(lambda tx: [tx.live_lease(BOARD, t) for t in ids])
    assert {(x.version, x.progress) for x in stored} == {(2, 1)}
    events = await store.events_after(0, board_id=BOARD, limit=100)
    assert [e.task_id for e in events if e.type == "lease.renewed"] == ids
    assert (await store.read(lambda tx: tx.counters(BOARD)))["renewals"] == 30
