"""Contract: retention (pruning old events and comments) and importing history."""

from __future__ import annotations

from typing import Any

from contract_records import BOARD, at, board, lease, seed, task

from tenure.core.model import Comment, Event, EventType, TaskStatus


def _events(*specs: tuple[float, str | None]) -> list[Event]:
    """One event per (seconds after T0, task id or None)."""
    return [
        Event(EventType.LEASE_RENEWED, BOARD, at(when), task_id, "a1", 1, {"n": n})
        for n, (when, task_id) in enumerate(specs)
    ]


async def _remaining(store: Any) -> list[tuple[str | None, int]]:
    return [(e.task_id, e.data["n"]) for e in await store.events_after(0, board_id=BOARD)]


async def test_pruning_keeps_recent_rows_and_the_history_of_open_tasks(store: Any) -> None:
    await store.run(
        seed(
            board(),
            task("done", status=TaskStatus.DONE),
            task("open", status=TaskStatus.IN_PROGRESS),
            task("todo"),
            task("blocked", status=TaskStatus.BLOCKED),
            lease("open"),
        )
    )
    specs: list[tuple[float, str | None]] = [
        (10, "done"),  # 0: old, task done -> pruned
        (20, "open"),  # 1: old, live lease -> kept
        (30, "todo"),  # 2: old, task todo -> kept
        (40, "blocked"),  # 3: old, task blocked -> kept
        (50, "gone"),  # 4: old, task no longer exists -> pruned
        (60, None),  # 5: old, names no task -> pruned
        (500, "done"),  # 6: newer than the cutoff -> kept
    ]
    assert await store.run(lambda tx: tx.insert_events(_events(*specs))) == len(specs)
    for task_id, when in (("done", 10), ("open", 20), ("todo", 30), ("done", 600)):
        comment = Comment(BOARD, task_id, at(when), "tenure", f"{task_id}@{when}")
        await store.run(lambda tx, c=comment: tx.add_comment(c))

    assert await store.run(lambda tx: tx.prune_events(at(100), 1000)) == 3
    assert await _remaining(store) == [("open", 1), ("todo", 2), ("blocked", 3), ("done", 6)]
    assert await store.run(lambda tx: tx.prune_events(at(100), 1000)) == 0

    assert await store.run(lambda tx: tx.prune_comments(at(100), 1000)) == 1

    def bodies(tx: Any) -> list[str]:
        return [c.body for t in ("done", "open", "todo") for c in tx.comments(BOARD, t)]

    assert await store.read(bodies) == ["done@600", "open@20", "todo@30"]


async def test_pruning_goes_oldest_first_in_batches_of_the_limit(store: Any) -> None:
    await store.run(seed(board(), task("done", status=TaskStatus.DONE)))
    await store.run(lambda tx: tx.insert_events(_events(*[(s, "done") for s in (5, 1, 4, 2, 3)])))
    assert await store.run(lambda tx: tx.prune_events(at(10), 2)) == 2
    # The events at 1 s and 2 s went first (n = 1 and n = 3).
    assert [n for _, n in await _remaining(store)] == [0, 2, 4]
    assert await store.run(lambda tx: tx.prune_events(at(10), 2)) == 2
    assert await store.run(lambda tx: tx.prune_events(at(10), 2)) == 1
    assert await _remaining(store) == []


async def test_imported_events_and_comments_keep_their_times_and_order(store: Any) -> None:
    await store.run(seed(board(), task("t1")))
    before = await store.run(lambda tx: tx.append_event(_events((1, "t1"))[0]))
    imported = _events((300, "t1"), (100, None), (200, "t1"))
    assert await store.run(lambda tx: tx.insert_events(imported)) == 3
    assert await store.run(lambda tx: tx.insert_events([])) == 0
    log = await store.events_after(before)
    assert [(e.at, e.task_id, e.data) for e in log] == [
        (at(300), "t1", {"n": 0}),
        (at(100), None, {"n": 1}),
        (at(200), "t1", {"n": 2}),
    ]
    assert [e.id for e in log] == sorted(e.id for e in log)
    comments = [Comment(BOARD, "t1", at(50 - i), f"w{i}", f"body {i}") for i in range(3)]
    assert await store.run(lambda tx: tx.insert_comments(comments)) == 3
    stored = await store.read(lambda tx: tx.comments(BOARD, "t1"))
    assert [(c.at, c.author, c.body) for c in stored] == [
        (c.at, c.author, c.body) for c in comments
    ]
