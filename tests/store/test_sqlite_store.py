"""The SQLite store's own mechanics: migrations, pragmas, errors, query plans.

What every store must do is in tests/contract; this file checks how the
SQLite store does it (the file, its schema, its locks and its indexes).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tenure.clock import FakeClock
from tenure.core.errors import Conflict, StoreUnavailable
from tenure.core.model import Board, Task, TaskStatus
from tenure.store import migrate as migrations
from tenure.store import sqlite as sqlite_store
from tenure.store.sqlite import SqliteStore, migrate_file, schema_version_of
from tenure.store.sqlite_errors import translate_error
from tenure.store.sqlite_schema import _split_script

LATEST = migrations.latest_version("sqlite")


def _schema(path: Path) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).fetchall()
    conn.close()
    return rows


def _set_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    conn.close()


async def test_a_database_migrated_step_by_step_equals_a_fresh_one(tmp_path: Path) -> None:
    stepwise, fresh = tmp_path / "stepwise.db", tmp_path / "fresh.db"
    for version in range(1, LATEST + 1):
        applied = migrate_file(stepwise, target=version)
        assert [m.version for m in applied] == [version]
        assert schema_version_of(stepwise) == version
    store = await SqliteStore.open(fresh, FakeClock())
    await store.close()
    assert _schema(stepwise) == _schema(fresh)
    assert schema_version_of(fresh) == LATEST
    assert {row[1] for row in _schema(fresh)} >= {
        "boards", "agents", "tasks", "leases", "events", "comments", "counters", "outbox", "meta",
        "leases_one_live_per_task", "leases_live_by_recover_after", "tasks_claim_order",
    }  # fmt: skip


async def test_migrating_an_up_to_date_database_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    assert [m.version for m in migrate_file(path)] == list(range(1, LATEST + 1))
    before = _schema(path)
    assert migrate_file(path) == []
    store = await SqliteStore.open(path, FakeClock())
    assert await store.schema_version() == LATEST
    await store.close()
    assert _schema(path) == before


async def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    migrate_file(path)
    _set_version(path, LATEST + 1)
    with pytest.raises(migrations.SchemaTooNew) as caught:
        await SqliteStore.open(path, FakeClock())
    assert isinstance(caught.value, StoreUnavailable)
    assert f"schema version {LATEST + 1}" in caught.value.message
    assert f"({LATEST})" in caught.value.message
    with pytest.raises(migrations.SchemaTooNew):
        migrate_file(path)


async def test_without_migrate_a_database_that_needs_migrations_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with pytest.raises(migrations.SchemaOutdated, match="tenure db migrate"):
        await SqliteStore.open(path, FakeClock(), migrate=False)
    assert schema_version_of(path) == 0
    migrate_file(path)
    store = await SqliteStore.open(path, FakeClock(), migrate=False)
    await store.close()


def test_pending_lists_what_a_version_still_needs() -> None:
    assert migrations.pending("sqlite", 0) == list(migrations.available("sqlite"))
    assert migrations.pending("sqlite", LATEST) == []
    with pytest.raises(migrations.SchemaTooNew):
        migrations.pending("sqlite", LATEST + 1)
    with pytest.raises(ValueError, match="no migrations"):
        migrations.available("oracle")


def test_migrate_runs_each_missing_file_then_records_its_number() -> None:
    scripts: list[str] = []
    applied = migrations.migrate("sqlite", scripts.append, lambda: 0)
    assert [m.version for m in applied] == list(range(1, LATEST + 1))
    assert scripts[0] == migrations.available("sqlite")[0].sql
    assert scripts[1] == migrations.version_statement(1)
    assert "'schema_version', '1'" in scripts[1]
    assert migrations.migrate("sqlite", scripts.append, lambda: LATEST) == []
    assert len(scripts) == 2 * LATEST


def test_a_script_splits_into_whole_statements() -> None:
    script = """
    -- a comment line
    CREATE TABLE a (x TEXT DEFAULT ';');
    CREATE TRIGGER t AFTER INSERT ON a BEGIN
        INSERT INTO a VALUES ('in; trigger');
    END;
    """
    statements = _split_script(script)
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    with pytest.raises(ValueError, match="incomplete"):
        _split_script("CREATE TABLE b (x")


async def test_the_writer_uses_wal_normal_sync_and_foreign_keys(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "t.db", FakeClock())

    def pragmas(tx: Any) -> tuple[Any, ...]:
        return tuple(
            tx.conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        )

    assert await store.run(pragmas) == ("wal", 1, 1, 5000)
    await store.close()


async def test_a_locked_database_is_unavailable_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = await SqliteStore.open(path, FakeClock(), busy_timeout_ms=50)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    board = Board("b1", "B", FakeClock().now())
    with pytest.raises(StoreUnavailable, match="locked"):
        await store.run(lambda tx: tx.insert_board(board))
    # Readers are not blocked by another writer under WAL.
    assert await store.read(lambda tx: tx.list_boards()) == []
    other.execute("ROLLBACK")
    other.close()
    await store.run(lambda tx: tx.insert_board(board))
    assert await store.read(lambda tx: tx.list_boards()) == [board]
    await store.close()


async def test_a_quick_unit_runs_on_the_calling_thread_when_the_writer_is_idle(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "t.db", FakeClock())
    board = Board("b1", "B", FakeClock().now())

    def insert(tx: Any) -> int:
        tx.insert_board(board)
        return threading.get_ident()

    assert await store.run(insert, quick=True) == threading.get_ident()
    # Not quick: the writer thread, as ever.
    assert await store.run(lambda tx: threading.get_ident()) != threading.get_ident()
    assert await store.read(lambda tx: tx.list_boards()) == [board]
    await store.close()


async def test_a_quick_unit_waits_on_the_writer_thread_when_another_process_writes(
    tmp_path: Path,
) -> None:
    """The file's write lock taken by another process: the quick unit does not
    block the event loop waiting for it, it waits on the writer thread, and
    commits once the lock is free."""
    path = tmp_path / "t.db"
    store = await SqliteStore.open(path, FakeClock(), busy_timeout_ms=10_000)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    board = Board("b1", "B", FakeClock().now())
    where: list[int] = []

    def insert(tx: Any) -> None:
        where.append(threading.get_ident())
        tx.insert_board(board)

    pending = asyncio.create_task(store.run(insert, quick=True))
    # The event loop is free meanwhile (this line runs), and the unit waits.
    done, _ = await asyncio.wait({pending}, timeout=0.3)
    assert not done
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(pending, timeout=10)
    assert where and where[-1] != threading.get_ident()
    assert await store.read(lambda tx: tx.list_boards()) == [board]
    # The writer waits for the lock again on its own thread, and runs inline when idle.
    assert await store.run(lambda tx: threading.get_ident(), quick=True) == threading.get_ident()
    await store.close()


async def test_the_writer_is_idle_again_before_its_callers_wake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller woken by the writer thread finds the writer idle: the quick
    unit it sends at once runs inline, not queued behind a drain that has
    delivered its last result but not yet said it is done (seen in CI, on a
    loaded machine, where the writer thread can lose the CPU right after
    waking its caller: simulated here by a pause after each delivery)."""
    deliver = sqlite_store._deliver

    def deliver_then_pause(*args: Any) -> None:
        deliver(*args)
        time.sleep(0.02)

    monkeypatch.setattr(sqlite_store, "_deliver", deliver_then_pause)
    store = await SqliteStore.open(tmp_path / "t.db", FakeClock())
    here = threading.get_ident()
    for _ in range(10):
        assert await store.run(lambda tx: threading.get_ident()) != here
        assert await store.run(lambda tx: threading.get_ident(), quick=True) == here
    await store.close()


async def test_a_quick_unit_queues_behind_a_busy_writer_and_commits_in_order(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "t.db", FakeClock())
    release = threading.Event()
    order: list[str] = []

    entered = threading.Event()

    def slow(tx: Any) -> None:
        entered.set()
        release.wait(10)
        order.append("slow")
        tx.insert_board(Board("b1", "B", tx.now))

    def quick(tx: Any) -> int:
        order.append("quick")
        tx.insert_board(Board("b2", "B", tx.now))
        return threading.get_ident()

    first = asyncio.create_task(store.run(slow))
    assert await asyncio.to_thread(entered.wait, 10)  # the writer thread is in `slow`
    second = asyncio.create_task(store.run(quick, quick=True))
    done, _ = await asyncio.wait({second}, timeout=0.2)
    assert not done  # the writer is busy: the quick unit waits its turn
    release.set()
    await first
    assert await second != threading.get_ident()
    assert order == ["slow", "quick"]
    assert [b.id for b in await store.read(lambda tx: tx.list_boards())] == ["b1", "b2"]
    await store.close()


async def test_a_quick_read_runs_on_the_calling_thread_and_elsewhere_when_busy(
    tmp_path: Path,
) -> None:
    """A quick read (a token's owner) runs on the event loop's thread. If SQLite
    answers busy there, it never waits on that thread: it runs again on a
    reader thread. (A WAL reader is rarely busy; here the read itself meets a
    real SQLITE_BUSY, from a write lock another connection holds.)"""
    path = tmp_path / "t.db"
    store = await SqliteStore.open(path, FakeClock())
    board = Board("b1", "B", FakeClock().now())
    await store.run(lambda tx: tx.insert_board(board))
    loop_thread = threading.get_ident()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    def boards(tx: Any) -> tuple[list[Board], int]:
        if threading.get_ident() == loop_thread and busy:
            probe = sqlite3.connect(path, isolation_level=None, timeout=0)
            try:
                probe.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise translate_error(exc) from exc
            finally:
                probe.close()
        return tx.list_boards(), threading.get_ident()

    busy = False
    assert await store.read(boards, quick=True) == ([board], loop_thread)
    busy = True
    found, thread = await store.read(boards, quick=True)
    assert found == [board] and thread != loop_thread
    # Other failures are not tried again.
    calls: list[int] = []

    def gone(tx: Any) -> None:
        calls.append(threading.get_ident())
        raise StoreUnavailable("the disk went away")

    with pytest.raises(StoreUnavailable, match="disk"):
        await store.read(gone, quick=True)
    assert calls == [loop_thread]
    other.execute("ROLLBACK")
    other.close()
    await store.close()


async def test_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not an SQLite database at all" * 200)
    with pytest.raises(StoreUnavailable):
        await SqliteStore.open(path, FakeClock())


async def test_readers_cannot_write(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "t.db", FakeClock())
    with pytest.raises(StoreUnavailable):
        await store.read(lambda tx: tx.set_meta("k", "v"))
    assert await store.read(lambda tx: tx.get_meta("k")) is None
    await store.close()


def test_driver_errors_become_tenure_errors() -> None:
    unique = sqlite3.IntegrityError("UNIQUE constraint failed: boards.id")
    assert isinstance(translate_error(unique, "board 'b1'"), Conflict)
    assert "board 'b1' already exists" in translate_error(unique, "board 'b1'").message
    live = sqlite3.IntegrityError("UNIQUE constraint failed: leases.board_id, leases.task_id")
    assert "already has a live lease" in translate_error(live, "lease").message
    assert isinstance(
        translate_error(sqlite3.OperationalError("database is locked")), StoreUnavailable
    )
    assert isinstance(translate_error(sqlite3.OperationalError("disk I/O error")), StoreUnavailable)
    other = translate_error(sqlite3.OperationalError("no such table: x"))
    assert not isinstance(other, StoreUnavailable) and other.code == "internal"


async def test_the_due_and_claim_queries_walk_their_indexes(tmp_path: Path) -> None:
    from tenure.store import sqlite_tx

    store = await SqliteStore.open(tmp_path / "t.db", FakeClock())

    def plan(sql: str, params: tuple[Any, ...]) -> Any:
        def unit(tx: Any) -> str:
            rows = tx.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
            return " | ".join(row[-1] for row in rows)

        return store.read(unit)

    due_sql = (
        f"{sqlite_tx._LEASE_SELECT} INDEXED BY leases_live_by_recover_after "
        "WHERE ended_at IS NULL AND recover_after <= ? ORDER BY recover_after LIMIT ?"
    )
    due = await plan(due_sql, ("2026", 10))
    assert "leases_live_by_recover_after" in due and "TEMP B-TREE" not in due
    claim = await plan(sqlite_tx._CLAIM_CANDIDATES, ("b1", 16))
    assert "tasks_claim_order" in claim and "TEMP B-TREE" not in claim

    # Statistics taken on a small board must not turn the claim into a sort
    # of every todo task once the board has grown.
    def grow(tx: Any) -> None:
        tx.insert_board(Board(id="b1", name="b", created_at=tx.now))
        for i in range(3):  # none todo when the statistics are taken
            tx.insert_task(Task(board_id="b1", id=f"t{i}", title="t", created_at=tx.now,
                                updated_at=tx.now, status=TaskStatus.IN_PROGRESS))  # fmt: skip
        tx.conn.execute("ANALYZE")
        for i in range(3, 300):
            tx.insert_task(Task(board_id="b1", id=f"t{i}", title="t", created_at=tx.now,
                                updated_at=tx.now))  # fmt: skip

    await store.run(grow)
    await store.close()
    store = await SqliteStore.open(tmp_path / "t.db", FakeClock())  # reads the statistics
    claim = await plan(sqlite_tx._CLAIM_CANDIDATES, ("b1", 16))
    assert "tasks_claim_order" in claim and "TEMP B-TREE" not in claim
    await store.close()
