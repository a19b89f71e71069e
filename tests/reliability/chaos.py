"""One chaos run: agents working against replicas that get SIGKILLed and
restarted at random, then the invariant checker over the database.

Timeline: a first batch of tasks and the first wave (finishers, diers,
zombies) while the chaos loop kills and restarts replicas; the chaos stops
with every replica running again; a second wave of diers and zombies and a
second batch of tasks, with no more kills, so their recoveries are held to
the tight bound (recover-after plus two monitor passes); then the run waits
until every task is done, stops everything and checks.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tests.reliability.agents import Ledger, SimAgent
from tests.reliability.cluster import Cluster, Replica
from tests.reliability.invariants import Snapshot, check, lease_rows, recoveries
from tests.support.server import wait_until

BOARD = "chaos"


def short_leases(
    *, lease_s: tuple[float, float, float, float] = (1.0, 1.5, 2.0, 3.0), interval: float = 0.25
) -> dict[str, str]:
    """Settings with leases of seconds, a grace of 0.5 s and a fast monitor.
    No task is dead-lettered (the budget is high): every task must finish."""
    settings = {
        f"TENURE_LEASE_PHASE{n}_LEASE": str(seconds) for n, seconds in enumerate(lease_s, 1)
    }
    settings.update({f"TENURE_LEASE_PHASE{n}_GRACE": "0.5" for n in (1, 2, 3, 4)})
    settings.update(
        {
            "TENURE_LEASE_DEFAULT_LEASE": str(lease_s[1]),
            "TENURE_LEASE_DEFAULT_GRACE": "0.5",
            "TENURE_LEASE_WARNING_THRESHOLD": "0.3",
            "TENURE_MONITOR_INTERVAL": str(interval),
            # The deadline checked below is the `spec` detector's (SPEC, The monitor).
            "TENURE_DETECTOR_POLICY": "spec",
            "TENURE_RECOVERY_MAX_RECOVERIES": "1000",
            "TENURE_CLAIM_RETRY_AFTER": "0.2",
        }
    )
    return settings


@dataclass
class Plan:
    """The shape of a run."""

    finishers: int = 20
    diers: tuple[int, int] = (3, 2)  # first wave, second wave
    zombies: tuple[int, int] = (3, 2)
    tasks: tuple[int, int] = (45, 25)
    chaos_s: float = 16.0
    #: Seconds between kills, and a replica's time down before its restart.
    kill_every: tuple[float, float] = (1.0, 2.5)
    down_for: tuple[float, float] = (0.2, 1.2)
    finish_timeout_s: float = 40.0
    interval_s: float = 0.25
    #: Replicas the chaos always leaves running (0: it may kill the only one).
    min_up: int = 1
    #: Kills the chaos makes at least, past `chaos_s` if it must.
    min_kills: int = 5
    seed: int = field(default_factory=lambda: random.randrange(1 << 30))


@dataclass
class Outcome:
    """What a run did and found."""

    ledger: Ledger
    snapshot: Snapshot
    problems: list[str]
    kills: int
    restarts: list[datetime]
    late: list[str]
    worst_lateness_s: float
    figures: dict[str, int]
    #: Seconds from the start to: the calm (chaos over), every task done, all stopped.
    timeline: dict[str, float]

    def report(self) -> str:
        lines = [f"{k:>22}: {v}" for k, v in sorted(self.figures.items())]
        lines.append(f"{'timeline (s)':>22}: {self.timeline}")
        lines.append(
            f"{'worst recovery delay':>22}: {self.worst_lateness_s:.3f} s past recover-after"
            " (agents dead after the chaos)"
        )
        return "\n".join(lines)


def _chaos(
    cluster: Cluster, plan: Plan, stop: threading.Event, log: list[tuple[str, datetime]]
) -> None:
    """Kill a random running replica every few seconds (leaving `plan.min_up`
    running) and restart it in the background after a while down."""
    rng = random.Random(plan.seed ^ 0xC4A05)
    lock = threading.Lock()
    down: set[str] = set()
    restarts: list[threading.Thread] = []

    def restart(replica: Replica, pause: float) -> None:
        time.sleep(pause)
        try:
            replica.start()
            log.append(("ready", datetime.now(UTC)))
        except BaseException as exc:
            log.append((f"restart failed: {exc!r}", datetime.now(UTC)))
        finally:
            with lock:
                down.discard(replica.name)

    while not stop.wait(rng.uniform(*plan.kill_every)):
        with lock:
            up = [r for r in cluster.replicas if r.name not in down]
            if len(up) <= plan.min_up:
                continue
            victim = rng.choice(up)
            down.add(victim.name)
        victim.kill()
        log.append(("kill", datetime.now(UTC)))
        thread = threading.Thread(target=restart, args=(victim, rng.uniform(*plan.down_for)))
        thread.start()
        restarts.append(thread)
    for thread in restarts:
        thread.join()


def run(cluster: Cluster, plan: Plan, load: Callable[[], Snapshot]) -> Outcome:
    """Run the plan against a started cluster; the cluster is stopped at the end."""
    admin = cluster.admin()
    made = admin.post("/boards", json={"id": BOARD})
    assert made.status_code == 201, made.text
    key = made.json()["enrolment_key"]

    def add_tasks(first: int, count: int, skills: tuple[str, ...] = ()) -> None:
        tasks = [
            {"id": f"t{n:03d}", "title": f"task {n}", "required_skills": list(skills)}
            for n in range(first, first + count)
        ]
        answer = admin.post(f"/boards/{BOARD}/tasks/import", json=tasks)
        assert answer.status_code == 201, answer.text

    ledger = Ledger()
    stop_agents = threading.Event()
    agents: list[SimAgent] = []

    def launch(kind: str, count: int, wave: int, *, wait_for_task: bool = False) -> list[SimAgent]:
        started: list[SimAgent] = []
        for n in range(count):
            agent = SimAgent(
                f"{kind}-{wave}-{n}", kind, cluster, key, ledger, stop_agents,
                seed=plan.seed + len(agents),
            )  # fmt: skip
            agent.wait_for_task = wait_for_task
            agents.append(agent)
            started.append(agent)
            agent.start()
        return started

    def assign(wave: list[SimAgent], first: int) -> None:
        """Give each agent of `wave` its own task through the admin's assign path.
        The tasks are made with a skill nobody has, so no finisher takes them
        first; once assigned, the skill is dropped, so that finishers can take
        them over after the recovery."""
        add_tasks(first, len(wave), skills=("reserved",))
        for n, agent in enumerate(wave):
            task = f"t{first + n:03d}"
            answer = admin.post(
                f"/boards/{BOARD}/tasks/{task}/assign", json={"agent_id": agent.agent_id}
            )
            assert answer.status_code == 200, answer.text
            agent.assigned.set()
            freed = admin.patch(f"/boards/{BOARD}/tasks/{task}", json={"required_skills": []})
            assert freed.status_code == 200, freed.text

    stop_chaos = threading.Event()
    chaos_log: list[tuple[str, datetime]] = []
    chaos = threading.Thread(target=_chaos, args=(cluster, plan, stop_chaos, chaos_log))
    started = datetime.now(UTC)
    marks: dict[str, float] = {"start": time.monotonic()}
    try:
        add_tasks(0, plan.tasks[0])
        launch("dier", plan.diers[0], 1)
        launch("zombie", plan.zombies[0], 1)
        launch("finisher", plan.finishers, 1)
        chaos.start()
        time.sleep(plan.chaos_s)
        # A loaded machine restarts slowly: keep going (boundedly) until the
        # chaos has killed as often as the plan asks.
        wait_until(
            lambda: sum(1 for what, _ in chaos_log if what == "kill") >= plan.min_kills,
            plan.chaos_s * 3,
            0.2,
            f"{plan.min_kills} kills",
        )
        stop_chaos.set()
        chaos.join()
        for replica in cluster.replicas:  # a kill may have landed just before the stop
            if not replica.running:
                replica.start()
                chaos_log.append(("ready", datetime.now(UTC)))
        calm_since = datetime.now(UTC)
        marks["calm"] = time.monotonic()
        wave = launch("dier", plan.diers[1], 2, wait_for_task=True)
        wave += launch("zombie", plan.zombies[1], 2, wait_for_task=True)
        for agent in wave:
            assert agent.registered.wait(60), f"{agent.agent_id} never registered"
        assign(wave, plan.tasks[0])
        add_tasks(plan.tasks[0] + len(wave), plan.tasks[1] - len(wave))
        total = sum(plan.tasks)

        def all_done() -> bool:
            rows = admin.get(f"/boards/{BOARD}/tasks", params={"status": "done"}).json()["tasks"]
            return len(rows) == total

        try:
            wait_until(all_done, plan.finish_timeout_s, 0.25, "every task to be done")
        finally:
            marks["done"] = time.monotonic()
            stop_agents.set()
            for agent in agents:
                agent.join(15)
    finally:
        stop_chaos.set()
        admin.close()
        marks["agents"] = time.monotonic()
        cluster.close()
    marks["stopped"] = time.monotonic()
    snapshot = load()
    problems = check(snapshot, ledger)
    problems += [f"agent error: {text}" for text in ledger.errors]

    # 6. Each dead agent's task recovered by recover-after (or the last restart,
    # if later) plus two monitor intervals.
    restarts = [at for what, at in chaos_log if what == "ready"]
    last_restart = max(restarts, default=started)
    rows, recovered = lease_rows(snapshot), recoveries(snapshot)
    slack = timedelta(seconds=2 * plan.interval_s)
    late: list[str] = []
    worst = 0.0
    for death in ledger.deaths:
        row = rows[(death.task, death.epoch)]
        event = recovered.get((death.task, death.epoch))
        if event is None:
            late.append(f"{death}: never recovered (ended {row['end_reason']})")
            continue
        due = row["recover_after"]
        if event["at"] < due:
            late.append(f"{death}: recovered at {event['at']}, before recover-after {due}")
        calm = due >= calm_since  # no kill or restart can excuse this one
        bound = (due if calm else max(due, last_restart)) + slack
        if calm:
            worst = max(worst, (event["at"] - due).total_seconds())
        if event["at"] > bound:
            late.append(f"{death}: recovered at {event['at']}, after {bound}")
    problems += [f"chaos: {what}" for what, _ in chaos_log if what not in {"kill", "ready"}]
    events = snapshot.events
    figures = {
        "operations": ledger.counts["operations"],
        "kills": sum(1 for what, _ in chaos_log if what == "kill"),
        "recoveries": sum(1 for e in events if e["type"] == "lease.recovered"),
        "refusals (stale)": sum(1 for e in events if e["type"] == "lease.stale_refused"),
        "claims": ledger.counts["claims"],
        "claims adopted": ledger.counts["claims_adopted"],
        "reports acknowledged": ledger.counts["reports"],
        "completions": ledger.counts["completions"],
        "leases lost": ledger.counts["leases_lost"],
        "zombies refused": ledger.counts["stale_refused"],
        "zombies claimed back": ledger.counts["claimed_back"],
        "zombies revived": ledger.counts["revived"],
        "deaths": len(ledger.deaths),
        "failovers": cluster.failovers,
        "cut-off calls repeated": ledger.counts["transport_errors"],
        "events": len(events),
    }
    timeline = {k: round(v - marks["start"], 1) for k, v in marks.items() if k != "start"}
    return Outcome(
        ledger, snapshot, problems, figures["kills"], restarts, late, worst, figures, timeline
    )
