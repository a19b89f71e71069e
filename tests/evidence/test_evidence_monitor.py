"""Worktree evidence through the real Monitor and Coordinator on a real SQLite file.

The store runs on a FakeClock that starts in 2026; every worktree is aged to
2025 first, so only what a test changes afterwards is newer than a lease's
last signal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.support.gitrepo import Repo
from tests.support.world import SPEC_POLICY

from tenure.auth import ADMIN, Caller, Role
from tenure.clock import FakeClock
from tenure.core.model import Lease
from tenure.evidence import GitEvidence
from tenure.monitor import Monitor, PassResult
from tenure.service import Coordinator, Options
from tenure.store.sqlite import open_sqlite

START = datetime(2026, 1, 1, tzinfo=UTC)
BEFORE = START - timedelta(days=1)
#: The progressive policy's first lease (180 s) plus its grace (60 s), and a bit.
FIRST_DUE = 241.0


@dataclass
class Rig:
    clock: FakeClock
    coordinator: Coordinator
    monitor: Monitor
    evidence: GitEvidence
    roots: Path

    async def agent_with_task(self, agent_id: str, task_id: str, worktree: Path | None) -> Caller:
        data: dict[str, str] = {"agent_id": agent_id}
        if worktree is not None:
            data["worktree"] = str(worktree)
        await self.coordinator.admin.register_agent(ADMIN, data, "b1")
        await self.coordinator.admin.add_task(ADMIN, "b1", {"id": task_id, "title": task_id})
        caller = Caller(Role.AGENT, "b1", agent_id)
        claimed = await self.coordinator.request_next_task(caller)
        assert claimed["task"]["id"] == task_id
        return caller

    async def lease(self, task_id: str) -> Lease | None:
        return await self.coordinator.store.read(lambda tx: tx.live_lease("b1", task_id))

    async def status(self, task_id: str) -> str:
        task = await self.coordinator.store.read(lambda tx: tx.get_task("b1", task_id))
        assert task is not None
        return str(task.status)

    async def step(self, seconds: float) -> PassResult:
        self.clock.advance(seconds)
        return await self.monitor.run_pass()


@pytest.fixture
async def rig(tmp_path: Path, roots: Path) -> AsyncIterator[Rig]:
    clock = FakeClock(START)
    store = await open_sqlite(tmp_path / "tenure.db", clock)
    # SPEC's detector: these tests wait out its first phase (FIRST_DUE).
    coordinator = Coordinator(
        store, policy=SPEC_POLICY, options=Options(allowed_worktree_roots=(str(roots),))
    )
    await coordinator.admin.create_board(ADMIN, "b1")
    evidence = GitEvidence(allowed_roots=(str(roots),), template="", git_timeout=10.0)
    monitor = Monitor(coordinator, interval=10.0, evidence=evidence)
    try:
        yield Rig(clock, coordinator, monitor, evidence, roots)
    finally:
        await store.close()


async def test_a_merge_conflict_gets_two_extensions_of_300_s_then_recovery(
    rig: Rig, make_repo: Callable[[Path], Repo]
) -> None:
    repo = make_repo(rig.roots / "a1")
    repo.conflict()
    repo.age(BEFORE)
    await rig.agent_with_task("a1", "t1", repo.path)

    for extensions in (1, 2):
        result = await rig.step(FIRST_DUE if extensions == 1 else 361)
        assert result.extended == 1 and result.recovered == 0
        lease = await rig.lease("t1")
        assert lease is not None
        assert lease.conflict_extensions == extensions
        assert lease.expires_at == rig.clock.now() + timedelta(seconds=300)

    result = await rig.step(361)
    assert result.extended == 0 and result.recovered == 1
    assert await rig.lease("t1") is None
    assert await rig.status("t1") == "todo"
    assert rig.evidence.stats.conflicts == 3


@pytest.mark.parametrize("kind", ["clean", "not_a_repository"])
async def test_a_clean_worktree_or_a_plain_folder_gets_no_extension(
    rig: Rig, make_repo: Callable[[Path], Repo], kind: str
) -> None:
    if kind == "clean":
        path = make_repo(rig.roots / "a1").path
    else:
        path = rig.roots / "a1"
        path.mkdir()
        (path / "notes.txt").write_text("no git here\n")
    Repo(path).age(BEFORE)
    await rig.agent_with_task("a1", "t1", path)
    result = await rig.step(FIRST_DUE)
    assert result.probed == 1 and result.extended == 0 and result.recovered == 1
    assert await rig.status("t1") == "todo"


async def test_a_hung_git_is_cut_and_the_lease_is_recovered(
    rig: Rig, make_repo: Callable[[Path], Repo], hung_git: Path
) -> None:
    repo = make_repo(rig.roots / "a1")
    repo.conflict()
    rig.monitor.evidence = GitEvidence(
        allowed_roots=(str(rig.roots),), template="", git=str(hung_git), git_timeout=0.5
    )
    await rig.agent_with_task("a1", "t1", repo.path)
    result = await rig.step(FIRST_DUE)
    assert result.extended == 0 and result.recovered == 1
    assert rig.monitor.evidence.stats.timeouts == 1


async def test_a_file_changed_in_the_worktree_is_a_signal_that_prevents_recovery(
    rig: Rig, make_repo: Callable[[Path], Repo]
) -> None:
    repo = make_repo(rig.roots / "a1")
    repo.write("work.py", "x = 1\n")
    repo.age(BEFORE)
    await rig.agent_with_task("a1", "t1", repo.path)

    rig.clock.advance(200)
    repo.write("work.py", "x = 2\n")
    written = rig.clock.now()
    repo.set_mtime("work.py", written)  # the agent edits, silently
    result = await rig.step(FIRST_DUE - 200)
    assert result.signalled == 1 and result.recovered == 0
    lease = await rig.lease("t1")
    # The signal is stamped when the file changed, not when the probe saw it.
    assert lease is not None and lease.last_signal_at == written
    assert lease.recover_after > rig.clock.now()

    # With nothing new in the worktree, the next due pass recovers.
    result = await rig.step(600)
    assert result.signalled == 0 and result.recovered == 1
    assert await rig.status("t1") == "todo"


async def test_probes_run_only_for_leases_due(rig: Rig, make_repo: Callable[[Path], Repo]) -> None:
    repos = [make_repo(rig.roots / f"a{n}") for n in range(5)]
    for repo in repos:
        repo.age(BEFORE)
    await rig.agent_with_task("a0", "t0", repos[0].path)
    rig.clock.advance(120)
    for n in range(1, 5):
        await rig.agent_with_task(f"a{n}", f"t{n}", repos[n].path)

    result = await rig.step(FIRST_DUE - 120)  # only t0's lease is past recover-after
    assert result.due == 1 and result.probed == 1 and result.recovered == 1
    assert rig.evidence.stats.probes == 1
    live = await rig.coordinator.store.read(lambda tx: tx.live_leases("b1"))
    assert len(live) == 4

    result = await rig.step(10)  # nothing due: nothing probed
    assert result.due == 0 and result.probed == 0
    assert rig.evidence.stats.probes == 1

    result = await rig.step(120)  # the other four fall due together
    assert result.due == 4 and result.probed == 4
    assert rig.evidence.stats.probes == 5


async def test_an_agent_without_a_worktree_is_judged_without_evidence(rig: Rig) -> None:
    await rig.agent_with_task("a1", "t1", None)
    result = await rig.step(FIRST_DUE)
    assert result.probed == 1 and result.recovered == 1
    assert rig.evidence.stats.no_worktree == 1 and rig.evidence.stats.git_runs == 0
