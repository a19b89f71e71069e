"""A Coordinator on a real store with a FakeClock, and helpers to drive it.

Service tests build one `World` per test: a fresh SQLite file or a fresh
PostgreSQL database, the real Coordinator and Monitor, an admin caller, and
short-hands for the set-up every scenario repeats (a board, agents, tasks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tenure.auth import ADMIN, Caller, Role
from tenure.clock import FakeClock
from tenure.core.decisions import Report
from tenure.core.policy import DetectorPolicy, Policy
from tenure.monitor import EvidenceSource, Monitor
from tenure.service import Coordinator, Options
from tenure.store.base import Store

#: The policy a World runs unless told otherwise: SPEC's detector, because the
#: service tests check SPEC's numbers (progressive phases, the 30 s window).
SPEC_POLICY = Policy(detector=DetectorPolicy(kind="spec"))


class CountingSink:
    """Remembers what the Coordinator published after commit."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.expired: list[dict[str, Any]] = []

    def count(self, counter: str, n: int = 1) -> None:
        self.counts[counter] = self.counts.get(counter, 0) + n

    def lease_expired(self, payload: dict[str, Any]) -> None:
        self.expired.append(payload)

    def detection(self, seconds: float) -> None:
        self.count("detection_observed")


@dataclass
class World:
    """Everything a service scenario needs."""

    store: Store
    clock: FakeClock
    coordinator: Coordinator
    monitor: Monitor
    sink: CountingSink
    board_id: str = "b1"
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def admin(self) -> Caller:
        return ADMIN

    def agent(self, agent_id: str, board_id: str | None = None) -> Caller:
        return Caller(Role.AGENT, board_id or self.board_id, agent_id)

    async def setup_board(self, board_id: str | None = None, **fields: Any) -> dict[str, Any]:
        return await self.coordinator.admin.create_board(ADMIN, board_id or self.board_id, **fields)

    async def add_agent(self, agent_id: str, board_id: str | None = None, **fields: Any) -> Caller:
        data = {"agent_id": agent_id, **fields}
        made = await self.coordinator.admin.register_agent(ADMIN, data, board_id or self.board_id)
        self.tokens[agent_id] = made["token"]
        return self.agent(agent_id, board_id)

    async def add_task(
        self, task_id: str, board_id: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        data = {"id": task_id, "title": fields.pop("title", f"Task {task_id}"), **fields}
        return await self.coordinator.admin.add_task(ADMIN, board_id or self.board_id, data)

    async def claim(self, caller: Caller) -> dict[str, Any]:
        return await self.coordinator.request_next_task(caller)

    async def report(self, caller: Caller, task_id: str, **fields: Any) -> dict[str, Any]:
        return await self.coordinator.report_progress(caller, task_id, Report(**fields))

    async def task(self, task_id: str, board_id: str | None = None) -> dict[str, Any]:
        return await self.coordinator.admin.show_task(ADMIN, board_id or self.board_id, task_id)

    async def events(self, **filters: Any) -> list[dict[str, Any]]:
        return await self.coordinator.admin.events(ADMIN, **filters)

    async def event_types(self, task_id: str | None = None) -> list[str]:
        return [e["type"] for e in await self.events(task_id=task_id)]

    async def advance(self, seconds: float, *, passes: bool = True) -> None:
        """Move the clock, then run one monitor pass (as the server would)."""
        self.clock.advance(seconds)
        if passes:
            await self.monitor.run_pass()

    async def run_for(self, seconds: float, step: float = 10.0) -> None:
        """Advance in monitor-interval steps, passing after each."""
        elapsed = 0.0
        while elapsed < seconds:
            chunk = min(step, seconds - elapsed)
            await self.advance(chunk)
            elapsed += chunk


async def open_store(kind: str, tmp_path: Path, clock: FakeClock) -> Store:
    """A fresh store of `kind` ('sqlite' or 'postgres') on `clock`."""
    if kind == "sqlite":
        from tenure.store.sqlite import open_sqlite

        return await open_sqlite(tmp_path / "tenure.db", clock)
    from tests.support.pg import open_postgres_store

    return await open_postgres_store(clock)


async def make_world(
    kind: str,
    tmp_path: Path,
    *,
    policy: Policy | None = None,
    options: Options | None = None,
    evidence: EvidenceSource | None = None,
) -> World:
    """A World on a fresh store."""
    clock = FakeClock()
    store = await open_store(kind, tmp_path, clock)
    sink = CountingSink()
    coordinator = Coordinator(store, policy or SPEC_POLICY, options or Options(), sink)
    monitor = Monitor(coordinator, interval=10.0, evidence=evidence)
    return World(store, clock, coordinator, monitor, sink)


def backends() -> list[Any]:
    """Both stores; PostgreSQL marked so it can be deselected locally."""
    return ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"
