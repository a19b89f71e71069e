"""Which Tenure servers run on a PostgreSQL database: a presence lock.

MCP sessions live in the memory of the server that serves them, and a
server that stops (or crashes) never closes them in the database: the
agents' open-session counts stay up, and an agent whose count never falls
back to 0 is never noticed leaving. A server may set them all to 0 at its
start only when no other server runs on the database, since any other may
hold sessions.

Every server says it runs by holding a shared session-level advisory lock
(`PRESENCE_KEY`) on a connection of its own for as long as it runs; when
its process ends, however it ends, PostgreSQL drops the connection and the
lock with it. A server that holds the lock and counts one holder is alone.
Two servers starting together both hold before they count, so each counts
two and neither resets.

One window remains: a running server whose lock connection was lost (the
database restarted) takes the lock again within about `CHECK_S` seconds,
and a server starting in between counts itself alone and resets the counts
of the sessions the other still holds. An agent with sessions on both may
then be seen leaving when one of them closes; its next call clears that.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from tenure.store.postgres_dedicated import hold

#: The presence lock: "tenure" and 3 (1 is the events lock,
#: `postgres_log.EVENTS_LOCK_KEY`; 2 the migrations', `postgres_schema.MIGRATE_LOCK_KEY`).
PRESENCE_KEY = 0x74656E7572650003

#: How often the lock's connection is checked, in seconds.
CHECK_S = 2.0

_HOLDERS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid = %s AND objid = %s AND objsubid = 1"
)


class Presence:
    """This server's presence lock, held by a thread of its own that takes
    it again after its connection is lost."""

    def __init__(self, dsn: str, connect_timeout: float) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        #: Set while the lock is held.
        self.held = threading.Event()

    def start(self) -> None:
        """Take the lock (in the background); `held` says when it is."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._hold, name="tenure-pg-presence", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Let go of the lock (its connection closes)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _hold(self) -> None:
        hold(self._dsn, self._connect_timeout, self._stop, self._keep, self.held.clear, "presence")

    def _keep(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT pg_advisory_lock_shared(%s)", (PRESENCE_KEY,))
        self.held.set()
        while not self._stop.wait(CHECK_S):
            conn.execute("SELECT 1")  # a lost connection shows here


def holders(conn: psycopg.Connection[Any]) -> int:
    """How many sessions hold the presence lock on `conn`'s database."""
    row = conn.execute(_HOLDERS, (PRESENCE_KEY >> 32, PRESENCE_KEY & 0xFFFFFFFF)).fetchone()
    return int(row[0]) if row else 0
