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

On the same connection each server also holds a lock of its own, keyed by
its server id (`SERVERS_CLASS`, `server_id`): the servers whose lock is
held are running (`running`), and the open sessions recorded under any
other id belong to a server that is gone (`tenure.sessions`).

One window remains: a running server whose lock connection was lost (the
database restarted) takes its locks again within about `CHECK_S` seconds.
A server starting in between counts itself alone and resets the counts
of the sessions the other still holds. (One settling gone servers waits
longer than that before it takes a server for gone: `tenure.sessions`.)
An agent with sessions on both may then be seen leaving when one of them
closes: its leases turn suspect, and its next call clears that.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from tenure.store.postgres_dedicated import hold

#: The presence lock: "tenure" and 3 (1 is the events lock,
#: `postgres_log.EVENTS_LOCK_KEY`; 2 the migrations', `postgres_schema.MIGRATE_LOCK_KEY`).
PRESENCE_KEY = 0x74656E7572650003

#: The first key of each server's own lock ("tn", a 32-bit key of its own);
#: the second is the server's id, from 1 to 2**31 - 1.
SERVERS_CLASS = 0x746E0001

#: How often the lock's connection is checked, in seconds.
CHECK_S = 2.0

_HOLDERS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid = %s AND objid = %s AND objsubid = 1"
)
# A lock taken with two int4 keys shows them as classid and objid, objsubid 2.
_RUNNING = (
    "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid = %s AND objsubid = 2"
)


class Presence:
    """This server's presence locks (the shared one, and its own under
    `server_id`), held by a thread of its own that takes them again after
    their connection is lost."""

    def __init__(self, dsn: str, connect_timeout: float, server_id: int) -> None:
        self._dsn = dsn
        self._server_id = server_id
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
        # Server ids are drawn at random: two running servers sharing one
        # (one chance in a billion for two) would wait here, the second
        # never counted as running.
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (SERVERS_CLASS, self._server_id))
        self.held.set()
        while not self._stop.wait(CHECK_S):
            conn.execute("SELECT 1")  # a lost connection shows here


def holders(conn: psycopg.Connection[Any]) -> int:
    """How many sessions hold the presence lock on `conn`'s database."""
    row = conn.execute(_HOLDERS, (PRESENCE_KEY >> 32, PRESENCE_KEY & 0xFFFFFFFF)).fetchone()
    return int(row[0]) if row else 0


def running(conn: psycopg.Connection[Any]) -> set[int]:
    """The ids of the servers holding their own lock on `conn`'s database."""
    return {int(row[0]) for row in conn.execute(_RUNNING, (SERVERS_CLASS,)).fetchall()}
