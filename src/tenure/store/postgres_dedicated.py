"""A connection of its own, held by a background thread until told to stop.

The event listener (`tenure.store.postgres_follow`) and the presence lock
(`tenure.store.postgres_presence`) each keep one connection outside the
pool for as long as the store is open, and take it again, with growing
pauses, whenever it is lost (a database restart, a terminated backend).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from tenure.store.postgres_schema import connect_kwargs

log = logging.getLogger(__name__)

#: Pauses between attempts to reconnect, in seconds: from the first to the longest.
FIRST_PAUSE_S = 0.1
LONGEST_PAUSE_S = 5.0


def hold(
    dsn: str,
    connect_timeout: float,
    stop: threading.Event,
    use: Callable[[psycopg.Connection[Any]], None],
    lost: Callable[[], None],
    what: str,
) -> None:
    """Connect and run `use(conn)` until `stop` is set; when the connection
    fails, call `lost()`, pause, and connect again. `use` returns once
    `stop` is set (or raises when its connection fails)."""
    pause = FIRST_PAUSE_S
    while not stop.is_set():
        try:
            with psycopg.connect(dsn, **connect_kwargs(dsn, connect_timeout)) as conn:
                pause = FIRST_PAUSE_S
                use(conn)
        except psycopg.Error:
            log.warning("%s lost its connection; reconnecting", what, exc_info=True)
        lost()
        stop.wait(pause)
        pause = min(pause * 2, LONGEST_PAUSE_S)
