"""Retention: old events and comments leave the store, a small batch at a time.

`events.retention_days` (0: keep everything) says how long the history is
kept. What may go is decided by the store (`Tx.prune_events`,
`Tx.prune_comments`): only rows older than the cutoff whose task is `done`,
has been deleted, or (events) that name no task. The history of a task not
yet done, and so of every live lease, stays whatever its age: it is what a
person reads when a task goes wrong.

`prune` deletes in batches of `batch_size` rows, one short transaction each,
so agents' renewals never wait behind one long delete. `Pruner` is the
server's worker that runs it every `events.prune_interval` seconds beside
the monitor; every replica may run one (the PostgreSQL store skips rows
another replica is deleting). `tenure events prune` runs it by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from tenure.store.base import Store

log = logging.getLogger("tenure.retention")


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What one pruning round deleted."""

    before: datetime
    events: int = 0
    comments: int = 0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return {"before": self.before.isoformat(), "events": self.events, "comments": self.comments}


def cutoff(now: datetime, retention_days: float) -> datetime:
    """The moment before which history may be pruned, `retention_days` before `now`."""
    return now - timedelta(days=retention_days)


async def prune(
    store: Store,
    before: datetime,
    *,
    batch_size: int = 500,
    should_stop: asyncio.Event | None = None,
) -> PruneResult:
    """Delete every prunable event and comment older than `before`, batch by batch.

    Returns when nothing older is left to delete, or early once `should_stop`
    is set (the rest waits for the next round).
    """
    limit = max(1, batch_size)
    events = comments = 0
    for what in ("events", "comments"):
        while should_stop is None or not should_stop.is_set():
            if what == "events":
                gone = await store.run(lambda tx: tx.prune_events(before, limit))
                events += gone
            else:
                gone = await store.run(lambda tx: tx.prune_comments(before, limit))
                comments += gone
            if gone < limit:
                break
    return PruneResult(before, events, comments)


async def prune_older_than(store: Store, days: float, *, batch_size: int = 500) -> PruneResult:
    """`prune` with the cutoff `days` before the store's now."""
    now = await store.read(lambda tx: tx.now)
    return await prune(store, cutoff(now, days), batch_size=batch_size)


class Pruner:
    """The server's retention worker: a pruning round every `interval` seconds.

    Started and stopped with the monitor (`run` / `stop`). A round that fails
    (the database away for a moment) is logged and tried again next time:
    retention never stops the server.
    """

    def __init__(
        self,
        store: Store,
        *,
        retention_days: float,
        batch_size: int = 500,
        interval: float = 3600.0,
    ) -> None:
        self.store = store
        self.retention_days = retention_days
        self.batch_size = batch_size
        self.interval = interval
        self.rounds = 0
        self.last: PruneResult | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Prune now, then every `interval` seconds, until `stop()`."""
        while not self._stopping.is_set():
            await self.run_round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)

    def stop(self) -> None:
        """Finish the batch in flight, then return from `run`."""
        self._stopping.set()

    async def run_round(self) -> PruneResult | None:
        """One round: everything prunable now, or None if the store failed."""
        try:
            now = await self.store.read(lambda tx: tx.now)
            result = await prune(
                self.store,
                cutoff(now, self.retention_days),
                batch_size=self.batch_size,
                should_stop=self._stopping,
            )
        except Exception:
            log.warning("pruning old events failed; trying again next round", exc_info=True)
            return None
        self.rounds += 1
        self.last = result
        if result.events or result.comments:
            log.info(
                "pruned %d events and %d comments older than %s",
                result.events,
                result.comments,
                result.before.isoformat(),
            )
        return result


__all__ = ["PruneResult", "Pruner", "cutoff", "prune", "prune_older_than"]
