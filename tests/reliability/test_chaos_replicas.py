"""Chaos across replicas: three `tenure serve` processes on one PostgreSQL
database, thirty agents spread over them, replicas SIGKILLed and restarted
at random; then every invariant of `tests.reliability.invariants` holds and
every dead agent's task was recovered on time. Bounded to about a minute."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.reliability.chaos import Plan, run, short_leases
from tests.reliability.cluster import Cluster
from tests.reliability.invariants import load_postgres
from tests.support.pg import fresh_postgres_dsn, postgres_url

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("chaos-replicas")]


@pytest.mark.timeout(240)
def test_three_replicas_killed_at_random_break_no_invariant(tmp_path: Path) -> None:
    dsn = fresh_postgres_dsn()
    plan = Plan()
    cluster = Cluster(tmp_path, postgres_url(dsn), short_leases(interval=plan.interval_s), n=3)
    cluster.start()
    outcome = run(cluster, plan, lambda: load_postgres(dsn, "chaos"))
    print(f"\nchaos across 3 replicas on PostgreSQL (seed {plan.seed}):\n{outcome.report()}")
    assert not outcome.problems, "\n".join(outcome.problems[:40])
    assert not outcome.late, "\n".join(outcome.late)
    # The run must have exercised what it claims to.
    assert outcome.kills >= plan.min_kills
    assert outcome.figures["deaths"] == sum(plan.diers)
    assert outcome.figures["recoveries"] >= outcome.figures["deaths"]
    assert outcome.figures["failovers"] > 0
