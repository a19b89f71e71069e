"""A tiny in-memory stand-in for the store, to drive the pure core in tests.

`Bench` keeps tasks, the full lease history, counters, events, comments and
hooks, and applies each `Change` the way the service must: a lease write only
when the stored lease still has `expected_version`, a new lease only with a
new epoch and no other live lease on the task. Those checks run on every
write of every test, so a transition that breaks them fails loudly.
"""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tenure.core import (
    Change,
    Decision,
    DetectorPolicy,
    Evidence,
    Lease,
    Policy,
    Report,
    Subject,
    Task,
    apply,
    block,
    create,
    decide,
    heartbeat,
    release,
    report,
    session_closed,
    touch,
    validation_result,
)
from tenure.core.model import Event, Priority

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


def make_task(task_id: str = "t1", **fields: Any) -> Task:
    """A `todo` task on board `b` created at T0."""
    base: dict[str, Any] = {
        "board_id": "b",
        "id": task_id,
        "title": f"task {task_id}",
        "created_at": T0,
        "updated_at": T0,
        "priority": Priority.MEDIUM,
    }
    base.update(fields)
    return Task(**base)


class WriteRefused(AssertionError):
    """A Change broke a rule the store enforces (a lost race, a second live lease)."""


@dataclass
class Bench:
    """Tasks, leases and a clock; `apply` writes a Change like the service would."""

    # SPEC's detector unless a test picks another: most tests check SPEC's numbers.
    policy: Policy = field(default_factory=lambda: Policy(detector=DetectorPolicy(kind="spec")))
    now: datetime = T0
    tasks: dict[str, Task] = field(default_factory=dict)
    history: dict[str, list[Lease]] = field(default_factory=dict)
    counters: Tally[str] = field(default_factory=Tally)
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    hooks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    telemetry: list[dict[str, Any]] = field(default_factory=list)

    # set-up and reading -----------------------------------------------------
    def add(self, task_id: str = "t1", **fields: Any) -> Task:
        task = make_task(task_id, **fields)
        self.tasks[task_id] = task
        self.history[task_id] = []
        return task

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def set(self, seconds: float) -> datetime:
        """Jump to T0 + `seconds` (never backwards)."""
        moment = at(seconds)
        assert moment >= self.now, "the bench clock never goes backwards"
        self.now = moment
        return moment

    def task(self, task_id: str = "t1") -> Task:
        return self.tasks[task_id]

    def live(self, task_id: str = "t1") -> Lease | None:
        alive = [lease for lease in self.history[task_id] if lease.live]
        return alive[0] if alive else None

    def lease(self, task_id: str = "t1") -> Lease:
        """The latest lease of the task, live or ended."""
        return self.history[task_id][-1]

    def last_of(self, task_id: str, agent_id: str) -> Lease | None:
        mine = [lease for lease in self.history[task_id] if lease.agent_id == agent_id]
        return mine[-1] if mine else None

    def holds_other(self, agent_id: str, task_id: str) -> bool:
        return any(
            lease.live and lease.agent_id == agent_id
            for other, leases in self.history.items()
            if other != task_id
            for lease in leases
        )

    def subject(self, task_id: str, agent_id: str) -> Subject:
        return Subject(
            task=self.tasks[task_id],
            live=self.live(task_id),
            callers_last=self.last_of(task_id, agent_id),
            caller_holds_other=self.holds_other(agent_id, task_id),
        )

    def event_types(self) -> list[str]:
        return [str(event.type) for event in self.events]

    # writing --------------------------------------------------------------------
    def apply(self, change: Change) -> Change:
        """Write `change` as one transaction, then raise its error if it has one."""
        if change.lease is not None:
            self._write_lease(change.lease, change.expected_version)
        if change.task is not None:
            self.tasks[change.task.id] = change.task
        self.events.extend(change.events)
        self.counters.update(str(counter) for counter in change.counters)
        self.comments.extend(change.comments)
        self.hooks.extend((str(kind), payload) for kind, payload in change.hooks)
        if change.telemetry is not None:
            self.telemetry.append(change.telemetry)
        if change.error is not None:
            raise change.error
        return change

    def _write_lease(self, lease: Lease, expected: int | None) -> None:
        leases = self.history[lease.task_id]
        if expected is None:
            if self.live(lease.task_id) is not None:
                raise WriteRefused("a second live lease on one task")
            if leases and lease.epoch <= max(old.epoch for old in leases):
                raise WriteRefused("an epoch that does not grow")
            leases.append(lease)
            return
        for index, stored in enumerate(leases):
            if stored.epoch == lease.epoch:
                if stored.version != expected:
                    raise WriteRefused(f"version {stored.version} is not {expected}")
                if not stored.live:
                    raise WriteRefused("a write on an ended lease")
                if lease.version != stored.version + 1:
                    raise WriteRefused("a write that does not bump the version by one")
                leases[index] = lease
                return
        raise WriteRefused("an update of a lease that does not exist")

    # acts -----------------------------------------------------------------------
    def claim(self, agent_id: str = "a1", task_id: str = "t1", **kw: Any) -> Lease:
        self.apply(create(self.tasks[task_id], agent_id, self.now, self.policy, **kw))
        lease = self.live(task_id)
        assert lease is not None
        return lease

    def report(
        self, agent_id: str = "a1", task_id: str = "t1", progress: int | None = None, **kw: Any
    ) -> Change:
        rep = Report(progress=progress, **kw)
        change = report(self.subject(task_id, agent_id), agent_id, rep, self.now, self.policy)
        return self.apply(change)

    def heartbeat(self, agent_id: str = "a1", task_id: str = "t1", **kw: Any) -> Change:
        change = heartbeat(self.subject(task_id, agent_id), agent_id, self.now, self.policy, **kw)
        return self.apply(change)

    def touch_all(self, agent_id: str) -> list[Change]:
        """Any other call by `agent_id`: touch every live lease it holds."""
        done = []
        for task_id in self.history:
            lease = self.live(task_id)
            if lease is not None and lease.agent_id == agent_id:
                change = touch(lease, self.now, self.policy, task=self.tasks[task_id])
                done.append(self.apply(change))
        return done

    def release(self, agent_id: str = "a1", task_id: str = "t1", message: str = "") -> Change:
        change = release(
            self.subject(task_id, agent_id), agent_id, self.now, self.policy, message=message
        )
        return self.apply(change)

    def block(self, agent_id: str = "a1", task_id: str = "t1", reason: str = "stuck") -> Change:
        change = block(
            self.subject(task_id, agent_id), agent_id, self.now, self.policy, reason=reason
        )
        return self.apply(change)

    def validation(
        self,
        passed: bool,
        task_id: str = "t1",
        agent_id: str | None = None,
        note: str = "",
    ) -> Change:
        subject = (
            self.subject(task_id, agent_id)
            if agent_id
            else Subject(task=self.tasks[task_id], live=self.live(task_id))
        )
        change = validation_result(
            subject, self.now, self.policy, passed=passed, note=note, by_holder=agent_id is not None
        )
        return self.apply(change)

    def close_session(self, task_id: str = "t1", *, dropped: bool = False) -> Change:
        lease = self.live(task_id)
        assert lease is not None
        return self.apply(session_closed(lease, self.now, self.policy, dropped=dropped))

    def decide(self, task_id: str = "t1", evidence: Evidence | None = None) -> Decision:
        lease = self.live(task_id)
        assert lease is not None
        return decide(self.tasks[task_id], lease, self.now, self.policy, evidence)

    def sweep(self, task_id: str = "t1", evidence: Evidence | None = None) -> Change:
        """One monitor look at the task's live lease: decide, then carry it out."""
        lease = self.live(task_id)
        assert lease is not None
        task = self.tasks[task_id]
        decision = decide(task, lease, self.now, self.policy, evidence)
        return self.apply(apply(decision, task, lease, self.now, self.policy))

    def expire(self, task_id: str = "t1") -> datetime:
        """Jump to the live lease's recover-after."""
        lease = self.live(task_id)
        assert lease is not None
        self.now = max(self.now, lease.recover_after)
        return self.now

    def recover_now(self, task_id: str = "t1") -> Change:
        """Jump past recover-after and sweep: a lease with < 2 stamps is recovered."""
        self.expire(task_id)
        return self.sweep(task_id)


def with_task(bench: Bench, task_id: str, **fields: Any) -> Task:
    """Overwrite fields of a stored task (as an admin edit would)."""
    bench.tasks[task_id] = replace(bench.tasks[task_id], **fields)
    return bench.tasks[task_id]
