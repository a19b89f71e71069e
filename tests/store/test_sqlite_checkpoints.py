"""The SQLite store's checkpointer (`tenure.store.sqlite_checkpoints`): the
WAL is folded back into the file by its thread, not by a commit."""

from __future__ import annotations

import asyncio
import struct
import time
from datetime import UTC, datetime
from pathlib import Path

from tenure.clock import FakeClock
from tenure.core.model import Board
from tenure.store.sqlite import SqliteStore
from tenure.store.sqlite_checkpoints import CHECKPOINT_INTERVAL_S, WRITER_CHECKPOINT_PAGES

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _wal_frames(db: Path) -> tuple[int, int]:
    """(frames in the WAL, frames of it copied into the file), read from the
    WAL index (`-shm`): its header's mxFrame (offset 16) and the checkpoint
    record's nBackfill (offset 96), native byte order (SQLite's file format)."""
    header = (db.parent / f"{db.name}-shm").read_bytes()[:100]
    return struct.unpack_from("=I", header, 16)[0], struct.unpack_from("=I", header, 96)[0]


async def test_the_wal_is_copied_into_the_file_by_the_checkpointer(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = await SqliteStore.open(db, FakeClock())
    try:
        for i in range(200):  # far fewer pages than the writer's own checkpoint needs
            board = Board(f"b{i}", f"Board {i}", T0)
            await store.run(lambda tx, board=board: tx.insert_board(board))
        frames, copied = _wal_frames(db)
        assert 0 < frames < WRITER_CHECKPOINT_PAGES
        deadline = time.monotonic() + 10 * CHECKPOINT_INTERVAL_S + 5
        while copied < frames:
            assert time.monotonic() < deadline, f"{copied} of {frames} WAL frames copied"
            await asyncio.sleep(CHECKPOINT_INTERVAL_S / 5)
            frames, copied = _wal_frames(db)
    finally:
        await store.close()
