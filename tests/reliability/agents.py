"""Simulated agents on `tenure.client.TenureClient`, and the ledger of what
the server acknowledged to them.

Three kinds, each a thread:

- `finisher`: claims, reports progress a few times, completes; again and
  again until told to stop. Its client's background heartbeat runs.
- `dier`: claims, maybe reports once, then stops calling for good (its
  client has no heartbeat). Its task must be recovered on time.
- `zombie`: claims, reports once, goes silent past its lease, then comes
  back with a late report quoting its old epoch: the server either revives
  or gives the task back to it (nobody took it) or refuses it with
  `lease_lost` (somebody did). Then it carries on as a finisher.

Every call tolerates a dead replica: the transport fails over when a
connection is refused; a connection cut mid-request leaves the outcome
unknown, and the agent repeats the call. The ledger records only what a
2xx answer acknowledged, which is what the invariant checker holds the
server to.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from tests.reliability.cluster import Cluster

from tenure.client import LeaseLostError, TenureClient
from tenure.core.errors import TenureError

T = TypeVar("T")

#: Progress values finishers report; a zombie's late report uses LATE_PROGRESS,
#: which nobody else ever sends, so a late write applied anywhere shows.
STEPS = (10, 20, 40, 60, 80, 90)
LATE_PROGRESS = 33
#: Codes a call is repeated on: the answer says nothing was done.
RETRIED_CODES = {"store_unavailable", "conflict"}


class Stopped(Exception):
    """The test asked the agents to stop."""


@dataclass(frozen=True)
class Ack:
    """A report the server acknowledged: of `epoch` (from the answer's lease)."""

    agent: str
    task: str
    epoch: int
    progress: int
    completed: bool


@dataclass(frozen=True)
class Refusal:
    """A late write refused with `lease_lost`, quoting `epoch`."""

    agent: str
    task: str
    epoch: int
    progress: int


@dataclass(frozen=True)
class Death:
    """A dier stopped calling while it held `task` under `epoch`."""

    agent: str
    task: str
    epoch: int
    at: datetime


@dataclass
class Ledger:
    """What the agents were told, shared by every agent thread."""

    acks: list[Ack] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    deaths: list[Death] = field(default_factory=list)
    #: (agent, task, progress) of every report sent, answered or not.
    sent: set[tuple[str, str, int]] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, item: Any = None) -> None:
        with self._lock:
            self.counts[kind] += 1
            if isinstance(item, Ack):
                self.acks.append(item)
            elif isinstance(item, Refusal):
                self.refusals.append(item)
            elif isinstance(item, Death):
                self.deaths.append(item)

    def sending(self, agent: str, task: str, progress: int) -> None:
        with self._lock:
            self.sent.add((agent, task, progress))

    def error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)


class SimAgent(threading.Thread):
    """One simulated agent (see the module's docstring for the kinds)."""

    def __init__(
        self,
        agent_id: str,
        kind: str,
        cluster: Cluster,
        enrolment_key: str,
        ledger: Ledger,
        stop: threading.Event,
        seed: int,
    ) -> None:
        super().__init__(name=f"agent-{agent_id}", daemon=True)
        self.agent_id = agent_id
        self.kind = kind
        self.ledger = ledger
        self.stop_event = stop
        self.rng = random.Random(seed)
        first = seed % len(cluster.replicas)
        # Diers and zombies must fall silent: no background heartbeat for them.
        beat = 0.2 if kind == "finisher" else 3600.0
        self.client = TenureClient(
            cluster.replicas[first].url,
            timeout=5.0,
            heartbeat_min_s=beat,
            heartbeat_max_s=max(beat, 60.0),
            transport=cluster.transport(first),
        )
        self.enrolment_key = enrolment_key
        #: Set once registered; `assigned` is set by the test when it has given
        #: this agent a task through the admin's assign path (waited for only
        #: by agents made with `wait_for_task`).
        self.registered = threading.Event()
        self.assigned = threading.Event()
        self.wait_for_task = False

    # ------------------------------------------------------------ plumbing
    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(...)`, repeated while a replica is down or the outcome is unknown."""
        for _ in range(200):
            if self.stop_event.is_set():
                raise Stopped
            try:
                result = fn(*args, **kwargs)
            except httpx.TransportError:
                self.ledger.add("transport_errors")
            except LeaseLostError:
                raise
            except TenureError as error:
                if error.code not in RETRIED_CODES:
                    raise
                self.ledger.add(f"retried_{error.code}")
            else:
                self.ledger.add("operations")
                return result
            time.sleep(0.05)
        raise AssertionError(f"{self.agent_id}: a call kept failing")

    def pause(self, low: float, high: float) -> None:
        if self.stop_event.wait(self.rng.uniform(low, high)):
            raise Stopped

    # -------------------------------------------------------------- the run
    def run(self) -> None:
        try:
            self.call(self.client.register, self.agent_id, enrolment_key=self.enrolment_key)
            self.registered.set()
            if self.wait_for_task and not self.assigned.wait(30):
                raise AssertionError("no task was assigned to it")
            if self.kind == "dier":
                self.die()
            else:
                if self.kind == "zombie":
                    self.haunt()
                self.finish_tasks()
        except Stopped:
            pass
        except Exception as exc:  # the test reads these; a thread cannot fail it
            self.ledger.error(f"{self.agent_id} ({self.kind}): {exc!r}")
        finally:
            self.client.close()

    def claim(self) -> tuple[str, int] | None:
        """A task and its epoch, or None when the board has nothing for now."""
        answer = self.call(self.client.claim)
        if answer["task"] is not None:
            self.ledger.add("claims")
            return answer["task"]["id"], int(answer["lease"]["epoch"])
        if answer["reason"] == "agent_holds_a_task" and answer["held"]:
            # An earlier claim went through but its answer was cut off: adopt it.
            held = answer["held"][0]
            self.ledger.add("claims_adopted")
            return held["task_id"], int(held["epoch"])
        return None

    def report(self, task: str, epoch: int, progress: int) -> int:
        """Report `progress` on `task`; the epoch the answer names."""
        self.ledger.sending(self.agent_id, task, progress)
        answer = self.call(
            self.client.report, progress, f"{self.agent_id} at {progress}", task_id=task
        )
        acked = int(answer["lease"]["epoch"]) if answer.get("lease") else epoch
        self.ledger.add("reports", Ack(self.agent_id, task, acked, progress, completed=False))
        return acked

    def work(self, task: str, epoch: int, steps: tuple[int, ...]) -> None:
        """Report each step, then complete; a lost lease ends the work quietly."""
        try:
            for progress in steps:
                self.pause(0.1, 0.35)
                epoch = self.report(task, epoch, progress)
            self.pause(0.05, 0.2)
            self.ledger.sending(self.agent_id, task, 100)
            self.call(self.client.complete, f"{self.agent_id} done", task_id=task)
            self.ledger.add("completions", Ack(self.agent_id, task, epoch, 100, completed=True))
        except LeaseLostError:
            self.ledger.add("leases_lost")

    def finish_tasks(self) -> None:
        while True:
            got = self.claim()
            if got is None:
                self.pause(0.1, 0.3)
                continue
            task, epoch = got
            count = self.rng.randint(2, 4)
            steps = tuple(sorted(self.rng.sample(STEPS, count)))
            self.work(task, epoch, steps)

    def die(self) -> None:
        """Claim, maybe report once, then never call again."""
        got = None
        while got is None:
            got = self.claim()
            if got is None:
                self.pause(0.05, 0.15)
        task, epoch = got
        if self.rng.random() < 0.5:
            self.pause(0.05, 0.2)
            epoch = self.report(task, epoch, STEPS[0])
        self.ledger.add("deaths", Death(self.agent_id, task, epoch, datetime.now(UTC)))

    def haunt(self) -> None:
        """Claim, report, fall silent past the lease, come back with a late report."""
        got = None
        while got is None:
            got = self.claim()
            if got is None:
                self.pause(0.05, 0.15)
        task, epoch = got
        self.pause(0.05, 0.2)
        epoch = self.report(task, epoch, STEPS[0])
        self.pause(2.5, 5.0)
        self.ledger.sending(self.agent_id, task, LATE_PROGRESS)
        try:
            answer = self.call(
                self.client.report, LATE_PROGRESS, f"{self.agent_id} is back", task_id=task
            )
        except LeaseLostError:
            self.ledger.add("stale_refused", Refusal(self.agent_id, task, epoch, LATE_PROGRESS))
            return
        now_epoch = int(answer["lease"]["epoch"])
        self.ledger.add("revived" if now_epoch == epoch else "claimed_back")
        self.ledger.add("reports", Ack(self.agent_id, task, now_epoch, LATE_PROGRESS, False))
        self.work(task, now_epoch, (70, 90))
