"""Random claims, reports, touches, clock jumps, monitor passes and claim-backs.

A Hypothesis state machine drives the pure core through `Bench`, which
applies every Change like the store would (conditional on the version, one
live lease per task), and checks SPEC's invariants after every step.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from corekit import Bench
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tenure.core import (
    ChangeKind,
    DetectorPolicy,
    Evidence,
    Policy,
    TaskStatus,
    compute_recover_after,
    recover,
    requeue,
)
from tenure.core.errors import Conflict, LeaseLost, NotHolder

TASKS = ("t1", "t2")
AGENTS = ("a1", "a2", "a3")

tasks = st.sampled_from(TASKS)
agents = st.sampled_from(AGENTS)
# "latest" stands for the agent of the task's latest lease (its holder, or the
# old holder of a recovered task), so reports are not mostly from strangers.
actors = st.sampled_from(("latest", "latest", "latest", *AGENTS))


class LeaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.bench = Bench(policy=Policy())
        for task_id in TASKS:
            self.bench.add(task_id)
        self.versions: dict[tuple[str, int], int] = {}
        self.ended: dict[tuple[str, int], object] = {}
        self.handoff_progress: dict[str, int] = dict.fromkeys(TASKS, 0)
        self.last_epoch: dict[str, int] = dict.fromkeys(TASKS, 0)

    @initialize(kind=st.sampled_from(["spec", "spec", "seed", "fixed", "adaptive"]))
    def choose_detector(self, kind: str) -> None:
        self.bench.policy = Policy(detector=DetectorPolicy(kind=kind))  # type: ignore[arg-type]

    def actor(self, who: str, task_id: str) -> str:
        history = self.bench.history[task_id]
        if who == "latest":
            return history[-1].agent_id if history else AGENTS[0]
        return who

    # acts ---------------------------------------------------------------------------
    @rule(agent=agents, task_id=tasks)
    def claim(self, agent: str, task_id: str) -> None:
        bench = self.bench
        if bench.task(task_id).status is TaskStatus.TODO and not bench.holds_other(agent, task_id):
            bench.claim(agent, task_id)

    @rule(
        who=actors,
        task_id=tasks,
        progress=st.none() | st.integers(0, 100),
        status=st.sampled_from(["in_progress"] * 6 + ["completed", "blocked"]),
        validate=st.booleans(),
        quote=st.booleans(),
        message=st.sampled_from(["", "working", "line one\nline two"]),
    )
    def report(
        self,
        who: str,
        task_id: str,
        progress: int | None,
        status: str,
        validate: bool,
        quote: bool,
        message: str,
    ) -> None:
        bench = self.bench
        agent = self.actor(who, task_id)
        last = bench.last_of(task_id, agent)
        epoch = last.epoch if quote and last is not None else None
        with contextlib.suppress(NotHolder, LeaseLost):
            bench.report(
                agent,
                task_id,
                progress=progress,
                status=status,
                validate=validate,
                message=message,
                epoch=epoch,
            )

    @rule(who=actors, task_id=tasks)
    def heartbeat(self, who: str, task_id: str) -> None:
        with contextlib.suppress(NotHolder, LeaseLost):
            self.bench.heartbeat(self.actor(who, task_id), task_id)

    @rule(agent=agents)
    def touch(self, agent: str) -> None:
        self.bench.touch_all(agent)

    @rule(who=actors, task_id=tasks)
    def release(self, who: str, task_id: str) -> None:
        with contextlib.suppress(NotHolder, LeaseLost):
            self.bench.release(self.actor(who, task_id), task_id, message="over to you")

    @rule(seconds=st.sampled_from([1, 5, 30, 61, 120, 250, 400, 700]))
    def advance(self, seconds: int) -> None:
        self.bench.advance(seconds)

    @rule(task_id=tasks, dropped=st.booleans())
    def close_session(self, task_id: str, dropped: bool) -> None:
        if self.bench.live(task_id) is not None:
            self.bench.close_session(task_id, dropped=dropped)

    @rule(task_id=tasks, conflict=st.booleans(), changed=st.booleans(), probe=st.booleans())
    def monitor(self, task_id: str, conflict: bool, changed: bool, probe: bool) -> None:
        bench = self.bench
        lease = bench.live(task_id)
        if lease is None:
            return
        evidence = Evidence(conflict=conflict, changed=changed) if probe else None
        change = bench.sweep(task_id, evidence)
        if change.kind in (ChangeKind.RECOVERED, ChangeKind.DEAD_LETTERED):
            assert bench.now >= lease.recover_after

    @rule(task_id=tasks, extra=st.sampled_from([0, 1, 200, 900]))
    def monitor_after_recover_after(self, task_id: str, extra: int) -> None:
        bench = self.bench
        lease = bench.live(task_id)
        if lease is None:
            return
        bench.expire(task_id)
        bench.advance(extra)
        change = bench.sweep(task_id)
        if change.kind in (ChangeKind.RECOVERED, ChangeKind.DEAD_LETTERED):
            assert bench.now >= lease.recover_after

    @rule(task_id=tasks)
    def force_recover(self, task_id: str) -> None:
        bench = self.bench
        lease = bench.live(task_id)
        if lease is None:
            return
        if bench.now < lease.recover_after:
            with pytest.raises(Conflict):
                recover(bench.task(task_id), lease, bench.now, bench.policy)
        else:
            bench.apply(recover(bench.task(task_id), lease, bench.now, bench.policy))

    @rule(task_id=tasks, passed=st.booleans())
    def validation(self, task_id: str, passed: bool) -> None:
        with contextlib.suppress(Conflict):
            self.bench.validation(passed, task_id)

    @rule(task_id=tasks)
    def requeue(self, task_id: str) -> None:
        bench = self.bench
        if bench.task(task_id).status is TaskStatus.BLOCKED:
            bench.apply(requeue(bench.task(task_id), bench.now, bench.policy))

    # invariants -------------------------------------------------------------------
    @invariant()
    def at_most_one_live_lease_per_task_matching_the_task(self) -> None:
        for task_id in TASKS:
            task = self.bench.task(task_id)
            live = [lease for lease in self.bench.history[task_id] if lease.live]
            assert len(live) <= 1
            if task.status is TaskStatus.IN_PROGRESS:
                assert len(live) == 1
                assert live[0].agent_id == task.assignee and live[0].epoch == task.epoch
            else:
                assert not live

    @invariant()
    def epochs_and_versions_only_grow(self) -> None:
        for task_id in TASKS:
            history = self.bench.history[task_id]
            epochs = [lease.epoch for lease in history]
            assert epochs == sorted(set(epochs))
            task_epoch = self.bench.task(task_id).epoch
            assert task_epoch == (epochs[-1] if epochs else 0)
            assert task_epoch >= self.last_epoch[task_id]
            self.last_epoch[task_id] = task_epoch
            for lease in history:
                key = (task_id, lease.epoch)
                assert lease.version >= self.versions.get(key, 1)
                self.versions[key] = lease.version

    @invariant()
    def an_ended_lease_never_changes_again(self) -> None:
        for task_id in TASKS:
            for lease in self.bench.history[task_id]:
                key = (task_id, lease.epoch)
                if key in self.ended:
                    assert lease == self.ended[key]
                elif not lease.live:
                    self.ended[key] = lease

    @invariant()
    def the_handoffs_progress_never_goes_down(self) -> None:
        for task_id in TASKS:
            handoff = self.bench.task(task_id).handoff
            if handoff is not None:
                assert handoff.previous_progress >= self.handoff_progress[task_id]
                self.handoff_progress[task_id] = handoff.previous_progress

    @invariant()
    def recover_after_follows_expiry_grace_and_suspicion(self) -> None:
        policy = self.bench.policy
        for task_id in TASKS:
            lease = self.bench.live(task_id)
            if lease is not None:
                assert lease.recover_after == compute_recover_after(
                    lease.expires_at,
                    lease.grace_s,
                    lease.suspect_since,
                    policy,
                    dropped=lease.suspect_dropped,
                )
                assert lease.suspect_since is not None or not lease.suspect_dropped
                assert lease.recover_after >= lease.expires_at or lease.suspect_since
                assert lease.recover_after <= lease.expires_at + timedelta(seconds=lease.grace_s)

    @invariant()
    def the_recovery_budget_is_respected(self) -> None:
        for task_id in TASKS:
            task = self.bench.task(task_id)
            assert 0 <= task.recovery_count <= self.bench.policy.max_recoveries
            if task.recovery_count >= self.bench.policy.max_recoveries:
                assert task.dead_lettered and task.status is TaskStatus.BLOCKED


LeaseMachine.TestCase.settings = settings(settings.default, stateful_step_count=50)
TestLeaseMachine = LeaseMachine.TestCase
