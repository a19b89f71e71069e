"""Following the event log on PostgreSQL: one LISTEN connection per store.

Each event append does `pg_notify('tenure_events', '<id>')`, delivered at
commit. A `Follower` keeps one dedicated connection listening, on a thread
of its own, and wakes the coroutines waiting for an id above theirs, so a
follower on any replica wakes when any replica appends.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg

from tenure.store.postgres_dedicated import hold
from tenure.store.postgres_log import EVENTS_CHANNEL

#: How long the listener waits for a notification before checking whether
#: it should stop, in seconds.
_LISTEN_POLL_S = 0.2

_Waiter = tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]


class Follower:
    """The store's listener thread and who waits on it. Started by the first
    wait (or `listen`); `stop` then `close` end it."""

    def __init__(self, dsn: str, connect_timeout: float) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        # The highest event id the listener has seen, and who waits.
        self._seen_lock = threading.Lock()
        self._seen_max = 0
        self._waiters: list[_Waiter] = []
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self._listening = threading.Event()

    async def wait(self, after_id: int, timeout: float) -> None:
        """Return once an event with id > `after_id` may exist, or after `timeout` s."""
        self._ensure_listener()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (after_id, loop, future)
        with self._seen_lock:
            if self._seen_max > after_id:
                return
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._seen_lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)

    async def listen(self, timeout: float) -> bool:
        """Start listening now; True once LISTEN is in place."""
        self._ensure_listener()
        return await asyncio.to_thread(self._listening.wait, timeout)

    def stop(self) -> None:
        """Ask the listener thread to end (it notices within `_LISTEN_POLL_S`)."""
        self._stop.set()

    def join(self) -> None:
        """Wait for the listener thread to end (after `stop`)."""
        if self._listener is not None:
            self._listener.join()

    def release(self) -> None:
        """Wake every waiter: nothing more will be heard."""
        with self._seen_lock:
            waiters, self._waiters = self._waiters, []
        for _, loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    def _ensure_listener(self) -> None:
        if self._listener is not None:
            return
        self._listener = threading.Thread(target=self._listen, name="tenure-pg-listen", daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        """The listener thread: LISTEN, and pass every notified id to `_saw`.

        After each (re)connection it reads the highest id, so nothing
        committed while it was not listening is missed.
        """
        hold(
            self._dsn,
            self._connect_timeout,
            self._stop,
            self._follow,
            self._listening.clear,
            "the event listener",
        )

    def _follow(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(f"LISTEN {EVENTS_CHANNEL}")
        row = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
        self._saw(int(row[0]) if row else 0)
        self._listening.set()
        while not self._stop.is_set():
            for note in conn.notifies(timeout=_LISTEN_POLL_S):
                if note.payload.isdigit():  # anyone may NOTIFY the channel
                    self._saw(int(note.payload))

    def _saw(self, event_id: int) -> None:
        with self._seen_lock:
            if event_id <= self._seen_max:
                return
            self._seen_max = event_id
            woken = [entry for entry in self._waiters if entry[0] < event_id]
            for entry in woken:
                self._waiters.remove(entry)
        for _, loop, future in woken:
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
