"""A fleet of simulated agents, written as a trace (see `tenure.lab.trace`).

`simulate(agents, tasks, seed, profile)` plays `agents` workers through
`tasks` tasks and returns the trace's lines as dicts, sorted by `t`. The same
arguments always give the same trace (one `random.Random(seed)`).

The model (docs/lab.md has it with its sources): each worker takes the next
task, reports progress a number of times, and between reports calls other
tools and writes files in its worktree. Its report gaps come from the
seed's own figures: a lognormal body tuned so all gaps have a median near
47 s and a mean near 60 s, implementation bursts of 116-120 s, 161-215 s
gaps in the last quarter (tests, builds, commits), 60-120 s validator
calls after 100 %, and merge conflicts that take minutes. Some workers die at
a random moment and are replaced: some close their session as they go (their
process exits: an explicit close), some only drop their connection (their
process tree is killed), some die silently (a hang). Live ones sometimes lose
their connection for a moment (a drop, a **blip**) and come back.
Each `Profile` sets these numbers; `PROFILES` holds the named ones.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import Any

from tenure.core.errors import InvalidInput

__all__ = ["PROFILES", "Profile", "profile_names", "simulate"]


@dataclass(frozen=True, slots=True)
class Profile:
    """The numbers of one kind of fleet (seconds unless named otherwise)."""

    name: str
    about: str
    # Report gaps while implementing (progress < tail_from): a lognormal body...
    gap_median_s: float = 44.0
    gap_sigma: float = 0.65
    # ...and implementation bursts.
    burst_p: float = 0.05
    burst_s: tuple[float, float] = (116.0, 120.0)
    # The last quarter: tests, builds, commits.
    tail_from: int = 75
    tail_long_p: float = 0.15
    tail_long_s: tuple[float, float] = (161.0, 215.0)
    # Progress reports per stint, the last one at 100 %.
    reports: tuple[int, int] = (8, 24)
    # Validator calls after 100 %: how many (weights for 1, 2, 3), how long each.
    validator_weights: tuple[float, float, float] = (0.6, 0.3, 0.1)
    validator_s: tuple[float, float] = (60.0, 120.0)
    # Other tool calls and worktree writes between reports (mean seconds apart).
    activity_every_s: float = 150.0
    write_every_s: float = 25.0
    # A gap with no writes at all (reading, thinking, one long model call).
    quiet_p: float = 0.1
    # Writes are this many times rarer during a long tail gap (a test run).
    tail_write_factor: float = 3.0
    # Merge conflicts: chance per stint, lognormal duration, clamped.
    conflict_p: float = 0.06
    conflict_median_s: float = 240.0
    conflict_sigma: float = 0.5
    conflict_s: tuple[float, float] = (60.0, 900.0)
    # Deaths: chance per stint, and the share that end their session; of
    # those, the share whose connection merely drops (a killed process tree:
    # no goodbye) instead of an explicit close (the process exits).
    death_p: float = 0.12
    death_closes_p: float = 0.5
    death_drops_p: float = 0.25
    # Session blips of live agents (dropped connections): expected per stint,
    # and time until the next call reopens the session (lognormal median, sigma).
    blips_per_stint: float = 0.15
    blip_back_median_s: float = 8.0
    blip_back_sigma: float = 0.6
    # Between stints: idle time of a worker, respawn time of a dead one.
    idle_s: tuple[float, float] = (5.0, 30.0)
    respawn_s: tuple[float, float] = (30.0, 120.0)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="seed",
            about="the seed's figures: reports ~47 s median, ~60 s mean, its bursts and tails",
        ),
        Profile(
            name="harsh",
            about="slower agents, longer tails, long quiet spells, few tool calls",
            gap_median_s=85.0,
            gap_sigma=0.75,
            burst_p=0.2,
            burst_s=(150.0, 260.0),
            tail_long_p=0.6,
            tail_long_s=(240.0, 420.0),
            validator_s=(90.0, 240.0),
            activity_every_s=900.0,
            write_every_s=45.0,
            quiet_p=0.2,
            conflict_p=0.1,
            conflict_median_s=420.0,
            blip_back_median_s=15.0,
        ),
        Profile(
            name="chatty",
            about="quick reporters that call tools often",
            gap_median_s=20.0,
            gap_sigma=0.5,
            burst_p=0.05,
            tail_long_p=0.3,
            reports=(12, 36),
            activity_every_s=30.0,
            write_every_s=15.0,
            quiet_p=0.05,
            death_closes_p=0.6,
            blips_per_stint=0.1,
        ),
        Profile(
            name="flaky-sessions",
            about="the seed's rhythm over unreliable connections: many blips, most deaths close",
            blips_per_stint=2.0,
            blip_back_median_s=15.0,
            blip_back_sigma=0.8,
            death_p=0.15,
            death_closes_p=0.8,
        ),
    )
}


def profile_names() -> list[str]:
    """The names `simulate` accepts."""
    return list(PROFILES)


def _profile(name: str | Profile) -> Profile:
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise InvalidInput(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}",
            details={"field": "profile", "value": name},
        )
    return PROFILES[name]


class _Stint:
    """Lines of one stint being written, with the random source and profile."""

    def __init__(self, rng: random.Random, profile: Profile, agent: str, task: str) -> None:
        self.rng = rng
        self.p = profile
        self.agent = agent
        self.task = task
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.blip_pairs: list[tuple[float, float]] = []

    def add(self, t: float, kind: str, **fields: Any) -> None:
        self.lines.append((t, {"type": kind, "agent": self.agent, **fields}))

    def poisson_times(self, start: float, end: float, every_s: float) -> list[float]:
        """Times of a Poisson process with mean spacing `every_s` in (start, end)."""
        times: list[float] = []
        if every_s <= 0 or math.isinf(every_s):
            return times
        t = start + self.rng.expovariate(1.0 / every_s)
        while t < end:
            times.append(t)
            t += self.rng.expovariate(1.0 / every_s)
        return times

    def gap(self, progress: int) -> tuple[float, bool]:
        """The seconds until the next report, and whether it is a long tail gap."""
        p, rng = self.p, self.rng
        if progress >= p.tail_from and rng.random() < p.tail_long_p:
            return rng.uniform(*p.tail_long_s), True
        if progress < p.tail_from and rng.random() < p.burst_p:
            return rng.uniform(*p.burst_s), False
        return rng.lognormvariate(math.log(p.gap_median_s), p.gap_sigma), False

    def between(self, start: float, end: float, *, tail: bool = False) -> None:
        """Tool calls and worktree writes in the open interval (start, end)."""
        p = self.p
        for t in self.poisson_times(start, end, p.activity_every_s):
            self.add(t, "activity")
        if self.rng.random() < p.quiet_p:
            return
        every = p.write_every_s * (p.tail_write_factor if tail else 1.0)
        for t in self.poisson_times(start, end, every):
            self.add(t, "write")

    def work(self, start: float) -> float:
        """Assign, reports, conflicts, validation, completion; returns the end."""
        p, rng = self.p, self.rng
        self.add(start, "assign", task=self.task)
        t = start + rng.uniform(1.0, 5.0)
        self.add(t, "activity")  # reading the task's context
        reports = rng.randint(*p.reports)
        conflict_due = rng.random() < p.conflict_p
        progress = 0
        for i in range(1, reports + 1):
            if conflict_due and progress >= p.tail_from:
                conflict_due = False
                length = rng.lognormvariate(math.log(p.conflict_median_s), p.conflict_sigma)
                length = min(max(length, p.conflict_s[0]), p.conflict_s[1])
                self.add(t + 0.5, "conflict_start")
                self.between(t + 0.5, t + length)
                self.add(t + length, "conflict_end")
                t += length
            gap, tail = self.gap(progress)
            self.between(t, t + gap, tail=tail)
            t += gap
            jitter = rng.randint(-3, 3) if i < reports else 0
            progress = max(progress + 1, min(99, round(100 * i / reports) + jitter))
            progress = 100 if i == reports else progress
            self.add(t, "progress", task=self.task, progress=progress)
        attempts = rng.choices((1, 2, 3), weights=p.validator_weights)[0]
        for _ in range(attempts):
            t += rng.uniform(0.5, 2.0)
            self.add(t, "activity")  # the validator's tool call touches first
            t += rng.uniform(*p.validator_s)
        t += rng.uniform(1.0, 5.0)
        self.add(t, "complete", task=self.task)
        return t

    def blips(self, start: float, end: float) -> None:
        """Sessions that drop and come back at the agent's next call."""
        p, rng = self.p, self.rng
        count = _poisson(rng, p.blips_per_stint)
        for _ in range(count):
            if end - start < 30:
                return
            at = rng.uniform(start + 10.0, end - 10.0)
            back = rng.lognormvariate(math.log(p.blip_back_median_s), p.blip_back_sigma)
            self.blip_pairs.append((at, min(at + back, end - 1.0)))

    def finish(self) -> list[tuple[float, dict[str, Any]]]:
        """The stint's lines, blips included, in time order."""
        for at, back in self.blip_pairs:
            self.add(at, "disconnect", how="dropped")
            self.add(back, "activity")
        return sorted(self.lines, key=lambda item: item[0])

    def die_at(self, death: float) -> None:
        """Cut everything after `death` and add the death (and maybe the session's end)."""
        self.lines = [(t, line) for t, line in self.lines if t < death]
        # A blip whose return would come after the death never happened.
        self.blip_pairs = [(at, back) for at, back in self.blip_pairs if back < death]
        if self.rng.random() < self.p.death_closes_p:
            dropped = self.rng.random() < self.p.death_drops_p
            self.add(death, "disconnect", how="dropped" if dropped else "closed")
        self.add(death, "death", task=self.task)


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson-distributed count (Knuth's method; means here are small)."""
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def simulate(
    agents: int, tasks: int, seed: int, profile: str | Profile = "seed"
) -> list[dict[str, Any]]:
    """A trace of `agents` workers doing `tasks` tasks under `profile`, as dicts.

    Workers start within the first 30 s and take tasks T0001, T0002... in
    order. A worker that dies is replaced, after a respawn delay, by a new
    agent id in the same slot (`a03`, then `a03-r1`...); the dead worker's
    task is not handed on (the engine decides when it comes back, and a
    trace cannot depend on that).
    """
    if agents < 1 or tasks < 0:
        raise InvalidInput("simulate needs at least one agent and no negative task count")
    chosen = _profile(profile)
    rng = random.Random(seed)
    width = max(2, len(str(agents)))
    free: list[tuple[float, int]] = [(rng.uniform(0.0, 30.0), slot) for slot in range(agents)]
    heapq.heapify(free)
    lives = [0] * agents
    lines: list[tuple[float, dict[str, Any]]] = []
    for number in range(1, tasks + 1):
        start, slot = heapq.heappop(free)
        name = f"a{slot + 1:0{width}d}" + (f"-r{lives[slot]}" if lives[slot] else "")
        stint = _Stint(rng, chosen, name, f"T{number:04d}")
        end = stint.work(start)
        stint.blips(start, end)
        if rng.random() < chosen.death_p:
            death = rng.uniform(start + 1.0, end)
            stint.die_at(death)
            lives[slot] += 1
            heapq.heappush(free, (death + rng.uniform(*chosen.respawn_s), slot))
        else:
            heapq.heappush(free, (end + rng.uniform(*chosen.idle_s), slot))
        lines.extend(stint.finish())
    lines.sort(key=lambda item: item[0])
    return [{"t": round(t, 1), **line} for t, line in lines]
