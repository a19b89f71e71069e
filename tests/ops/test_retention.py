"""Retention: old history goes, in batches, by the server's pruner or by hand;
the history of live leases and of tasks not yet done stays, however old."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.world import World, backends, make_world
from typer.testing import CliRunner

from tenure.cli import app
from tenure.retention import Pruner
from tenure.server import Runtime
from tenure.settings import load_settings

DAY = 86400.0


@pytest.fixture(params=backends())
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    made = await make_world(request.param, tmp_path)
    await made.setup_board()
    try:
        yield made
    finally:
        await made.store.close()


async def _history(world: World) -> None:
    """T1 done after a recovery (events and a comment), T2 held live, T3 blocked,
    T4 never touched; then 40 quiet days (no monitor pass: the lease stays live)."""
    a1 = await world.add_agent("a1")
    a2 = await world.add_agent("a2")
    for task_id in ("T1", "T2", "T3", "T4"):
        await world.add_task(task_id)
    assert (await world.claim(a1))["task"]["id"] == "T1"
    await world.report(a1, "T1", progress=10)
    await world.run_for(900)  # a1 falls silent: recovered, with a comment
    assert (await world.claim(a2))["task"]["id"] == "T1"
    await world.report(a2, "T1", status="completed", progress=100)
    assert (await world.claim(a2))["task"]["id"] == "T2"
    await world.report(a2, "T2", progress=50, message="working")
    a3 = await world.add_agent("a3")
    assert (await world.claim(a3))["task"]["id"] == "T3"
    await world.report(a3, "T3", status="blocked", message="waiting for a key")
    world.clock.advance(40 * DAY)


async def _counts(world: World) -> dict[str | None, int]:
    found: dict[str | None, int] = {}
    for event in await world.store.events_after(0, board_id="b1", limit=10_000):
        found[event.task_id] = found.get(event.task_id, 0) + 1
    return found


async def test_the_pruner_removes_old_history_of_done_tasks_only(world: World) -> None:
    await _history(world)
    before = await _counts(world)
    assert before.get("T1", 0) >= 4 and before.get("T2", 0) >= 2 and before.get("T3", 0) >= 2
    t1_comments = (await world.task("T1"))["comments"]
    assert any("[tenure:recovered]" in c["body"] for c in t1_comments)
    live_before = (await world.task("T2"))["lease"]

    pruner = Pruner(world.store, retention_days=30, batch_size=2, interval=3600)
    result = await pruner.run_round()
    assert result is not None and result.events >= before["T1"] and result.comments >= 1

    after = await _counts(world)
    assert "T1" not in after
    for kept in ("T2", "T3", "T4"):
        assert after.get(kept) == before.get(kept), kept
    assert (await world.task("T1"))["comments"] == []
    assert (await world.task("T2"))["lease"] == live_before
    again = await pruner.run_round()
    assert again is not None and (again.events, again.comments) == (0, 0)


async def test_history_younger_than_the_retention_stays(world: World) -> None:
    await _history(world)
    before = await _counts(world)
    result = await Pruner(world.store, retention_days=60).run_round()
    assert result is not None and (result.events, result.comments) == (0, 0)
    assert await _counts(world) == before


async def test_the_pruner_runs_beside_the_monitor_and_stops_with_it(world: World) -> None:
    await _history(world)
    pruner = Pruner(world.store, retention_days=30, batch_size=1000, interval=3600)
    task = asyncio.create_task(pruner.run())
    try:
        async with asyncio.timeout(20):
            while pruner.rounds == 0:
                await asyncio.sleep(0.01)
    finally:
        pruner.stop()
        async with asyncio.timeout(20):
            await task
    assert pruner.last is not None and pruner.last.events > 0


async def test_the_server_runs_a_pruner_only_when_retention_is_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tenure.db'}"
    for days, wanted in (("30", 1), ("0", 0)):
        settings = load_settings(
            {"TENURE_STORE_DATABASE_URL": url, "TENURE_EVENTS_RETENTION_DAYS": days}
        )
        runtime = await Runtime.open(settings)
        try:
            pruners = [w for w in runtime.workers if isinstance(w, Pruner)]
            assert len(pruners) == wanted
            if pruners:
                assert (pruners[0].retention_days, pruners[0].batch_size) == (30, 500)
        finally:
            await runtime.store.close()


def test_events_prune_by_hand_keeps_what_it_must(tmp_path: Path) -> None:
    async def build() -> dict[str | None, int]:
        made = await make_world("sqlite", tmp_path)
        try:
            await made.setup_board()
            await _history(made)
            return await _counts(made)
        finally:
            await made.store.close()

    before = asyncio.run(build())
    url = f"sqlite:///{tmp_path / 'tenure.db'}"
    runner = CliRunner()
    # The history happened on 2026-01-01 (the FakeClock's start).
    early = runner.invoke(
        app, ["events", "prune", "--before", "2025-12-31", "--database-url", url, "--json"]
    )
    assert early.exit_code == 0, early.output
    assert json.loads(early.stdout)["events"] == 0
    late = runner.invoke(
        app, ["events", "prune", "--before", "2026-01-20", "--database-url", url, "--json"]
    )
    assert late.exit_code == 0, late.output
    assert json.loads(late.stdout)["events"] == before["T1"]

    async def remaining() -> dict[str | None, int]:
        made = await make_world("sqlite", tmp_path)
        try:
            return await _counts(made)
        finally:
            await made.store.close()

    after = asyncio.run(remaining())
    assert "T1" not in after and after.get("T2") == before.get("T2")
    both = runner.invoke(
        app,
        ["events", "prune", "--before", "2026-01-20", "--older-than", "3", "--database-url", url],
    )
    assert both.exit_code == 2 and "not both" in both.output
    off = runner.invoke(
        app, ["events", "prune", "--database-url", url], env={"TENURE_EVENTS_RETENTION_DAYS": "0"}
    )
    assert off.exit_code == 2 and "--older-than" in off.output


async def test_a_failing_round_is_logged_and_tried_again_never_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    made = await make_world("sqlite", tmp_path)
    await made.store.close()  # every round now fails: the store is gone
    pruner = Pruner(made.store, retention_days=30)
    assert await pruner.run_round() is None
    assert pruner.rounds == 0
    assert "pruning old events failed" in caplog.text
