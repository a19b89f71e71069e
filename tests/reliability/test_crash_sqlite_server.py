"""Crash restarts on SQLite: one `tenure serve` process under load from thirty
agents, SIGKILLed at random and restarted on the same file; every invariant
of `tests.reliability.invariants` holds and dead agents' tasks are recovered
on time. While the server is down the agents' calls are refused and repeated;
leases that ran out meanwhile are recovered after the restart, as SPEC says."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.reliability.chaos import Plan, run, short_leases
from tests.reliability.cluster import Cluster
from tests.reliability.invariants import load_sqlite

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("crash-sqlite")]


@pytest.mark.timeout(240)
def test_a_server_killed_under_load_and_restarted_on_its_file_breaks_no_invariant(
    tmp_path: Path,
) -> None:
    database = tmp_path / "tenure.db"
    plan = Plan(
        finishers=20,
        diers=(3, 3),
        zombies=(3, 1),
        tasks=(40, 20),
        chaos_s=12.0,
        kill_every=(1.5, 3.0),
        down_for=(0.1, 0.6),
        min_up=0,
        min_kills=3,
    )
    settings = short_leases(lease_s=(2.0, 3.0, 4.0, 5.0), interval=plan.interval_s)
    cluster = Cluster(tmp_path, f"sqlite:///{database}", settings, n=1)
    cluster.start()
    outcome = run(cluster, plan, lambda: load_sqlite(database, "chaos"))
    print(f"\nSIGKILL of one server on SQLite (seed {plan.seed}):\n{outcome.report()}")
    assert not outcome.problems, "\n".join(outcome.problems[:40])
    assert not outcome.late, "\n".join(outcome.late)
    assert outcome.kills >= plan.min_kills
    assert outcome.figures["deaths"] == sum(plan.diers)
    assert outcome.figures["cut-off calls repeated"] + outcome.figures["failovers"] > 0
