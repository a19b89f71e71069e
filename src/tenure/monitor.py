"""The monitor: finds leases past their recover-after and lets the core decide.

Each pass reads the leases that are due through the recover-after index (its
cost follows the number due, not the number live), probes worktree evidence
for those that need it outside every transaction and several at once, then
judges each batch in one transaction (one commit per batch, not per lease),
every lease re-read inside it and written conditional on its version: a
lease an agent renewed meanwhile is left alone, and a batch that lost any
race is judged again lease by lease, each in its own transaction. `Monitor.run` loops
the pass every `interval` seconds inside the server's task group; if it
raises, the task group (and so the server) stops, never half alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from tenure.core import detector
from tenure.core.decisions import ChangeKind, Evidence, Extend, Recover, Release, Signal, Wait
from tenure.core.errors import Conflict
from tenure.core.model import Agent, Board, Lease, Task
from tenure.service import Coordinator
from tenure.store.base import Tx
from tenure.units import Effects, RaceLost, write

log = logging.getLogger("tenure.monitor")


class EvidenceSource(Protocol):
    """Looks at an agent's worktree for signs of life (see `tenure.evidence`)."""

    async def probe(
        self, lease: Lease, agent: Agent | None, board: Board | None
    ) -> Evidence | None:
        """What the worktree shows now, or None when there is nothing to look at."""


@dataclass
class PassResult:
    """What one pass did."""

    due: int = 0
    probed: int = 0
    recovered: int = 0
    dead_lettered: int = 0
    released: int = 0
    extended: int = 0
    signalled: int = 0
    waiting: int = 0
    skipped: int = 0
    duration_s: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(
            self.recovered or self.dead_lettered or self.released or self.extended or self.signalled
        )


@dataclass
class MonitorStats:
    """Running totals of the monitor, for `statistics()` and /readyz."""

    passes: int = 0
    last_pass_at: datetime | None = None
    last: PassResult = field(default_factory=PassResult)
    totals: dict[str, int] = field(default_factory=dict)


class Monitor:
    """SPEC's monitor over a Coordinator."""

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        interval: float = 10.0,
        batch_size: int = 200,
        evidence: EvidenceSource | None = None,
        probe_concurrency: int = 8,
        on_pass: Callable[[PassResult], Awaitable[None] | None] | None = None,
    ) -> None:
        self.c = coordinator
        self.interval = interval
        self.batch_size = max(1, batch_size)
        self.max_per_pass = self.batch_size * 50
        self.evidence = evidence
        self._probe_slots = asyncio.Semaphore(max(1, probe_concurrency))
        self.stats = MonitorStats()
        self.on_pass = on_pass
        self._stopping = asyncio.Event()
        self._callbacks: set[asyncio.Future[None]] = set()

    def statistics(self) -> MonitorStats:
        """The monitor's running figures."""
        return self.stats

    async def run(self) -> None:
        """Pass every `interval` seconds until `stop()`; errors propagate.

        Passes start `interval` apart (a pass's own duration is taken off the
        pause after it), so a lease falls due at most one interval before a
        pass looks at it, as SPEC's bound (deadline plus one interval) needs,
        however long passes take under load.
        """
        while not self._stopping.is_set():
            result = await self.run_pass()
            await self._pause(max(0.0, self.interval - result.duration_s))

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds` between passes, or until `stop()`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def stop(self) -> None:
        """Finish the pass in flight, then return from `run`."""
        self._stopping.set()

    async def run_pass(self) -> PassResult:
        """One pass over the leases due now, in batches of `batch_size`.

        At most `max_per_pass` leases are judged per pass, so a backlog is worked
        off over several passes instead of stalling one.
        """
        started = time.perf_counter()
        result = PassResult()
        due = await self.c.store.read(lambda tx: tx.due_leases(tx.now, self.max_per_pass))
        result.due = len(due)
        for first in range(0, len(due), self.batch_size):
            await self._judge_batch(due[first : first + self.batch_size], result)
        result.duration_s = time.perf_counter() - started
        self._record(result)
        return result

    async def _judge_batch(self, leases: list[Lease], result: PassResult) -> None:
        evidence: dict[tuple[str, str, int], Evidence | None] = {}
        if self.evidence is not None:
            context = await self.c.store.read(lambda tx: _context(tx, leases))
            wanted = [
                (lease, agent, board)
                for lease, (task_ok, agent, board) in zip(leases, context, strict=True)
                if task_ok
            ]
            probes = await asyncio.gather(*(self._probe(*item) for item in wanted))
            for (lease, _agent, _board), found in zip(wanted, probes, strict=True):
                evidence[_key(lease)] = found
                result.probed += 1
        await self._judge_together(leases, evidence, result)

    async def _probe(
        self, lease: Lease, agent: Agent | None, board: Board | None
    ) -> Evidence | None:
        assert self.evidence is not None
        async with self._probe_slots:
            try:
                return await self.evidence.probe(lease, agent, board)
            except Exception:  # a probe failure is "no evidence", never a dead monitor
                log.warning(
                    "evidence probe failed for %s/%s", lease.board_id, lease.task_id, exc_info=True
                )
                return None

    async def _judge_together(
        self,
        leases: list[Lease],
        evidence: dict[tuple[str, str, int], Evidence | None],
        result: PassResult,
    ) -> None:
        """Judge a batch in one transaction: one commit (and, on SQLite, one trip to
        the writer thread) for the batch instead of one per lease.

        Each lease is still judged from a read made inside the transaction and
        written conditional on its version. If any of them lost a race (or the
        database aborted the transaction, as PostgreSQL may to break a deadlock
        with an agent's call), nothing of the batch is kept and each lease is
        judged again in a transaction of its own, as a lone lease always was.
        """
        if len(leases) == 1:
            await self._judge(leases[0], evidence.get(_key(leases[0])), result)
            return
        effects = Effects()

        def unit(tx: Tx) -> list[str]:
            # Every task of the batch locked, and every live lease read, in two
            # statements (on PostgreSQL: two round trips, not two per lease);
            # the updates then travel together too, checked as they land.
            keys = sorted({(seen.board_id, seen.task_id) for seen in leases})
            tasks = tx.lock_tasks(keys)
            live = tx.live_leases_of_tasks(keys)
            tx.write_together()
            return [
                self._decide(
                    tx,
                    effects,
                    seen,
                    evidence.get(_key(seen)),
                    read=(
                        tasks.get((seen.board_id, seen.task_id)),
                        live.get((seen.board_id, seen.task_id)),
                    ),
                )
                for seen in leases
            ]

        try:
            outcomes = await self.c.store.run(unit)
        except (RaceLost, Conflict):
            for lease in leases:
                await self._judge(lease, evidence.get(_key(lease)), result)
            return
        self.c.publish(effects)
        for outcome in outcomes:
            setattr(result, outcome, getattr(result, outcome) + 1)
        if effects.error is not None:
            raise effects.error

    async def _judge(self, seen: Lease, evidence: Evidence | None, result: PassResult) -> None:
        outcome = await self.c.run(lambda tx, effects: self._decide(tx, effects, seen, evidence))
        setattr(result, outcome, getattr(result, outcome) + 1)

    def _decide(
        self,
        tx: Tx,
        effects: Effects,
        seen: Lease,
        evidence: Evidence | None,
        read: tuple[Task | None, Lease | None] | None = None,
    ) -> str:
        """Judge one due lease inside `tx` and write the decision; the outcome's name.

        `read`: its task (locked) and live lease, read in this transaction
        already (a batch reads them all at once); else they are read here.
        """
        policy = self.c.policy
        if read is None:
            task = tx.get_task(seen.board_id, seen.task_id, for_update=True)
            lease = tx.live_lease(seen.board_id, seen.task_id)
        else:
            task, lease = read
        if task is None or lease is None or lease.epoch != seen.epoch:
            return "skipped"
        if lease.recover_after > tx.now:
            return "skipped"  # a signal arrived since the read: no longer due
        decision = detector.decide(task, lease, tx.now, policy, evidence)
        if isinstance(decision, Wait):
            return "waiting"
        change = detector.apply(decision, task, lease, tx.now, policy)
        write(tx, change, effects)
        if isinstance(decision, Recover):
            return "dead_lettered" if change.kind is ChangeKind.DEAD_LETTERED else "recovered"
        if isinstance(decision, Release):
            return "released"
        if isinstance(decision, Extend):
            return "extended"
        if isinstance(decision, Signal):
            return "signalled"
        return "skipped"  # pragma: no cover - Decision is exhaustive

    def _record(self, result: PassResult) -> None:
        self.stats.passes += 1
        self.stats.last = result
        for name in ("recovered", "dead_lettered", "released", "extended", "signalled"):
            self.stats.totals[name] = self.stats.totals.get(name, 0) + getattr(result, name)
        if result.changed:
            log.info(
                "monitor pass: %d due, %d recovered, %d dead-lettered, %d released, "
                "%d extended, %d signalled, %d waiting (%.1f ms)",
                result.due,
                result.recovered,
                result.dead_lettered,
                result.released,
                result.extended,
                result.signalled,
                result.waiting,
                result.duration_s * 1000,
            )
        if self.on_pass is not None:
            outcome = self.on_pass(result)
            if outcome is not None:
                self._callbacks.add(asyncio.ensure_future(outcome))
                self._callbacks = {t for t in self._callbacks if not t.done()}


def _key(lease: Lease) -> tuple[str, str, int]:
    return (lease.board_id, lease.task_id, lease.epoch)


def _context(tx: Tx, leases: list[Lease]) -> list[tuple[bool, Agent | None, Board | None]]:
    """For each lease: whether evidence could matter, its agent and its board."""
    out: list[tuple[bool, Agent | None, Board | None]] = []
    boards: dict[str, Board | None] = {}
    for lease in leases:
        task = tx.get_task(lease.board_id, lease.task_id)
        if lease.board_id not in boards:
            boards[lease.board_id] = tx.get_board(lease.board_id)
        wanted = task is not None and detector.needs_evidence(task, lease)
        out.append((wanted, tx.get_agent(lease.board_id, lease.agent_id), boards[lease.board_id]))
    return out
