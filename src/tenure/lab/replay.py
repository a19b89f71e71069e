"""Replay a trace through the real engine and score what it did.

`replay(trace, policy)` builds what a server runs, on a `FakeClock`: a
SQLite store in a temporary file, the real `Coordinator` under `policy`, and
the real `Monitor` with a `TraceEvidence` source fed by the trace's `write`
and `conflict_*` lines. It then walks the trace:

- the clock jumps from line to line and to each monitor pass (every
  `interval_s`, at 0, interval, 2 x interval...); lines at time t are applied
  before a pass at t;
- `assign` goes through the admin assign path for exactly that task and
  agent; `progress` and `complete` are progress reports; `activity` is any
  other call (a touch); `disconnect` closes the agent's last session
  (`Coordinator.session_closed`, `dropped=True` for `"how": "dropped"`; an
  explicit close after a drop, as the MCP endpoint reports a DELETE after a
  drop), and its next call opens one again; `write` and `conflict_*` only change what the
  worktree shows; `death` is never shown to the engine;
- every line of a stint is fed even after a recovery: the engine's answers
  (revival, claim-back, `lease_lost`) are its own; refusals are counted by
  code in `Scores.refusals`;
- after the last line, passes go on (up to `tail_s`) until the task of every
  dead agent has been taken back.

The scores are then read from the event log (`lease.recovered`,
`task.dead_lettered`, `lease.reclaimed`, `lease.revived`), so they measure
what the engine recorded, not a second model of it.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tenure.auth import ADMIN, Caller, Role
from tenure.clock import FakeClock
from tenure.core.decisions import Evidence, Report
from tenure.core.errors import InvalidInput, TenureError
from tenure.core.model import Agent, Board, Lease
from tenure.core.policy import Policy
from tenure.lab.policies import lab_policy
from tenure.lab.scores import Scores, StintOutcome, score
from tenure.lab.trace import CALLS, Stint, TraceEvent, TraceType, dump_trace, parse_trace, stints
from tenure.monitor import Monitor
from tenure.service import Coordinator, Options
from tenure.sinks import NullSink
from tenure.store.sqlite import open_sqlite

__all__ = ["BOARD", "STANDBY", "START", "ReplayOptions", "TraceEvidence", "replay", "replay_async"]

#: The moment a replayed trace's t = 0 stands for.
START = datetime(2026, 1, 1, tzinfo=UTC)

#: The one board a replay puts every task and agent on.
BOARD = "lab"

#: The agent that takes recovered tasks over when `ReplayOptions.takeover_s` is set.
STANDBY = "lab-standby"

#: Event types that mean "the engine took the task from its holder".
_RECOVERY_EVENTS = frozenset({"lease.recovered", "task.dead_lettered"})

# Times go through datetimes with microsecond resolution; compare with slack.
_EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How a replay runs (the engine's own numbers live in the `Policy`).

    - `interval_s`: the monitor's interval (SPEC's default, 10 s, for every
      policy, so policies are compared on their decisions alone).
    - `tail_s`: how long passes go on after the last line, waiting for dead
      agents' tasks to be taken back; a dead stint still held then is
      undetected.
    - `takeover_s`: when set, a task the engine recovered is given that many
      seconds later to a standby agent (the admin assign path), if it is
      still `todo`, and finished by it at once: another agent redid the work,
      so the old holder's later calls get `lease_lost` and its minutes from
      the recovery on are lost. None (the default): the trace alone decides
      who works on what, and a live agent claims a recovered task back at its
      next call.
    - `directory`: where the temporary SQLite file goes (the system default).
    """

    interval_s: float = 10.0
    tail_s: float = 3600.0
    takeover_s: float | None = None
    directory: str | None = None


def _seconds(moment: datetime) -> float:
    return (moment - START).total_seconds()


def _at(t: float) -> datetime:
    return START + timedelta(seconds=t)


class TraceEvidence:
    """Worktree evidence as the trace tells it (an `EvidenceSource`).

    `conflict`: the holder's worktree is between `conflict_start` and
    `conflict_end`. `changed`: a `write` of the holder's happened after the
    lease's last signal (and, the trace being replayed in order, not after now);
    `changed_at`: the time of the latest such write.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.writes: dict[str, list[float]] = defaultdict(list)
        self.conflicts: dict[str, bool] = {}
        self.probes = 0

    def observe(self, event: TraceEvent) -> None:
        """Take in a worktree line of the trace."""
        if event.type is TraceType.WRITE:
            self.writes[event.agent].append(event.t)
        elif event.type is TraceType.CONFLICT_START:
            self.conflicts[event.agent] = True
        elif event.type is TraceType.CONFLICT_END:
            self.conflicts[event.agent] = False

    async def probe(
        self, lease: Lease, agent: Agent | None, board: Board | None
    ) -> Evidence | None:
        """What the holder's worktree shows now."""
        self.probes += 1
        writes = self.writes.get(lease.agent_id, [])
        since = _seconds(lease.last_signal_at) + _EPSILON
        now = self.clock.now()
        upto = bisect.bisect_right(writes, _seconds(now) + _EPSILON)
        changed = bisect.bisect_right(writes, since) < upto
        return Evidence(
            conflict=self.conflicts.get(lease.agent_id, False),
            changed=changed,
            observed_at=now,
            changed_at=min(_at(writes[upto - 1]), now) if changed else None,
        )


def _as_events(trace: Iterable[TraceEvent | Mapping[str, Any]]) -> list[TraceEvent]:
    items = list(trace)
    if all(isinstance(item, TraceEvent) for item in items):
        return [item for item in items if isinstance(item, TraceEvent)]
    return parse_trace(dump_trace(items).splitlines())


class _Replay:
    """One replay's world and bookkeeping."""

    def __init__(self, events: list[TraceEvent], policy: Policy, options: ReplayOptions) -> None:
        self.events = events
        self.policy = policy
        self.options = options
        self.clock = FakeClock(START)
        self.evidence = TraceEvidence(self.clock)
        self.refusals: dict[str, int] = defaultdict(int)
        self.connected: dict[str, bool] = {}
        self.dropped: set[str] = set()  # agents whose last close was a drop
        self.held_at_death: dict[tuple[str, str, float], bool] = {}
        self.stints = stints(events)
        self.dying: dict[tuple[str, float], list[Stint]] = defaultdict(list)
        self.starts: dict[tuple[str, str], list[float]] = defaultdict(list)
        for stint in self.stints:
            self.starts[(stint.agent, stint.task)].append(stint.start)
            if stint.death is not None:
                self.dying[(stint.agent, stint.death)].append(stint)
        self.coordinator: Coordinator
        self.monitor: Monitor
        self.passes = 0
        self.takeovers: list[tuple[float, str]] = []
        self.log_cursor = 0
        self.taken_over = 0

    async def run(self, directory: Path) -> Scores:
        store = await open_sqlite(directory / "replay.db", self.clock)
        try:
            self.coordinator = Coordinator(store, self.policy, Options(), NullSink())
            self.monitor = Monitor(
                self.coordinator, interval=self.options.interval_s, evidence=self.evidence
            )
            await self._populate()
            await self._walk()
            return await self._score()
        finally:
            await store.close()

    async def _populate(self) -> None:
        admin = self.coordinator.admin
        await admin.create_board(ADMIN, BOARD)
        agents = dict.fromkeys(e.agent for e in self.events)
        if self.options.takeover_s is not None:
            if STANDBY in agents:
                raise InvalidInput(f"the trace may not use the agent id {STANDBY!r}")
            agents[STANDBY] = None
        for agent in agents:
            await admin.register_agent(ADMIN, {"agent_id": agent}, BOARD)
        tasks = list(dict.fromkeys(e.task for e in self.events if e.task is not None))
        for first in range(0, len(tasks), 5000):
            batch = [{"id": task, "title": task} for task in tasks[first : first + 5000]]
            await admin.import_tasks(ADMIN, BOARD, batch)

    async def _pass_at(self, t: float) -> None:
        self.clock.set(_at(t))
        result = await self.monitor.run_pass()
        self.passes += 1
        if self.options.takeover_s is not None and (result.recovered or result.dead_lettered):
            await self._schedule_takeovers(t + self.options.takeover_s)

    async def _schedule_takeovers(self, when: float) -> None:
        """Queue the tasks recovered since the last look for the standby agent."""
        page = await self.coordinator.admin.events(ADMIN, BOARD, after=self.log_cursor, limit=5000)
        for row in page:
            self.log_cursor = max(self.log_cursor, row["id"])
            if row["type"] == "lease.recovered":
                heapq.heappush(self.takeovers, (when, row["task_id"]))

    async def _take_over(self, t: float, task: str) -> None:
        """The standby claims a recovered task still on the board and finishes it."""
        self.clock.set(max(self.clock.now(), _at(t)))
        try:
            await self.coordinator.assign(ADMIN, BOARD, task, STANDBY)
        except TenureError:
            return  # claimed back, or dead-lettered: nothing to take over
        done = Report(status="completed", progress=100, message="taken over")
        await self.coordinator.report_progress(self._caller(STANDBY), task, done)
        self.taken_over += 1

    async def _walk(self) -> None:
        """Lines, takeovers and passes in time order (at one moment: takeovers,
        then lines, then the pass), then passes until dead agents' tasks are back."""
        interval = self.options.interval_s
        events, k, i = self.events, 0, 0
        while i < len(events):
            next_line = events[i].t
            if self.takeovers and self.takeovers[0][0] <= min(next_line, k * interval) + _EPSILON:
                await self._take_over(*heapq.heappop(self.takeovers))
            elif k * interval < next_line - _EPSILON:
                await self._pass_at(k * interval)
                k += 1
            else:
                self.clock.set(max(self.clock.now(), _at(next_line)))
                await self._apply(events[i])
                i += 1
        end = events[-1].t if events else 0.0
        waiting = {(s.agent, s.task) for s in self.stints if s.dead}
        while k * interval <= end + self.options.tail_s + _EPSILON:
            await self._pass_at(k * interval)
            k += 1
            if k * interval > end and not await self._still_held(waiting):
                break

    async def _still_held(self, waiting: set[tuple[str, str]]) -> bool:
        if not waiting:
            return False
        leases = await self.coordinator.store.read(lambda tx: tx.live_leases(BOARD))
        return any((lease.agent_id, lease.task_id) in waiting for lease in leases)

    def _caller(self, agent: str) -> Caller:
        return Caller(Role.AGENT, BOARD, agent)

    async def _engine(self, what: str, call: Any) -> None:
        try:
            await call
        except TenureError as error:
            self.refusals[f"{what}:{error.code}"] += 1

    async def _apply(self, event: TraceEvent) -> None:
        c = self.coordinator
        caller = self._caller(event.agent)
        if event.agent not in self.connected:
            self.connected[event.agent] = True
            await c.session_opened(caller)
        if event.type in CALLS and not self.connected[event.agent]:
            # Any call after a disconnect means the agent came back.
            self.connected[event.agent] = True
            self.dropped.discard(event.agent)
            await c.session_opened(caller)
        kind = event.type
        if kind is TraceType.ASSIGN:
            assert event.task is not None
            await self._engine("assign", c.assign(ADMIN, BOARD, event.task, event.agent))
        elif kind is TraceType.PROGRESS:
            assert event.task is not None
            report = Report(progress=event.progress, message=event.message)
            await self._engine("progress", c.report_progress(caller, event.task, report))
        elif kind is TraceType.COMPLETE:
            assert event.task is not None
            done = Report(status="completed", progress=100, message=event.message)
            await self._engine("complete", c.report_progress(caller, event.task, done))
        elif kind is TraceType.ACTIVITY:
            await self._engine("activity", c.touch(caller))
        elif kind is TraceType.DISCONNECT:
            await self._disconnect(caller, event)
        elif kind is TraceType.DEATH:
            await self._record_death(event)
            del self.connected[event.agent]  # a later assign is a new process
            self.dropped.discard(event.agent)
        else:
            self.evidence.observe(event)

    async def _disconnect(self, caller: Caller, event: TraceEvent) -> None:
        """The agent's session ends: closed, or dropped; a close after a drop upgrades it."""
        agent = event.agent
        if self.connected[agent]:
            self.connected[agent] = False
            if event.dropped:
                self.dropped.add(agent)
            await self.coordinator.session_closed(caller, dropped=event.dropped)
        elif agent in self.dropped and not event.dropped:
            self.dropped.discard(agent)
            await self.coordinator.session_closed(caller, after_drop=True)

    async def _record_death(self, event: TraceEvent) -> None:
        """Whether the dying agent still held its task(s): the ground truth's baseline."""
        leases = await self.coordinator.store.read(
            lambda tx: tx.live_leases_of_agent(BOARD, event.agent)
        )
        held = {lease.task_id for lease in leases}
        for stint in self.dying.get((event.agent, event.t), []):
            self.held_at_death[(stint.agent, stint.task, event.t)] = stint.task in held

    async def _log(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        after = 0
        while True:
            page = await self.coordinator.admin.events(ADMIN, BOARD, after=after, limit=5000)
            rows.extend(page)
            if len(page) < 5000:
                return rows
            after = page[-1]["id"]

    async def _score(self) -> Scores:
        recovered: dict[tuple[str, str], list[float]] = defaultdict(list)
        reasons: dict[tuple[str, str, float], str] = {}
        reclaimed: dict[tuple[str, str], list[float]] = defaultdict(list)
        revivals = 0
        log: dict[str, int] = defaultdict(int)
        for row in await self._log():
            log[row["type"]] += 1
            key = (row["agent_id"], row["task_id"])
            t = _seconds(datetime.fromisoformat(row["at"]))
            if row["type"] in _RECOVERY_EVENTS:
                recovered[key].append(t)
                reasons[(*key, t)] = str((row.get("data") or {}).get("reason", ""))
            elif row["type"] == "lease.reclaimed":
                reclaimed[key].append(t)
            elif row["type"] == "lease.revived":
                revivals += 1
        outcomes = [
            self._outcome(s, recovered[(s.agent, s.task)], reclaimed[(s.agent, s.task)], reasons)
            for s in self.stints
        ]
        return score(outcomes, revivals, dict(self.refusals), dict(log))

    def _outcome(
        self,
        stint: Stint,
        recovered: list[float],
        reclaimed: list[float],
        reasons: dict[tuple[str, str, float], str],
    ) -> StintOutcome:
        later = [t for t in self.starts[(stint.agent, stint.task)] if t > stint.start]
        until = stint.end if not stint.dead else min(later, default=float("inf"))
        mine = tuple(sorted(t for t in set(recovered) if stint.start <= t <= until))
        backs = tuple(sorted(t for t in reclaimed if stint.start <= t <= until))
        detected: float | None = None
        lost = 0.0
        if stint.death is not None:
            if not self.held_at_death.get((stint.agent, stint.task, stint.death), True):
                detected = stint.death
            else:
                detected = next((t for t in mine if t >= stint.death - _EPSILON), None)
        else:
            for i, t in enumerate(mine):
                upto = mine[i + 1] if i + 1 < len(mine) else stint.end
                if not any(t < back <= upto for back in backs):
                    lost = max(0.0, stint.end - t)
                    break
        return StintOutcome(
            agent=stint.agent,
            task=stint.task,
            start=stint.start,
            end=stint.end,
            ending=stint.ending,
            death=stint.death,
            closed_session=stint.closed_session,
            dropped_session=stint.dropped_session,
            blips=stint.blips,
            recoveries=mine,
            recovery_reasons=tuple(reasons.get((stint.agent, stint.task, t), "") for t in mine),
            reclaims=backs,
            detected_at=detected,
            lost_s=lost,
        )


async def replay_async(
    trace: Iterable[TraceEvent | Mapping[str, Any]],
    policy: Policy | str = "spec",
    *,
    options: ReplayOptions | None = None,
) -> Scores:
    """`replay` for callers already inside an event loop."""
    events = _as_events(trace)
    chosen = lab_policy(policy) if isinstance(policy, str) else policy
    opts = options or ReplayOptions()
    with tempfile.TemporaryDirectory(prefix="tenure-replay-", dir=opts.directory) as directory:
        return await _Replay(events, chosen, opts).run(Path(directory))


def replay(
    trace: Iterable[TraceEvent | Mapping[str, Any]],
    policy: Policy | str = "spec",
    *,
    options: ReplayOptions | None = None,
) -> Scores:
    """Feed `trace` through the real engine under `policy` and score it.

    `trace`: parsed events (`tenure.lab.trace`) or the dicts `simulate`
    returns; `policy`: a `Policy`, or a name for `tenure.lab.policies.lab_policy`.
    """
    return asyncio.run(replay_async(trace, policy, options=options))
