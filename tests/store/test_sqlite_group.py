"""Group commit on SQLite: concurrent units of work share one transaction and
one COMMIT, and each keeps its own outcome (`tenure.store.sqlite_group`)."""

from __future__ import annotations

import asyncio
import gc
import random
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tenure.clock import FakeClock
from tenure.core.errors import Conflict, TenureError
from tenure.core.model import Board
from tenure.store.sqlite import SqliteStore
from tenure.store.sqlite_group import GROUP_MAX, PROBE_EVERY, SOLO_STREAK, Pacer


class Boom(Exception):
    """A unit's own failure."""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A store whose first units always wait for company (see `Pacer`)."""
    store = await SqliteStore.open(tmp_path / "t.db", FakeClock())
    store._pacer.waiting = True
    yield store
    await store.close()


def _commits(store: SqliteStore) -> list[str]:
    """Every COMMIT the writer connection runs from now on."""
    seen: list[str] = []
    assert store._writer is not None
    store._writer.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
    return seen


def _insert(board_id: str) -> Callable[[Any], str]:
    def unit(tx: Any) -> str:
        tx.insert_board(Board(board_id, board_id, tx.now))
        return board_id

    return unit


def _fail_after(board_id: str) -> Callable[[Any], None]:
    def unit(tx: Any) -> None:
        tx.insert_board(Board(board_id, board_id, tx.now))
        raise Boom(board_id)

    return unit


def _orphan_agent(tx: Any) -> None:
    """A write that only COMMIT refuses: a deferred foreign key to no board."""
    tx.conn.execute("PRAGMA defer_foreign_keys = ON")
    tx.conn.execute(
        "INSERT INTO agents (board_id, id, name, token_hash, created_at) "
        "VALUES ('nowhere', 'a1', 'a', 'hash-a1', '2026-01-01T00:00:00+00:00')"
    )


async def _boards(store: SqliteStore) -> list[str]:
    return [b.id for b in await store.read(lambda tx: tx.list_boards())]


async def test_quick_units_ready_together_share_one_commit(store: SqliteStore) -> None:
    commits = _commits(store)
    names = [f"b{i:02d}" for i in range(10)]
    here = threading.get_ident()

    def on_this_thread(name: str) -> Callable[[Any], tuple[str, bool]]:
        def unit(tx: Any) -> tuple[str, bool]:
            return _insert(name)(tx), threading.get_ident() == here

        return unit

    results = await asyncio.gather(*(store.run(on_this_thread(n), quick=True) for n in names))
    assert results == [(n, True) for n in names]
    assert commits == ["COMMIT"]
    assert await _boards(store) == names


async def test_a_lone_quick_unit_commits_alone(store: SqliteStore) -> None:
    commits = _commits(store)
    assert await store.run(_insert("b1"), quick=True) == "b1"
    assert commits == ["COMMIT"]
    assert await _boards(store) == ["b1"]


async def test_a_unit_that_raises_in_a_group_loses_only_its_own_writes(
    store: SqliteStore,
) -> None:
    commits = _commits(store)
    units = [_insert("b1"), _fail_after("b2"), _insert("b3")]
    results = await asyncio.gather(
        *(store.run(unit, quick=True) for unit in units), return_exceptions=True
    )
    assert results[0] == "b1" and results[2] == "b3"
    assert isinstance(results[1], Boom)
    assert commits == ["COMMIT"]
    assert await _boards(store) == ["b1", "b3"]


async def test_a_first_unit_that_raises_leaves_the_writer_to_the_next(
    store: SqliteStore,
) -> None:
    results = await asyncio.gather(
        store.run(_fail_after("b1"), quick=True),
        store.run(_insert("b2"), quick=True),
        return_exceptions=True,
    )
    assert isinstance(results[0], Boom) and results[1] == "b2"
    assert await _boards(store) == ["b2"]
    # The writer is free again, for quick units and the writer thread alike.
    assert await store.run(_insert("b3"), quick=True) == "b3"
    assert await store.run(_insert("b4")) == "b4"


async def test_a_commit_that_fails_fails_every_unit_and_keeps_nothing(
    store: SqliteStore,
) -> None:
    results = await asyncio.gather(
        store.run(_insert("b1"), quick=True),
        store.run(_orphan_agent, quick=True),
        store.run(_insert("b2"), quick=True),
        return_exceptions=True,
    )
    assert all(isinstance(r, TenureError) for r in results), results
    assert await _boards(store) == []
    assert await store.read(
        lambda tx: tx.conn.execute("SELECT count(*) FROM agents").fetchone()
    ) == (0,)
    assert await store.run(_insert("b3"), quick=True) == "b3"
    assert await _boards(store) == ["b3"]


async def test_a_full_group_commits_and_the_next_units_start_another(store: SqliteStore) -> None:
    commits = _commits(store)
    names = [f"b{i:03d}" for i in range(GROUP_MAX + 5)]
    assert await asyncio.gather(*(store.run(_insert(n), quick=True) for n in names)) == names
    assert commits == ["COMMIT", "COMMIT"]
    assert await _boards(store) == names


async def test_the_group_commits_when_its_first_caller_is_cancelled(store: SqliteStore) -> None:
    first = asyncio.create_task(store.run(_insert("b1"), quick=True))
    second = asyncio.create_task(store.run(_insert("b2"), quick=True))
    await asyncio.sleep(0)  # both units ran; the first caller waits for its pass
    first.cancel()
    assert await second == "b2"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await _boards(store) == ["b1", "b2"]


async def test_a_failed_commit_after_its_first_caller_left_loses_no_error(
    store: SqliteStore,
) -> None:
    """The first caller cancelled during its pass, then the COMMIT refused:
    the others get the error, and the first caller's is read, not left for
    asyncio to report as an exception nobody retrieved."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        first = asyncio.create_task(store.run(_insert("b1"), quick=True))
        second = asyncio.create_task(store.run(_orphan_agent, quick=True))
        await asyncio.sleep(0)  # both units ran; the first caller waits for its pass
        first.cancel()
        with pytest.raises(TenureError):
            await second
        with pytest.raises(asyncio.CancelledError):
            await first
        del first, second
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []
    assert await _boards(store) == []


async def test_units_queued_meanwhile_run_on_the_writer_thread_after_the_commit(
    store: SqliteStore,
) -> None:
    order: list[str] = []

    def queued(tx: Any) -> int:
        order.append("queued")
        tx.insert_board(Board("b2", "b2", tx.now))
        return threading.get_ident()

    def quick(tx: Any) -> None:
        order.append("quick")
        tx.insert_board(Board("b1", "b1", tx.now))

    quick_task = asyncio.create_task(store.run(quick, quick=True))
    queued_task = asyncio.create_task(store.run(queued))
    await quick_task
    assert await queued_task != threading.get_ident()
    assert order == ["quick", "queued"]
    assert await _boards(store) == ["b1", "b2"]


async def test_units_queued_behind_a_busy_writer_commit_together(store: SqliteStore) -> None:
    """The writer thread's own groups: units queued while it is busy run in
    one transaction, each in a savepoint; one raising loses only its writes."""
    release = threading.Event()
    entered = threading.Event()

    def slow(tx: Any) -> None:
        entered.set()
        release.wait(10)
        tx.insert_board(Board("b0", "b0", tx.now))

    first = asyncio.create_task(store.run(slow))
    assert await asyncio.to_thread(entered.wait, 10)
    commits = _commits(store)
    queued = [
        asyncio.create_task(store.run(unit))
        for unit in (_insert("b1"), _fail_after("b2"), _insert("b3"))
    ]
    await asyncio.sleep(0.05)
    release.set()
    await first
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert results[0] == "b1" and isinstance(results[1], Boom) and results[2] == "b3"
    assert commits == ["COMMIT", "COMMIT"]  # the slow unit's, then the group's
    assert await _boards(store) == ["b0", "b1", "b3"]


async def test_a_conflict_in_a_group_is_the_callers_error_only(store: SqliteStore) -> None:
    await store.run(_insert("b1"))
    results = await asyncio.gather(
        store.run(_insert("b2"), quick=True),
        store.run(_insert("b1"), quick=True),
        return_exceptions=True,
    )
    assert results[0] == "b2" and isinstance(results[1], Conflict)
    assert await _boards(store) == ["b1", "b2"]


def test_the_pacer_waits_while_groups_have_company_and_probes_otherwise() -> None:
    pacer = Pacer()
    # Alone: one group in PROBE_EVERY waits, to see whether company came.
    decisions = [pacer.wait_for_company() for _ in range(2 * PROBE_EVERY)]
    assert decisions.count(True) == 2 and decisions[PROBE_EVERY - 1]
    pacer.waited(3)  # it did
    assert all(pacer.wait_for_company() for _ in range(3 * PROBE_EVERY))
    for _ in range(SOLO_STREAK - 1):
        pacer.waited(1)
    pacer.waited(2)  # company again: the streak starts over
    for _ in range(SOLO_STREAK - 1):
        pacer.waited(1)
        assert pacer.wait_for_company()
    pacer.waited(1)  # SOLO_STREAK lone groups in a row: stop waiting
    assert not pacer.wait_for_company()


async def test_a_serial_caller_commits_at_once_and_concurrent_ones_share_commits(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "t.db", FakeClock())
    commits = _commits(store)
    passes = 0

    async def count_passes() -> None:
        nonlocal passes
        while True:
            await asyncio.sleep(0)
            passes += 1

    counter = asyncio.create_task(count_passes())
    await asyncio.sleep(0)
    start = passes
    for i in range(PROBE_EVERY - 1):
        await store.run(_insert(f"s{i:02d}"), quick=True)
    # Each unit committed before its caller went on, without yielding once.
    assert passes == start
    assert len(commits) == PROBE_EVERY - 1
    counter.cancel()

    commits.clear()
    names = [f"c{r:02d}-{i}" for r in range(2 * PROBE_EVERY) for i in range(8)]

    async def caller(i: int) -> None:
        for r in range(2 * PROBE_EVERY):
            await store.run(_insert(f"c{r:02d}-{i}"), quick=True)

    await asyncio.gather(*(caller(i) for i in range(8)))
    # Once a probe found company, units went eight to a commit.
    assert len(commits) < len(names) // 4, len(commits)
    assert sorted(await _boards(store)) == sorted(
        [f"s{i:02d}" for i in range(PROBE_EVERY - 1)] + names
    )
    await store.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_what_is_kept_is_exactly_what_was_acknowledged(tmp_path: Path, seed: int) -> None:
    """A random mix of quick and queued units, some raising, some making the
    COMMIT fail, some with their callers cancelled: every unit whose caller
    got an answer is in the file, every unit whose caller got an error is not."""
    rng = random.Random(seed)
    store = await SqliteStore.open(tmp_path / "t.db", FakeClock())
    store._pacer.waiting = True  # then as the Pacer decides
    acknowledged: set[str] = set()
    refused: set[str] = set()
    undecided: set[str] = set()  # callers cancelled: kept or not, never half
    bystanders: set[str] = set()  # good units refused with a failed COMMIT

    async def one(n: int) -> None:
        name = f"b{n:04d}"
        kind = rng.choices(["ok", "raise", "orphan", "cancel"], [70, 15, 3, 12])[0]
        quick = rng.random() < 0.8

        def unit(tx: Any) -> str:
            tx.insert_board(Board(name, name, tx.now))
            if kind == "raise":
                raise Boom(name)
            if kind == "orphan":
                _orphan_agent(tx)
            return name

        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        task = asyncio.create_task(store.run(unit, quick=quick))
        if kind == "cancel":
            await asyncio.sleep(0)
            task.cancel()
        try:
            assert await task == name
            acknowledged.add(name)
        except asyncio.CancelledError:
            undecided.add(name)
        except (Boom, TenureError):
            refused.add(name)
            if kind in ("ok", "cancel"):
                bystanders.add(name)

    for wave in range(15):
        await asyncio.gather(*(one(wave * 20 + i) for i in range(20)))
    kept = set(await _boards(store))
    assert acknowledged <= kept
    assert not refused & kept
    assert kept <= acknowledged | undecided
    assert len(acknowledged) > 100 and refused
    assert bystanders, "no COMMIT failed under another unit: the group path went untested"
    # The agents the orphan units wrote never outlive their failed COMMIT.
    assert await store.read(
        lambda tx: tx.conn.execute("SELECT count(*) FROM agents").fetchone()
    ) == (0,)
    await store.close()
