"""`tenure serve --demo`: a live server with a demo board and simulated agents.

The agents are threads using `tenure.client.TenureClient` against the real
server, with leases of a few seconds so everything happens while a new user
watches (well within five minutes):

- alice and bob work through the board, reporting progress; alice sits
  through a long silent step, kept alive by her client's heartbeat;
- carol crashes halfway: the monitor recovers her task, and the next agent
  that claims it receives the handoff (carol's progress, note and branch);
- carol comes back late and reports completion: refused with `lease_lost`
  (fencing: the task has another holder);
- dave goes silent long enough to be recovered, then reports again before
  anyone else could take his task (only he has the `gpu` skill): he claims
  it back (a false alarm).

Every step prints one line; the event log holds the same story
(`tenure events --follow`). The server stays up until `--demo-seconds` have
passed since it started (or Ctrl-C), so the board can be explored afterwards.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from tenure.client import LeaseLostError, TenureClient
from tenure.core.errors import TenureError

BOARD = "demo"

#: Settings for the demo: leases of seconds, a fast monitor (env-style overrides).
#: The story is told in SPEC's lease phases, shrunk to seconds, so the demo pins
#: the `spec` detector: the `adaptive` one never allows less than 90 s of silence.
DEMO_SETTINGS: dict[str, str] = {
    "TENURE_DETECTOR_POLICY": "spec",
    **{f"TENURE_LEASE_PHASE{n}_LEASE": "3" for n in (1, 2, 3, 4)},
    **{f"TENURE_LEASE_PHASE{n}_GRACE": "1" for n in (1, 2, 3, 4)},
    "TENURE_LEASE_DEFAULT_LEASE": "3",
    "TENURE_LEASE_DEFAULT_GRACE": "1",
    "TENURE_LEASE_WARNING_THRESHOLD": "1",
    "TENURE_MONITOR_INTERVAL": "0.25",
    "TENURE_CLAIM_RETRY_AFTER": "0.5",
}

TASKS: list[dict[str, Any]] = [
    {"id": "train-model", "title": "Train the ranking model", "priority": "urgent",
     "required_skills": ["gpu"]},
    {"id": "parse-logs", "title": "Parse the access logs", "priority": "urgent"},
    {"id": "api", "title": "Build the search API", "priority": "high"},
    {"id": "ui", "title": "Search page", "priority": "medium"},
    {"id": "docs", "title": "Write the user guide", "priority": "medium"},
    {"id": "tests", "title": "End-to-end tests", "priority": "low"},
]  # fmt: skip

#: The progress steps a working agent reports, and the pause between two.
STEPS = (20, 40, 60, 80)
STEP_S = 0.5


class Demo:
    """The scripted scenario against a server at `url`, driven with `admin_token`."""

    def __init__(self, url: str, admin_token: str, *, out: TextIO | None = None) -> None:
        self.url = url
        self.admin_token = admin_token
        self.out = out or sys.stdout
        self.started = time.monotonic()
        self._print_lock = threading.Lock()
        self.stop = threading.Event()
        self.admin = TenureClient(url, admin_token)
        self.errors: list[BaseException] = []

    # ------------------------------------------------------------- output
    def say(self, who: str, text: str) -> None:
        """One line of the story."""
        with self._print_lock:
            self.out.write(f"[{time.monotonic() - self.started:6.1f}s] {who:<6} {text}\n")
            self.out.flush()

    # ------------------------------------------------------------ helpers
    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        return self.admin._call(method, path, body)

    def task(self, task_id: str) -> dict[str, Any]:
        """The task as the admin sees it."""
        task: dict[str, Any] = self._admin("GET", f"/boards/{BOARD}/tasks/{task_id}")
        return task

    def wait_for(self, what: Callable[[], bool], timeout: float) -> bool:
        """Poll `what` until it holds or `timeout` passes (or the demo stops)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            if what():
                return True
            time.sleep(0.2)
        return False

    def agent(
        self, agent_id: str, enrolment_key: str, skills: tuple[str, ...] = ()
    ) -> TenureClient:
        client = TenureClient(self.url, heartbeat_min_s=0.3)
        client.register(agent_id, enrolment_key=enrolment_key, skills=list(skills))
        self.say(agent_id, f"registered{' with skills ' + ','.join(skills) if skills else ''}")
        return client

    # ----------------------------------------------------------- scenario
    def run(self) -> None:
        """Set up the board and play every part; returns when the story is told."""
        board = self._admin("POST", "/boards", {"id": BOARD, "name": "Tenure demo"})
        key = board["enrolment_key"]
        self._admin("POST", f"/boards/{BOARD}/tasks/import", {"tasks": TASKS})
        self.say("admin", f"board {BOARD!r} with {len(TASKS)} tasks; leases last 3 s, grace 1 s")
        carol = self.agent("carol", key)
        dave = self.agent("dave", key, ("gpu",))
        alice = self.agent("alice", key)
        bob = self.agent("bob", key)

        carol_task = self.crash(carol)
        dave_task = self.go_silent(dave)
        workers = [
            threading.Thread(target=self.guard(self.work, alice, True), name="demo-alice"),
            threading.Thread(target=self.guard(self.work, bob, False), name="demo-bob"),
        ]
        for thread in workers:
            thread.start()
        returns = [
            threading.Thread(
                target=self.guard(self.come_back_late, carol, carol_task), name="demo-carol"
            ),
            threading.Thread(
                target=self.guard(self.false_alarm, dave, dave_task), name="demo-dave"
            ),
        ]
        for thread in returns:
            thread.start()
        for thread in [*workers, *returns]:
            thread.join()
        for client in (alice, bob, carol, dave):
            client.close()
        self.summary()

    def guard(self, fn: Callable[..., None], *args: Any) -> Callable[[], None]:
        """Run a part; a failure is printed and kept, never silent."""

        def part() -> None:
            try:
                fn(*args)
            except BaseException as exc:
                self.errors.append(exc)
                self.say("demo", f"a part failed: {exc!r}")

        return part

    def crash(self, carol: TenureClient) -> str:
        """carol claims, reports twice, and dies (no release, no heartbeat)."""
        answer = carol.claim()
        task_id = answer["task"]["id"]
        self.say("carol", f"claimed {task_id} (epoch {answer['lease']['epoch']})")
        carol.report(20, "read the log format", branch="tenure/carol")
        time.sleep(0.4)
        carol.report(40, "parser handles GET lines; POST lines next")
        carol.close()  # the process "crashes": no more heartbeats or reports
        self.say("carol", f"CRASHED at 40% on {task_id} (nothing more from her)")
        return str(task_id)

    def go_silent(self, dave: TenureClient) -> str:
        """dave claims the gpu task, reports twice, then stalls (heartbeat off)."""
        answer = dave.claim()
        task_id = answer["task"]["id"]
        self.say("dave", f"claimed {task_id} (only dave has the gpu skill)")
        dave.report(10, "dataset downloaded")
        time.sleep(0.4)
        dave.report(20, "training started")
        dave._stop()  # a long pause with no signal at all (the heartbeat is off)
        self.say("dave", "goes quiet: a long pause with no signal")
        return str(task_id)

    def work(self, me: TenureClient, long_step: bool) -> None:
        """Claim and finish tasks until none is left."""
        name = "alice" if long_step else "bob"
        idle_since: float | None = None
        first = True
        while not self.stop.is_set():
            answer = me.claim()
            if answer["task"] is None:
                idle_since = idle_since or time.monotonic()
                if answer["reason"] in {"no_todo_tasks", "skills_unmatched"} and self.board_done():
                    return
                if time.monotonic() - idle_since > 30:
                    return
                time.sleep(answer.get("retry_after_s", 0.5))
                continue
            idle_since = None
            task_id = answer["task"]["id"]
            first, long_step_now = False, first
            handoff = answer.get("handoff")
            if handoff:
                self.say(
                    name,
                    f"claimed {task_id} WITH A HANDOFF from {handoff['recovered_from_agent']}: "
                    f"{handoff['previous_progress']}% done, "
                    f"branch {handoff['previous_agent_branch']}, "
                    f"last note {handoff['last_progress_message']!r}",
                )
            else:
                self.say(name, f"claimed {task_id} (epoch {answer['lease']['epoch']})")
            try:
                self.do_task(me, name, task_id, long_step and long_step_now)
            except LeaseLostError as lost:
                self.say(name, f"lost the lease on {task_id}: {lost.message}")

    def do_task(self, me: TenureClient, name: str, task_id: str, long_step: bool) -> None:
        for step in STEPS:
            time.sleep(STEP_S)
            me.report(step, f"step {step // 20} of {len(STEPS) + 1}")
            if long_step and step == 40:
                self.say(
                    name, "a long silent step (5 s, longer than the lease); the heartbeat keeps it"
                )
                time.sleep(5)
                self.say(
                    name, f"back from the long step; {me.heartbeats_sent} heartbeats were sent"
                )
        time.sleep(STEP_S)
        me.complete("done")
        self.say(name, f"completed {task_id}")

    def board_done(self) -> bool:
        tasks = self._admin("GET", f"/boards/{BOARD}/tasks")["tasks"]
        return all(t["status"] in {"done", "blocked"} or t["required_skills"] for t in tasks)

    def come_back_late(self, carol: TenureClient, task_id: str) -> None:
        """carol returns after someone else took her task: fenced off."""
        self.wait_for(lambda: self.task(task_id)["recovery_count"] > 0, 30)
        self.say(
            "tenure",
            f"monitor RECOVERED {task_id} from carol; it is back on the board with a handoff",
        )
        self.wait_for(lambda: self.task(task_id)["assignee"] not in (None, "carol"), 30)
        ghost = TenureClient(self.url, carol.token)
        try:
            ghost.complete("finished it after all!", task_id=task_id)
            self.say("carol", "?! her late completion was accepted (it should not be)")
        except LeaseLostError as refused:
            self.say(
                "carol",
                f"came back and reported completion: REFUSED ({refused.code}): {refused.message}",
            )
        finally:
            ghost.close()

    def false_alarm(self, dave: TenureClient, task_id: str) -> None:
        """dave was only slow: he reports again before anyone took the task."""
        self.wait_for(lambda: self.task(task_id)["status"] == "todo", 30)
        self.say(
            "tenure", f"monitor recovered {task_id} from dave (silent past his lease and grace)"
        )
        back = TenureClient(self.url, dave.token, heartbeat_min_s=0.3)
        try:
            answer = back.report(
                30, "still training: the pause was a slow checkpoint", task_id=task_id
            )
            self.say(
                "dave",
                f"reported again: CLAIMED BACK {task_id} "
                f"({answer['result']}, new epoch {answer['lease']['epoch']})",
            )
            for step in (60, 90):
                time.sleep(STEP_S)
                back.report(step, "training")
            back.complete("model trained")
            self.say("dave", f"completed {task_id}")
        finally:
            back.close()

    def summary(self) -> None:
        stats = self._admin("GET", f"/statistics?board_id={BOARD}")
        self.say(
            "tenure",
            "summary: recoveries {r}, claimed back {fr}, late calls refused {s}".format(
                r=sum(stats["recoveries"].values()),
                fr=stats["false_recoveries"]["reclaimed"],
                s=stats["stale_refused"] + stats["false_recoveries"]["lost"],
            ),
        )


def run_demo(
    url: str,
    admin_token: str,
    *,
    seconds: float,
    stop_server: Callable[[], None],
    out: TextIO | None = None,
) -> None:
    """Play the scenario, keep the server up until `seconds` after the start, then stop it."""
    demo = Demo(url, admin_token, out=out)
    demo.say(
        "demo",
        f"server at {url}; follow along: tenure events --follow --url {url} --token {admin_token}",
    )
    try:
        demo.run()
        demo.say(
            "demo",
            f"the story is told; the server stays up to {seconds:.0f} s "
            "for a look around (Ctrl-C to stop)",
        )
    except (TenureError, OSError) as exc:
        demo.say("demo", f"the demo failed: {exc!r}")
    finally:
        demo.admin.close()
    remaining = seconds - (time.monotonic() - demo.started)
    if remaining > 0:
        demo.stop.wait(remaining)
    demo.say("demo", "stopping the server")
    stop_server()
