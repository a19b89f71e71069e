"""Hooks leave through the outbox: at least once, idempotent, never undoing anything.

Every scenario starts from a real recovery (the real Coordinator and Monitor
on a real store with a FakeClock: a SQLite file, or a fresh PostgreSQL
database), which writes a `recovered` row to the outbox; "restarts" and
"replicas" open new store, Coordinator and deliverer objects on the same
database. Backoff is judged on the store's FakeClock.
"""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.support.webhook import Receiver
from tests.support.world import SPEC_POLICY, backends

from tenure.auth import ADMIN, Caller, Role
from tenure.clock import FakeClock
from tenure.hooks import GAVE_UP_AT, HookDeliverer, body_of, sign, verify
from tenure.monitor import Monitor
from tenure.service import Coordinator
from tenure.store.base import OutboxRow, Store
from tenure.store.sqlite import open_sqlite

START = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "s3cret-for-tests"


@dataclass
class Database:
    """One database of a test, which several store objects may open."""

    kind: str
    path: Path
    clock: FakeClock
    dsn: str | None = None

    async def open(self) -> Store:
        if self.kind == "sqlite":
            return await open_sqlite(self.path, self.clock)
        from tests.support.pg import open_postgres_store

        from tenure.store.postgres import open_postgres

        if self.dsn is None:
            first = await open_postgres_store(self.clock)
            self.dsn = first.dsn
            return first
        return await open_postgres(self.dsn, self.clock, max_size=4)


@pytest.fixture(params=backends())
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    return Database(request.param, tmp_path / "tenure.db", FakeClock(START))


async def open_coordinator(db: Database) -> Coordinator:
    # SPEC's detector: these tests wait out its phase numbers.
    return Coordinator(await db.open(), policy=SPEC_POLICY)


async def recover_a_task(db: Database) -> None:
    """Board b1, agent a1 claims t1 and goes silent; the monitor recovers it."""
    clock = db.clock
    coordinator = await open_coordinator(db)
    try:
        await coordinator.admin.create_board(ADMIN, "b1")
        await coordinator.admin.register_agent(ADMIN, {"agent_id": "a1"}, "b1")
        await coordinator.admin.add_task(ADMIN, "b1", {"id": "t1", "title": "t1"})
        await coordinator.request_next_task(Caller(Role.AGENT, "b1", "a1"))
        clock.advance(241)
        result = await Monitor(coordinator).run_pass()
        assert result.recovered == 1
    finally:
        await coordinator.store.close()


async def outbox(store: Store) -> list[OutboxRow]:
    """Every undelivered row, given-up ones included."""
    return await store.run(lambda tx: tx.due_hooks(GAVE_UP_AT, 100))


async def snapshot(store: Store) -> tuple[Any, ...]:
    """Everything but the outbox: what a hook must never change."""

    def read(tx: Any) -> tuple[Any, ...]:
        return (
            tx.get_task("b1", "t1"),
            tx.lease_history("b1", "t1"),
            tx.counters("b1"),
            tx.comments("b1", "t1"),
        )

    events = await store.events_after(0)
    return (await store.read(read), [e.to_dict() for e in events])


def deliverer(store: Store, **kwargs: Any) -> HookDeliverer:
    kwargs.setdefault("rng", random.Random(7))
    kwargs.setdefault("timeout", 5.0)
    return HookDeliverer(store=store, **kwargs)


async def test_a_webhook_failing_twice_is_delivered_once_across_restarts(
    db: Database, receiver: Receiver
) -> None:
    clock = db.clock
    await recover_a_task(db)
    receiver.failures = 2

    for attempt in (1, 2, 3):
        # A restart: new store, Coordinator and deliverer on the same file.
        coordinator = await open_coordinator(db)
        hooks = deliverer(coordinator.store, webhook_urls=[receiver.url], secret=SECRET)
        try:
            if attempt > 1:
                assert await hooks.deliver_once() == 0  # backing off: not due yet
                clock.advance(hooks.base_delay * 2 ** (attempt - 2))
            assert await hooks.deliver_once() == 1
            task = await coordinator.store.read(lambda tx: tx.get_task("b1", "t1"))
            assert task is not None and str(task.status) == "todo"
        finally:
            await hooks.aclose()
            await coordinator.store.close()

    assert len(receiver.requests) == 3
    assert len(receiver.accepted) == 1 and receiver.duplicates == 0
    (event,) = receiver.accepted.values()
    assert event.key == "recovered:b1:t1:1"
    assert event.headers["x-tenure-event"] == "recovered"
    assert event.json()["data"]["task_id"] == "t1"
    assert [r.headers["x-tenure-attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert len({r.body for r in receiver.requests}) == 1  # the same bytes every time
    assert all(verify(r.body, SECRET, r.headers["x-tenure-signature"]) for r in receiver.requests)

    store = await db.open()
    try:
        clock.advance(3600)
        assert await outbox(store) == []  # delivered: never sent again
        assert await deliverer(store, webhook_urls=[receiver.url]).deliver_once() == 0
    finally:
        await store.close()
    assert len(receiver.requests) == 3


async def test_a_delivery_whose_outcome_was_lost_is_repeated_and_deduplicated(
    db: Database, receiver: Receiver
) -> None:
    clock = db.clock
    await recover_a_task(db)
    store = await db.open()
    try:
        crashing = deliverer(store, webhook_urls=[receiver.url])

        def crash(*args: Any) -> None:
            raise RuntimeError("replica died before recording the outcome")

        crashing._record = crash  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await crashing.deliver_once()
        await crashing.aclose()
        assert len(receiver.requests) == 1

        survivor = deliverer(store, webhook_urls=[receiver.url])
        assert await survivor.deliver_once() == 0  # still taken by the dead replica
        clock.advance(survivor.visibility.total_seconds())
        assert await survivor.deliver_once() == 1
        await survivor.aclose()
    finally:
        await store.close()
    assert len(receiver.requests) == 2
    assert receiver.requests[1].headers["x-tenure-attempt"] == "2"
    assert len(receiver.accepted) == 1 and receiver.duplicates == 1


async def test_two_replicas_never_deliver_the_same_row_at_once(
    db: Database, receiver: Receiver
) -> None:
    await recover_a_task(db)
    receiver.hold = release = threading.Event()
    one, two = await db.open(), await db.open()
    first = deliverer(one, webhook_urls=[receiver.url])
    second = deliverer(two, webhook_urls=[receiver.url])
    try:
        in_flight = asyncio.create_task(first.deliver_once())
        assert await asyncio.to_thread(receiver.arrived.wait, 10)
        assert await second.deliver_once() == 0
        release.set()
        assert await asyncio.wait_for(in_flight, timeout=10) == 1
        assert await second.deliver_once() == 0
    finally:
        release.set()
        await first.aclose()
        await second.aclose()
        await one.close()
        await two.close()
    assert len(receiver.requests) == 1


async def test_a_raising_python_hook_changes_nothing_else(db: Database) -> None:
    clock = db.clock
    await recover_a_task(db)
    calls: list[tuple[str, dict[str, Any]]] = []

    def broken(kind: str, payload: dict[str, Any]) -> None:
        payload["task_id"] = "vandalised"  # a copy: the outbox keeps its own
        raise ValueError("the hook's own bug")

    async def listening(kind: str, payload: dict[str, Any]) -> None:
        calls.append((kind, payload))

    store = await db.open()
    try:
        before = await snapshot(store)
        hooks = deliverer(store, callables=[broken, listening], max_attempts=3)
        for _attempt in (1, 2, 3):
            assert await hooks.deliver_once() == 1
            clock.advance(hooks.max_delay)
        assert await hooks.deliver_once() == 0  # given up after max_attempts
        assert await snapshot(store) == before
        assert [kind for kind, _ in calls] == ["recovered"] * 3
        assert all(payload["task_id"] == "t1" for _, payload in calls)
        (row,) = await outbox(store)
        assert row.next_attempt_at == GAVE_UP_AT and row.delivered_at is None
        assert row.last_error is not None
        assert (
            "gave up after 3 attempts" in row.last_error and "the hook's own bug" in row.last_error
        )
        assert row.payload["task_id"] == "t1"
        assert hooks.stats.retried == 2 and hooks.stats.gave_up == 1 and hooks.stats.delivered == 0
        # The monitor goes on as before.
        assert (await Monitor(Coordinator(store, policy=SPEC_POLICY)).run_pass()).due == 0
    finally:
        await store.close()


async def test_a_deliverer_with_no_target_leaves_the_outbox_alone(db: Database) -> None:
    await recover_a_task(db)
    store = await db.open()
    try:
        assert await deliverer(store).deliver_once() == 0
        (row,) = await outbox(store)
        assert row.attempts == 0 and row.delivered_at is None
    finally:
        await store.close()


async def test_python_hooks_that_return_mark_the_row_delivered(db: Database) -> None:
    await recover_a_task(db)
    seen: list[str] = []
    store = await db.open()
    try:
        hooks = deliverer(store, callables=[lambda kind, payload: seen.append(kind)])
        assert await hooks.deliver_once() == 1
        assert await outbox(store) == []
        assert seen == ["recovered"] and hooks.stats.delivered == 1
    finally:
        await store.close()


async def test_a_hung_python_hook_is_cut_at_the_timeout(db: Database) -> None:
    await recover_a_task(db)

    async def never(kind: str, payload: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    store = await db.open()
    try:
        hooks = deliverer(store, callables=[never], timeout=0.2)
        assert await asyncio.wait_for(hooks.deliver_once(), timeout=5) == 1
        (row,) = await outbox(store)
        assert row.last_error is not None and "no answer within 0.2 s" in row.last_error
    finally:
        await store.close()


async def test_the_signature_verifies_only_with_the_secret(
    db: Database, receiver: Receiver
) -> None:
    await recover_a_task(db)
    store = await db.open()
    try:
        (row,) = await outbox(store)
        hooks = deliverer(store, webhook_urls=[receiver.url], secret=SECRET)
        assert await hooks.deliver_once() == 1
        await hooks.aclose()
    finally:
        await store.close()
    (got,) = receiver.requests
    assert got.body == body_of(row)
    assert got.headers["x-tenure-signature"] == sign(got.body, SECRET)
    assert verify(got.body, SECRET, got.headers["x-tenure-signature"])
    assert not verify(got.body, "another secret", got.headers["x-tenure-signature"])
    assert not verify(got.body + b" ", SECRET, got.headers["x-tenure-signature"])


async def test_without_a_secret_no_signature_is_sent(db: Database, receiver: Receiver) -> None:
    await recover_a_task(db)
    store = await db.open()
    try:
        hooks = deliverer(store, webhook_urls=[receiver.url], secret="")
        assert await hooks.deliver_once() == 1
        await hooks.aclose()
    finally:
        await store.close()
    assert "x-tenure-signature" not in receiver.requests[0].headers


async def test_one_failing_url_retries_the_row_for_every_target(
    db: Database, receiver: Receiver
) -> None:
    clock = db.clock
    await recover_a_task(db)
    store = await db.open()
    try:
        dead_url = "http://127.0.0.1:9/nothing-listens-here"
        hooks = deliverer(store, webhook_urls=[receiver.url, dead_url], max_attempts=2)
        assert await hooks.deliver_once() == 1
        clock.advance(hooks.max_delay)
        assert await hooks.deliver_once() == 1
        await hooks.aclose()
        (row,) = await outbox(store)
        assert row.next_attempt_at == GAVE_UP_AT
        assert row.last_error is not None and "nothing-listens-here" in row.last_error
    finally:
        await store.close()
    assert len(receiver.accepted) == 1 and receiver.duplicates == 1


async def test_run_delivers_until_stopped(db: Database, receiver: Receiver) -> None:
    await recover_a_task(db)
    store = await db.open()
    try:
        hooks = deliverer(store, webhook_urls=[receiver.url], interval=0.05)
        running = asyncio.create_task(hooks.run())
        assert await asyncio.to_thread(receiver.arrived.wait, 10)
        hooks.stop()
        await asyncio.wait_for(running, timeout=10)
        assert len(receiver.accepted) == 1
        assert hooks.stats.delivered == 1
    finally:
        await store.close()


@pytest.mark.parametrize("attempt", [1, 2, 5, 12, 40])
def test_backoff_grows_exponentially_with_jitter_and_a_ceiling(attempt: int) -> None:
    hooks = HookDeliverer(store=None, base_delay=1.0, max_delay=300.0)  # type: ignore[arg-type]
    ceiling = min(300.0, 2.0 ** (attempt - 1))
    delays = [hooks.backoff(attempt) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(
    "bad",
    [{"max_attempts": 0}, {"timeout": 0}, {"interval": 0}, {"base_delay": 10, "max_delay": 1}],
)
def test_nonsense_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        HookDeliverer(store=None, **bad)  # type: ignore[arg-type]
