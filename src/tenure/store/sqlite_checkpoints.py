"""The SQLite store's checkpointer: a thread that folds the WAL back into
the database file, so no commit pays for it.

A checkpoint copies the WAL's pages into the file and syncs it. Run by
the committing connection (SQLite's default, every 1,000 pages), it would
stall whichever unit of work's COMMIT crossed the line, on the event
loop's thread as often as not. Here a thread of its own runs a PASSIVE
checkpoint every CHECKPOINT_INTERVAL_S on a connection of its own, and the
writer connection checkpoints by itself only past WRITER_CHECKPOINT_PAGES,
a backstop.

PASSIVE never waits for the writer or the readers; it copies what it can,
and once a pass has copied the whole WAL the writer starts it over, so the
WAL stays small while writes leave gaps. Under writes that never pause (a
bench's 4,000 renewals a second), a pass never reaches the WAL's end
before the next commit, and the WAL grows until the writer's own
checkpoint (some 80 MB), which then has little left to copy (a commit of
5-20 ms, every 20,000 pages). Checkpointing on the writer every 1,000
pages cost more in that bench: some 7 ms each, and 52-59 us of COMMIT per
renewal in all against 34-40.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

#: How often the checkpointer folds the WAL back into the database file.
CHECKPOINT_INTERVAL_S = 0.5
#: WAL pages after which the writer checkpoints by itself: a backstop only,
#: for a checkpointer that cannot keep up (SQLite's default is 1000).
WRITER_CHECKPOINT_PAGES = 20_000


class Checkpointer:
    """The checkpointer thread of one database file."""

    def __init__(self, path: str | Path) -> None:
        self._path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="tenure-sqlite-checkpoint", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the pass under way, if any (blocks until then)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        # A failure (the file busy, gone for a moment) is retried at the next tick.
        conn: sqlite3.Connection | None = None
        while not self._stop.wait(CHECKPOINT_INTERVAL_S):
            try:
                if conn is None:
                    conn = sqlite3.connect(self._path, isolation_level=None, timeout=0)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
