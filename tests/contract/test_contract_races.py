"""Contract: claims and recoveries under concurrency.

No task ever goes to two agents, no agent holds two tasks, and of two writes
decided from the same read of a lease exactly one wins; the loser gets
`False`, never a driver exception.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import replace
from typing import Any

from contract_records import (
    BOARD,
    agent,
    at,
    board,
    claim_first,
    complete,
    lease,
    recover_from,
    seed,
    task,
)

from tenure.core.errors import Conflict
from tenure.core.model import EndReason, TaskStatus

CLAIMERS = 16
TASKS = 200


async def test_sixteen_concurrent_claimers_take_every_task_exactly_once(store: Any) -> None:
    agents = [f"a{n:02d}" for n in range(CLAIMERS)]
    await store.run(seed(board(), *(agent(a) for a in agents)))
    await store.run(seed(*(task(f"t{n:03d}", created_at=at(n)) for n in range(TASKS))))
    claims: list[tuple[str, str]] = []

    async def claimer(agent_id: str) -> None:
        while True:
            try:
                taken = await store.run(claim_first(BOARD, agent_id))
            except Conflict:
                continue  # another claimer took that task first: try the next one
            if taken is None:
                return
            claims.append((agent_id, taken))
            assert await store.run(complete(BOARD, taken)) is True

    await asyncio.gather(*(claimer(a) for a in agents))

    per_task = Counter(task_id for _, task_id in claims)
    assert len(per_task) == TASKS and set(per_task.values()) == {1}

    def final(tx: Any) -> Any:
        tasks = tx.list_tasks(BOARD)
        return tasks, {t.id: tx.lease_history(BOARD, t.id) for t in tasks}, tx.live_leases()

    tasks, histories, live = await store.read(final)
    assert {t.status for t in tasks} == {TaskStatus.DONE}
    assert live == []
    for task_id, history in histories.items():
        assert len(history) == 1, task_id
        assert (history[0].epoch, history[0].end_reason) == (1, EndReason.COMPLETED)
        assert (history[0].agent_id, task_id) in claims
    # No agent ever held two leases at once: its leases never overlap in time.
    by_agent: dict[str, list[Any]] = {}
    for history in histories.values():
        by_agent.setdefault(history[0].agent_id, []).append(history[0])
    for held in by_agent.values():
        held.sort(key=lambda one: (one.assigned_at, one.ended_at))
        for earlier, later in itertools.pairwise(held):
            assert earlier.ended_at <= later.assigned_at


async def test_concurrent_claimers_that_keep_their_tasks_get_one_each(store: Any) -> None:
    agents = [f"a{n:02d}" for n in range(CLAIMERS)]
    await store.run(seed(board(), *(agent(a) for a in agents)))
    await store.run(seed(*(task(f"t{n:03d}", created_at=at(n)) for n in range(TASKS))))

    async def claim_once(agent_id: str) -> list[str]:
        taken: list[str] = []
        for _ in range(3):  # asking again while holding a task gives nothing
            try:
                got = await store.run(claim_first(BOARD, agent_id))
            except Conflict:
                continue
            if got is not None:
                taken.append(got)
        return taken

    results = await asyncio.gather(*(claim_once(a) for a in agents))
    assert all(len(taken) == 1 for taken in results)
    claimed = [taken[0] for taken in results]
    assert len(set(claimed)) == CLAIMERS
    live = await store.read(lambda tx: tx.live_leases(BOARD))
    assert sorted((x.agent_id, x.task_id) for x in live) == sorted(
        zip(agents, claimed, strict=True)
    )


async def test_two_concurrent_recoveries_of_one_lease_exactly_one_wins(store: Any) -> None:
    await store.run(seed(board(), agent("a1"), task("t1", status=TaskStatus.IN_PROGRESS, epoch=1)))
    await store.run(seed(lease("t1", "a1", epoch=1)))
    read = await store.read(lambda tx: tx.live_lease(BOARD, "t1"))
    results = await asyncio.gather(store.run(recover_from(read)), store.run(recover_from(read)))
    assert sorted(results) == [False, True]

    def after(tx: Any) -> Any:
        return tx.get_task(BOARD, "t1"), tx.lease_history(BOARD, "t1")

    current, history = await store.read(after)
    assert (current.status, current.recovery_count) == (TaskStatus.TODO, 1)
    assert [(x.version, x.end_reason) for x in history] == [(2, EndReason.LEASE_EXPIRED)]


async def test_a_recovery_decided_from_an_older_read_loses_to_a_revival(store: Any) -> None:
    await store.run(seed(board(), agent("a1"), task("t1", status=TaskStatus.IN_PROGRESS, epoch=1)))
    await store.run(seed(lease("t1", "a1", epoch=1)))
    older = await store.read(lambda tx: tx.live_lease(BOARD, "t1"))

    def revive(tx: Any) -> bool:
        live = tx.live_lease(BOARD, "t1")
        revived = replace(
            live,
            version=live.version + 1,
            expires_at=at(600),
            recover_after=at(660),
            last_signal_at=tx.now,
            progress=30,
        )
        return bool(tx.update_lease(revived, live.version))

    assert await store.run(revive) is True
    revived = await store.read(lambda tx: tx.live_lease(BOARD, "t1"))
    assert await store.run(recover_from(older)) is False
    assert await store.read(lambda tx: tx.live_lease(BOARD, "t1")) == revived
    current = await store.read(lambda tx: tx.get_task(BOARD, "t1"))
    assert (current.status, current.recovery_count) == (TaskStatus.IN_PROGRESS, 0)


async def test_many_concurrent_writers_of_one_lease_never_lose_an_update(store: Any) -> None:
    await store.run(seed(board(), agent("a1"), task("t1", status=TaskStatus.IN_PROGRESS, epoch=1)))
    await store.run(seed(lease("t1", "a1", epoch=1)))

    async def renew_until_it_sticks() -> int:
        attempts = 0
        while True:
            attempts += 1
            read = await store.read(lambda tx: tx.live_lease(BOARD, "t1"))
            bumped = replace(read, version=read.version + 1, renewal_count=read.renewal_count + 1)
            if await store.run(lambda tx, b=bumped, v=read.version: tx.update_lease(b, v)):
                return attempts

    await asyncio.gather(*(renew_until_it_sticks() for _ in range(10)))
    final = await store.read(lambda tx: tx.live_lease(BOARD, "t1"))
    assert (final.version, final.renewal_count) == (11, 10)
