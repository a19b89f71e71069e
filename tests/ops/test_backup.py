"""Backup and move: a board exported from SQLite and imported into PostgreSQL
arrives whole (every task, handoff, lease, comment, event and counter), its
agents' tokens still work, and an import never lands on an existing board."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from tests.support.world import World, make_world
from typer.testing import CliRunner

from tenure.auth import token_hash
from tenure.backup import export_board, import_board
from tenure.core.errors import Conflict, InvalidInput

pytestmark = pytest.mark.postgres


async def _busy_board(world: World) -> None:
    """A board with a bit of everything: a recovery and its handoff, a completion
    that used it, a live lease, a blocked task, dependencies, comments."""
    await world.setup_board(project_root="/srv/project")
    a1 = await world.add_agent("a1", skills=["python"])
    a2 = await world.add_agent("a2")
    a3 = await world.add_agent("a3")
    await world.add_task("T1", priority="high", labels=["complex"], estimated_hours=2.5)
    await world.add_task("T2", description="second", required_skills=["python"])
    await world.add_task("T3", dependencies=["T1"])
    await world.add_task("T4")
    assert (await world.claim(a1))["task"]["id"] == "T1"
    world.clock.advance(20)
    await world.report(a1, "T1", progress=30, message="half way\nmore to do", branch="feat/t1")
    world.clock.advance(20)
    await world.report(a1, "T1", progress=40, message="still going")
    await world.run_for(900)  # a1 falls silent: recovered, with a handoff and a comment
    assert (await world.task("T1"))["status"] == "todo"
    assert (await world.claim(a2))["task"]["id"] == "T1"
    await world.report(a2, "T1", progress=80, message="merged a1's branch")
    await world.report(a2, "T1", status="completed", progress=100, message="done")
    assert (await world.claim(a3))["task"]["id"] in {"T2", "T3"}
    held = [t for t in ("T2", "T3") if (await world.task(t))["status"] == "in_progress"]
    await world.report(a3, held[0], progress=10, message="started")
    blocked = (await world.claim(a1))["task"]["id"]
    assert blocked != held[0]
    await world.report(a1, blocked, status="blocked", message="no database")


async def _exported_busy_board(tmp_path: Path) -> dict[str, Any]:
    """`_busy_board` on a SQLite world, exported."""
    world = await make_world("sqlite", tmp_path)
    try:
        await _busy_board(world)
        return await export_board(world.store, "b1")
    finally:
        await world.store.close()


def _normalised(document: dict[str, Any]) -> dict[str, Any]:
    """The document without what a move may change: when it was taken, event ids."""
    copy = json.loads(json.dumps(document))
    copy.pop("exported_at")
    for event in copy["events"]:
        event.pop("id")
    return copy


async def test_a_board_moves_from_sqlite_to_postgres_with_its_whole_history(
    tmp_path: Path,
) -> None:
    world = await make_world("sqlite", tmp_path)
    try:
        await _busy_board(world)
        exported = json.loads(json.dumps(await export_board(world.store, "b1")))
    finally:
        await world.store.close()
    assert {"T1", "T2", "T3", "T4"} == {t["id"] for t in exported["tasks"]}
    assert any(t["handoff"] for t in exported["tasks"])
    assert any(lease["ended_at"] is None for lease in exported["leases"])
    assert len(exported["leases"]) >= 4 and len(exported["events"]) >= 10
    assert any("[tenure:recovered]" in c["body"] for c in exported["comments"])

    target = await make_world("postgres", tmp_path)
    try:
        counts = await import_board(target.store, exported)
        assert counts["events"] == len(exported["events"])
        again = await export_board(target.store, "b1")
        assert _normalised(again) == _normalised(exported)
        # Event order is kept (ids renumbered, still growing in the same order).
        ids = [event["id"] for event in again["events"]]
        assert ids == sorted(ids)
        # Agents keep their tokens: the same token finds the same agent.
        found = await target.store.read(
            lambda tx: tx.agent_by_token_hash(token_hash(world.tokens["a2"]))
        )
        assert found is not None and (found.board_id, found.id) == ("b1", "a2")
        # The moved board is live: the Coordinator on PostgreSQL shows the lease.
        live = [t for t in again["tasks"] if t["status"] == "in_progress"]
        shown = await target.task(live[0]["id"])
        assert shown["lease"] is not None
        with pytest.raises(Conflict, match="already exists"):
            await import_board(target.store, exported)
        assert len(await target.store.events_after(0, board_id="b1")) == len(exported["events"])
    finally:
        await target.store.close()


async def test_an_import_that_fails_part_way_writes_nothing(tmp_path: Path) -> None:
    exported = await _exported_busy_board(tmp_path)
    broken = json.loads(json.dumps(exported))
    broken["events"][-1]["type"] = "no.such.type"
    target = await make_world("postgres", tmp_path)
    try:
        with pytest.raises(InvalidInput):
            await import_board(target.store, broken)
        broken = json.loads(json.dumps(exported))
        stray = {"task_id": "missing", "at": "2026-01-01T00:00:00", "author": "x", "body": "y"}
        broken["comments"].append(stray)
        with pytest.raises(Conflict):
            await import_board(target.store, broken)
        assert await target.store.read(lambda tx: tx.get_board("b1")) is None
        assert await target.store.read(lambda tx: tx.list_tasks("b1")) == []
    finally:
        await target.store.close()


async def test_an_export_from_before_the_newer_lease_columns_still_imports(
    tmp_path: Path,
) -> None:
    """Exports made before migrations 0002/0003 (SQLite) lack `last_call_at`,
    `signal_gaps` and `suspect_dropped`: the leases import with the values they
    had then; a lease lacking an older column is still refused."""
    exported = await _exported_busy_board(tmp_path)
    old = json.loads(json.dumps(exported))
    for lease in old["leases"]:
        for name in ("last_call_at", "signal_gaps", "suspect_dropped"):
            lease.pop(name)
    damaged = json.loads(json.dumps(old))
    damaged["leases"][0].pop("expires_at")
    (tmp_path / "target").mkdir()
    target = await make_world("sqlite", tmp_path / "target")
    try:
        with pytest.raises(InvalidInput, match="lacks expires_at"):
            await import_board(target.store, damaged)
        await import_board(target.store, old)
        leases = await target.store.read(lambda tx: tx.lease_history("b1", "T1"))
        assert leases and all(not x.signal_gaps and not x.suspect_dropped for x in leases)
        assert all(x.last_call_at is None for x in leases)
    finally:
        await target.store.close()


def test_the_export_and_import_commands_move_a_board(tmp_path: Path) -> None:
    from tests.ops.test_upgrade import pg_url
    from tests.support.pg import empty_postgres_dsn

    from tenure.cli import app

    async def build() -> None:
        world = await make_world("sqlite", tmp_path)
        try:
            await _busy_board(world)
        finally:
            await world.store.close()

    asyncio.run(build())
    source = f"sqlite:///{tmp_path / 'tenure.db'}"
    runner = CliRunner()
    out = tmp_path / "b1.json"
    exported = runner.invoke(app, ["export", "b1", "--database-url", source, "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    document = json.loads(out.read_text())
    assert document["board"]["id"] == "b1"

    target = pg_url(empty_postgres_dsn())  # a new database: import creates the schema
    imported = runner.invoke(app, ["import", str(out), "--database-url", target, "--json"])
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout)["tasks"] == 4
    twice = runner.invoke(app, ["import", str(out), "--database-url", target])
    assert twice.exit_code == 1
    assert "conflict" in twice.output and "already exists" in twice.output
    missing = runner.invoke(app, ["export", "nope", "--database-url", source])
    assert missing.exit_code == 1 and "not_found" in missing.output
