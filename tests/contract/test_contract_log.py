"""Contract: the event log (append, query, follow), comments, counters, the outbox."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from contract_records import BOARD, at, board, seed, task

from tenure.core.errors import Conflict
from tenure.core.model import Comment, Event, EventType


def _append(*events: Event) -> Any:
    def unit(tx: Any) -> list[int]:
        return [tx.append_event(event) for event in events]

    return unit


async def _listening(store: Any) -> None:
    """On PostgreSQL, have LISTEN in place before a test's commit, so what
    wakes a waiter is that commit's NOTIFY, not the listener's catch-up read
    as it connects (SQLite wakes its waiters without one)."""
    listen = getattr(store, "listen", None)
    if listen is not None:
        assert await listen(timeout=10)


async def test_events_get_growing_ids_and_read_back_in_order(store: Any) -> None:
    await store.run(seed(board()))
    first = Event(EventType.LEASE_CREATED, BOARD, at(1), "t1", "a1", 1, {"phase": 1, "n": [1, 2]})
    second = Event(EventType.LEASE_RENEWED, BOARD, at(2), "t1", "a1", 1, {"progress": 40})
    bare = Event(EventType.TASK_CREATED, BOARD, at(3))
    ids = await store.run(_append(first, second))
    (third,) = await store.run(_append(bare))
    assert ids[0] < ids[1] < third
    log = await store.events_after(0)
    assert [e.id for e in log] == [*ids, third]
    assert [(e.type, e.board_id, e.at, e.task_id, e.agent_id, e.epoch, e.data) for e in log] == [
        ("lease.created", BOARD, at(1), "t1", "a1", 1, {"phase": 1, "n": [1, 2]}),
        ("lease.renewed", BOARD, at(2), "t1", "a1", 1, {"progress": 40}),
        ("task.created", BOARD, at(3), None, None, None, {}),
    ]
    assert [e.id for e in await store.events_after(ids[0])] == [ids[1], third]
    assert [e.id for e in await store.events_after(0, limit=2)] == ids
    assert await store.events_after(third) == []


async def test_events_are_queried_by_board_task_agent_and_time(store: Any) -> None:
    await store.run(seed(board(), board("b2")))
    ids = await store.run(
        _append(
            Event(EventType.LEASE_CREATED, BOARD, at(1), "t1", "a1", 1),
            Event(EventType.LEASE_CREATED, BOARD, at(2), "t2", "a2", 1),
            Event(EventType.LEASE_RENEWED, BOARD, at(3), "t1", "a1", 1),
            Event(EventType.LEASE_CREATED, "b2", at(4), "t1", "a1", 1),
            Event(EventType.LEASE_RECOVERED, BOARD, at(5), "t2", "a2", 1),
        )
    )

    async def ids_of(**filters: Any) -> list[int]:
        return [e.id for e in await store.events_after(0, **filters)]

    assert await ids_of(board_id=BOARD) == [ids[0], ids[1], ids[2], ids[4]]
    assert await ids_of(board_id="b2") == [ids[3]]
    assert await ids_of(board_id=BOARD, task_id="t1") == [ids[0], ids[2]]
    assert await ids_of(task_id="t1") == [ids[0], ids[2], ids[3]]
    assert await ids_of(board_id=BOARD, agent_id="a2") == [ids[1], ids[4]]
    assert await ids_of(since=at(3)) == [ids[2], ids[3], ids[4]]
    assert await ids_of(board_id=BOARD, since=at(3), agent_id="a1") == [ids[2]]
    assert await ids_of(board_id="nope") == []


async def test_events_of_a_rolled_back_unit_never_appear(store: Any) -> None:
    await store.run(seed(board()))

    def fails(tx: Any) -> None:
        tx.append_event(Event(EventType.LEASE_CREATED, BOARD, tx.now))
        raise ValueError("no")

    with pytest.raises(ValueError):
        await store.run(fails)
    assert await store.events_after(0) == []


async def test_events_queued_by_one_unit_keep_their_order_and_data_and_wake_followers(
    store: Any, reopen: Any
) -> None:
    """Queued events go to the log with the unit's commit: in the order
    queued, every value as given (JSON that needs escaping too), and a
    follower of another instance is woken."""
    await store.run(seed(board()))
    (before,) = await store.run(_append(Event(EventType.TASK_CREATED, BOARD, at(0))))
    awkward = {"note": 'quote " backslash \\ brace } comma , \u00e9\u4e2d', "n": [1, None]}
    queued = [
        Event(EventType.LEASE_RELEASED, BOARD, at(1), "t1", "a1", 3, awkward),
        Event(EventType.TASK_UPDATED, BOARD, at(2)),
        Event(EventType.LEASE_CREATED, BOARD, at(3), "t2", "a2", 1, {"phase": 0}),
    ]

    def unit(tx: Any) -> None:
        for event in queued:
            tx.queue_event(event)

    other = await reopen()
    await _listening(store)
    waiter = asyncio.create_task(store.wait_for_events(before, timeout=30))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()
    await other.run(unit)
    await asyncio.wait_for(waiter, timeout=10)
    log = await store.events_after(before)
    assert [(e.type, e.at, e.task_id, e.agent_id, e.epoch, e.data) for e in log] == [
        (e.type, e.at, e.task_id, e.agent_id, e.epoch, e.data) for e in queued
    ]
    assert [e.id for e in log] == sorted(e.id for e in log)


async def test_wait_for_events_wakes_when_an_event_commits(store: Any) -> None:
    await store.run(seed(board()))
    (known,) = await store.run(_append(Event(EventType.TASK_CREATED, BOARD, at(0))))
    waiter = asyncio.create_task(store.wait_for_events(known, timeout=30))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()
    (new,) = await store.run(_append(Event(EventType.TASK_UPDATED, BOARD, at(1))))
    await asyncio.wait_for(waiter, timeout=10)
    assert [e.id for e in await store.events_after(known)] == [new]


async def test_wait_for_events_returns_at_once_when_events_exist(store: Any) -> None:
    await store.run(seed(board()))
    await store.run(_append(Event(EventType.TASK_CREATED, BOARD, at(0))))
    await asyncio.wait_for(store.wait_for_events(0, timeout=30), timeout=10)


async def test_wait_for_events_gives_up_after_its_timeout(store: Any) -> None:
    await asyncio.wait_for(store.wait_for_events(0, timeout=0.05), timeout=10)
    assert await store.events_after(0) == []


async def test_an_event_from_another_store_instance_wakes_a_follower(
    store: Any, reopen: Any
) -> None:
    await store.run(seed(board()))
    other = await reopen()
    await _listening(store)
    waiter = asyncio.create_task(store.wait_for_events(0, timeout=30))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()
    await other.run(_append(Event(EventType.TASK_CREATED, BOARD, at(0))))
    await asyncio.wait_for(waiter, timeout=10)
    assert len(await store.events_after(0)) == 1


async def test_comments_are_kept_per_task_in_order(store: Any) -> None:
    await store.run(seed(board(), task("t1"), task("t2")))

    def write(tx: Any) -> list[int]:
        return [
            tx.add_comment(Comment(BOARD, "t1", at(1), "tenure", "[tenure:recovered] first")),
            tx.add_comment(Comment(BOARD, "t2", at(2), "a1", "other task")),
            tx.add_comment(Comment(BOARD, "t1", at(3), "a2", "second\nline")),
        ]

    ids = await store.run(write)
    assert await store.read(lambda tx: tx.comments(BOARD, "t1")) == [
        Comment(BOARD, "t1", at(1), "tenure", "[tenure:recovered] first", id=ids[0]),
        Comment(BOARD, "t1", at(3), "a2", "second\nline", id=ids[2]),
    ]
    assert await store.read(lambda tx: tx.comments(BOARD, "t9")) == []


async def test_counters_add_up_per_board_and_in_total(store: Any) -> None:
    def bumps(tx: Any) -> None:
        tx.bump(BOARD, "revivals")
        tx.bump(BOARD, "revivals", 4)
        tx.bump(BOARD, "dead_letters")
        tx.bump("b2", "revivals", 2)

    await store.run(bumps)
    await store.run(lambda tx: tx.bump(BOARD, "revivals"))
    assert await store.read(lambda tx: tx.counters(BOARD)) == {"revivals": 6, "dead_letters": 1}
    assert await store.read(lambda tx: tx.counters("b2")) == {"revivals": 2}
    assert await store.read(lambda tx: tx.counters()) == {"revivals": 8, "dead_letters": 1}
    assert await store.read(lambda tx: tx.counters("none")) == {}


async def test_the_outbox_delivers_retries_and_marks(store: Any, clock: Any) -> None:
    payload = {"task_id": "t1", "epoch": 2, "nested": {"ok": True}}
    first = await store.run(lambda tx: tx.enqueue_hook("lease.recovered", BOARD, payload, "k1"))
    second = await store.run(lambda tx: tx.enqueue_hook("task.dead_lettered", BOARD, {}, "k2"))
    due = await store.run(lambda tx: tx.due_hooks(tx.now, 10))
    assert [row.id for row in due] == [first, second]
    row = due[0]
    assert (row.kind, row.board_id, row.payload, row.idempotency_key) == (
        "lease.recovered",
        BOARD,
        payload,
        "k1",
    )
    assert (row.attempts, row.next_attempt_at, row.created_at) == (0, at(0), at(0))
    assert (row.delivered_at, row.last_error) == (None, None)
    assert [r.id for r in await store.run(lambda tx: tx.due_hooks(tx.now, 1))] == [first]

    await store.run(
        lambda tx: tx.mark_hook(first, delivered=False, next_attempt_at=at(60), error="HTTP 500")
    )
    assert [r.id for r in await store.run(lambda tx: tx.due_hooks(tx.now, 10))] == [second]
    clock.advance(60)
    again = await store.run(lambda tx: tx.due_hooks(tx.now, 10))
    assert [r.id for r in again] == [second, first]  # by next attempt: first retries later
    retry = again[1]
    assert (retry.id, retry.attempts, retry.last_error, retry.next_attempt_at) == (
        first,
        1,
        "HTTP 500",
        at(60),
    )
    await store.run(lambda tx: tx.mark_hook(first, delivered=True))
    await store.run(lambda tx: tx.mark_hook(second, delivered=True))
    assert await store.run(lambda tx: tx.due_hooks(at(10**6), 10)) == []


async def test_an_idempotency_key_is_enqueued_once(store: Any) -> None:
    first = await store.run(lambda tx: tx.enqueue_hook("k", BOARD, {"n": 1}, "same"))
    again = await store.run(lambda tx: tx.enqueue_hook("k", BOARD, {"n": 2}, "same"))
    assert again == first
    (row,) = await store.run(lambda tx: tx.due_hooks(tx.now, 10))
    assert (row.id, row.payload) == (first, {"n": 1})


async def test_queued_events_commit_with_the_unit_of_work_and_vanish_with_it(store: Any) -> None:
    await store.run(seed(board()))
    queued = Event(EventType.LEASE_RENEWED, BOARD, at(1), "t1", "a1", 1, {"progress": 10})
    also = Event(EventType.LEASE_EXTENDED, BOARD, at(2), "t1", "a1", 1, {"reason": "x"})

    def queue_then_fail(tx: Any) -> None:
        tx.queue_event(queued)
        raise RuntimeError("the unit of work fails after queueing")

    with pytest.raises(RuntimeError):
        await store.run(queue_then_fail)
    assert await store.events_after(0) == []

    def queue_two(tx: Any) -> None:
        tx.queue_event(queued)
        tx.queue_event(also)

    await store.run(queue_two)
    log = await store.events_after(0)
    assert [(e.type, e.data) for e in log] == [
        ("lease.renewed", {"progress": 10}),
        ("lease.extended", {"reason": "x"}),
    ]


async def test_queued_comments_and_hooks_commit_with_the_unit_and_vanish_with_it(
    store: Any,
) -> None:
    """`queue_comment` / `queue_hook` (PostgreSQL sends them with the next round
    trip): kept exactly as `add_comment` / `enqueue_hook`, and only on commit."""
    await store.run(seed(board(), task("t1")))
    # Quotes, a percent sign and a placeholder-like text go through as written.
    note = Comment(BOARD, "t1", at(1), "tenure", "[tenure:recovered] 50% it's %s 'done'; --")

    def queue_then_fail(tx: Any) -> None:
        tx.queue_comment(note)
        tx.queue_hook("lease.recovered", BOARD, {"task_id": "t1"}, "k-queued")
        raise RuntimeError("the unit of work fails after queueing")

    with pytest.raises(RuntimeError):
        await store.run(queue_then_fail)
    assert await store.read(lambda tx: tx.comments(BOARD, "t1")) == []
    assert await store.run(lambda tx: tx.due_hooks(tx.now, 10)) == []

    def queue_twice(tx: Any) -> None:
        tx.queue_comment(note)
        tx.queue_hook("lease.recovered", BOARD, {"task_id": "t1"}, "k-queued")
        tx.queue_hook("lease.recovered", BOARD, {"task_id": "t1", "again": True}, "k-queued")

    await store.run(queue_twice)
    (kept,) = await store.read(lambda tx: tx.comments(BOARD, "t1"))
    assert (kept.at, kept.author, kept.body) == (at(1), "tenure", note.body)
    (row,) = await store.run(lambda tx: tx.due_hooks(tx.now, 10))
    assert (row.kind, row.payload, row.idempotency_key) == (
        "lease.recovered",
        {"task_id": "t1"},
        "k-queued",
    )


async def test_a_failed_statement_after_queued_writes_keeps_none_of_them(store: Any) -> None:
    """A queued write travels with a later statement; when that one fails the
    whole unit is refused and nothing of it is kept."""
    await store.run(seed(board(), task("t1")))

    def queue_then_conflict(tx: Any) -> None:
        tx.queue_comment(Comment(BOARD, "t1", at(1), "tenure", "lost with the unit"))
        tx.queue_event(Event(EventType.LEASE_RENEWED, BOARD, at(1), "t1", "a1", 1, {}))
        tx.bump(BOARD, "revivals")
        tx.insert_task(task("t1"))  # a duplicate: Conflict

    with pytest.raises(Conflict):
        await store.run(queue_then_conflict)
    assert await store.read(lambda tx: tx.comments(BOARD, "t1")) == []
    assert await store.events_after(0) == []
    assert await store.read(lambda tx: tx.counters(BOARD)) == {}
