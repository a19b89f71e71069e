"""End to end against a real server process with leases of 2 s: recovery and
handoff over HTTP, the SSE stream's resumption, and the Python client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
from tests.support.server import SHORT_LEASES, LiveServer, new_board, start_server, wait_until

from tenure.client import LeaseLostError, TenureClient

pytestmark = pytest.mark.xdist_group("server-short-leases")

MONITOR_INTERVAL_S = float(SHORT_LEASES["TENURE_MONITOR_INTERVAL"])
LEASE_S = float(SHORT_LEASES["TENURE_LEASE_PHASE2_LEASE"])
#: Slack for a loaded CI machine on top of SPEC's bound (deadline + one interval).
MARGIN_S = 1.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("e2e"), SHORT_LEASES)
    yield live
    live.close()


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_dead_agents_task_is_recovered_handed_off_and_its_late_completion_refused(
    server: LiveServer,
) -> None:
    fleet = new_board(server, "e2e")
    fleet.add_tasks({"id": "t1", "title": "Parse the logs", "priority": "high"})
    first, _ = fleet.agent("first")
    second, _ = fleet.agent("second")

    claimed = first.post("/claim").json()
    assert claimed["task"]["id"] == "t1" and claimed["handoff"] is None
    report = first.post(
        "/tasks/t1/progress",
        json={"progress": 30, "message": "GET lines parsed", "branch": "feature/t1"},
    )
    assert report.status_code == 200, report.text
    lease = report.json()["lease"]
    recover_after = when(lease["recover_after"])
    assert recover_after == when(lease["expires_at"]) + timedelta(seconds=lease["grace_s"])

    # The agent stops. The monitor takes the task back, no earlier than
    # recover-after and no later than that plus one interval (with a margin).
    admin = server.admin()
    bound = LEASE_S + lease["grace_s"] + MONITOR_INTERVAL_S + MARGIN_S
    task = wait_until(
        lambda: (t := admin.get("/boards/e2e/tasks/t1").json())["status"] == "todo" and t,
        bound + 2,
        what="the recovery of t1",
    )
    handoff = task["handoff"]
    recovered_at = when(handoff["recovered_at"])
    assert (
        recover_after
        <= recovered_at
        <= recover_after + timedelta(seconds=MONITOR_INTERVAL_S + MARGIN_S)
    )
    assert task["recovery_count"] == 1 and task["assignee"] is None

    # The next agent's claim carries the handoff.
    next_claim = second.post("/claim").json()
    assert next_claim["task"]["id"] == "t1"
    given = next_claim["handoff"]
    assert given["recovered_from_agent"] == "first"
    assert given["previous_progress"] == 30
    assert given["previous_agent_branch"] == "feature/t1"
    assert given["last_progress_message"] == "GET lines parsed"
    assert "git merge feature/t1" in given["instructions"]
    assert next_claim["lease"]["epoch"] == claimed["lease"]["epoch"] + 1

    done = second.post("/tasks/t1/progress", json={"status": "completed", "progress": 100})
    assert done.status_code == 200 and done.json()["task"]["status"] == "done"

    # The dead agent wakes up and reports completion: refused, nothing changes.
    late = first.post("/tasks/t1/progress", json={"status": "completed", "progress": 100})
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "lease_lost"
    assert set(late.json()["error"]) == {"code", "message", "details"}
    final = admin.get("/boards/e2e/tasks/t1").json()
    assert final["status"] == "done" and final["epoch"] == next_claim["lease"]["epoch"]
    types = [e["type"] for e in admin.get("/events", params={"board_id": "e2e"}).json()["events"]]
    assert "lease.recovered" in types


def _read_events(response: httpx.Response, count: int, timeout: float) -> list[dict]:
    """Read `count` SSE events (id and data) from an open stream."""
    events: list[dict] = []
    current_id: int | None = None
    deadline = time.monotonic() + timeout
    for line in response.iter_lines():
        if line.startswith("id:"):
            current_id = int(line[3:].strip())
        elif line.startswith("data:"):
            event = json.loads(line[5:].strip())
            assert event["id"] == current_id
            events.append(event)
            if len(events) == count:
                return events
        assert time.monotonic() < deadline, f"only {len(events)} of {count} events arrived"
    return events


def test_the_event_stream_resumes_with_last_event_id_and_misses_nothing(server: LiveServer) -> None:
    fleet = new_board(server, "sse")
    fleet.add_tasks(*({"id": f"s{i}", "title": f"task {i}"} for i in range(3)))
    worker, _ = fleet.agent("w")
    worker.post("/claim")
    admin = server.admin()
    params = {"board_id": "sse"}
    timeout = httpx.Timeout(10.0, read=10.0)

    with admin.stream("GET", "/events/stream", params=params, timeout=timeout) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        first_part = _read_events(stream, 4, 10)  # 3 task.created, lease.created
    last_seen = first_part[-1]["id"]

    # While nobody listens, more happens.
    for progress in (10, 20, 30):
        assert worker.post("/tasks/s0/progress", json={"progress": progress}).status_code == 200
    worker.post("/tasks/s0/progress", json={"status": "completed"})
    everything = admin.get("/events", params=params).json()["events"]
    missed = [e for e in everything if e["id"] > last_seen]
    assert len(missed) >= 4

    headers = {"Last-Event-ID": str(last_seen)}
    with admin.stream(
        "GET", "/events/stream", params=params, headers=headers, timeout=timeout
    ) as stream:
        second_part = _read_events(stream, len(missed), 10)
    assert [e["id"] for e in second_part] == [e["id"] for e in missed]
    assert [e["id"] for e in first_part + second_part] == [e["id"] for e in everything]


def test_the_event_stream_delivers_new_events_live(server: LiveServer) -> None:
    fleet = new_board(server, "live")
    admin = server.admin()
    start = admin.get("/events", params={"board_id": "live"}).json()["last_id"]
    with admin.stream(
        "GET", "/events/stream", params={"board_id": "live", "after": start}, timeout=10
    ) as stream:
        fleet.add_tasks({"id": "x1", "title": "appears while we listen"})
        (event,) = _read_events(stream, 1, 10)
    assert event["type"] == "task.created" and event["task_id"] == "x1"


def test_the_client_heartbeat_keeps_a_lease_through_a_long_silent_step(server: LiveServer) -> None:
    fleet = new_board(server, "hb")
    fleet.add_tasks({"id": "long", "title": "A long build"})
    with TenureClient(server.url, heartbeat_min_s=0.1) as worker:
        worker.register("builder", enrolment_key=fleet.enrolment_key)
        claimed = worker.claim()
        worker.report(10, "build started")
        epoch = worker.epoch
        assert epoch == claimed["lease"]["epoch"]
        # A step twice as long as the lease plus its grace, with no report.
        time.sleep(2 * (LEASE_S + 0.5))
        assert worker.heartbeats_sent >= 3
        answer = worker.report(90, "build finished")
        assert answer["result"] == "renewed" and answer["lease"]["epoch"] == epoch
        done = worker.complete("built")
        assert done["task"]["status"] == "done"
    task = server.admin().get("/boards/hb/tasks/long").json()
    assert task["recovery_count"] == 0 and [h["epoch"] for h in task["history"]] == [epoch]


def test_after_an_admin_unassign_the_heartbeat_flags_the_loss_and_the_next_call_raises(
    server: LiveServer,
) -> None:
    fleet = new_board(server, "unassign")
    fleet.add_tasks({"id": "u1", "title": "Soon taken away"})
    with TenureClient(server.url, heartbeat_min_s=0.1) as worker:
        worker.register("w1", enrolment_key=fleet.enrolment_key)
        worker.claim()
        worker.report(20, "working")
        assert server.admin().post("/boards/unassign/tasks/u1/unassign").status_code == 200
        wait_until(lambda: worker._lost is not None, 5, what="the heartbeat to notice")
        sent_before = worker.heartbeats_sent
        with pytest.raises(LeaseLostError) as lost:
            worker.report(30, "still working?")
        assert lost.value.code == "lease_lost" and lost.value.task_id == "u1"
        assert worker.task_id is None and worker.heartbeats_sent == sent_before
    # The report raised before reaching the server: the task stays unassigned.
    task = server.admin().get("/boards/unassign/tasks/u1").json()
    assert task["status"] == "todo" and task["handoff"]["recovery_reason"] == "unassigned"


def test_after_an_admin_unassign_the_very_next_call_raises(server: LiveServer) -> None:
    fleet = new_board(server, "unassign2")
    fleet.add_tasks({"id": "u2", "title": "Taken away at once"})
    with TenureClient(server.url, heartbeat_max_s=30, heartbeat_min_s=30) as worker:
        worker.register("w2", enrolment_key=fleet.enrolment_key)
        worker.claim()
        assert server.admin().post("/boards/unassign2/tasks/u2/unassign").status_code == 200
        with pytest.raises(LeaseLostError):
            worker.complete("done anyway")
    task = server.admin().get("/boards/unassign2/tasks/u2").json()
    assert task["status"] == "todo"


def test_a_heartbeat_crossing_a_completion_is_not_reported_as_a_loss(server: LiveServer) -> None:
    fleet = new_board(server, "crossing")
    fleet.add_tasks(*({"id": f"c{i}", "title": f"quick {i}"} for i in range(6)))
    with TenureClient(server.url, heartbeat_min_s=0.01, heartbeat_max_s=0.01) as worker:
        worker.register("quick", enrolment_key=fleet.enrolment_key)
        for _ in range(6):
            assert worker.claim()["task"] is not None
            worker.report(50, "half")
            time.sleep(0.05)  # let heartbeats fly
            worker.complete("done")
        answer = worker.claim()  # would raise if a crossed heartbeat were taken for a loss
        assert answer["task"] is None and answer["reason"] == "no_todo_tasks"


def test_a_worker_finishes_and_takes_the_next_task_in_one_call(server: LiveServer) -> None:
    fleet = new_board(server, "chain")
    fleet.add_tasks(*({"id": f"n{i}", "title": f"step {i}"} for i in range(3)))
    with TenureClient(server.url, heartbeat_min_s=0.05, heartbeat_max_s=0.05) as worker:
        worker.register("chainer", enrolment_key=fleet.enrolment_key)
        held = worker.claim()["task"]["id"]
        finished = []
        for _ in range(3):
            answer = worker.complete("done", claim_next=True)
            assert answer["task"]["id"] == held and answer["task"]["status"] == "done"
            finished.append(held)
            following = answer["next"]["task"]
            if following is None:
                assert answer["next"]["reason"] == "no_todo_tasks"
                assert worker.task_id is None
                break
            # The client holds the new lease: its heartbeat quotes the new epoch.
            held = following["id"]
            assert worker.task_id == held and worker.epoch == answer["next"]["lease"]["epoch"]
            sent = worker.heartbeats_sent
            wait_until(lambda sent=sent: worker.heartbeats_sent > sent, 5, what="a heartbeat")
        assert sorted(finished) == ["n0", "n1", "n2"]
    fleet.add_tasks({"id": "n3", "title": "stuck"}, {"id": "n4", "title": "after"})
    with TenureClient(server.url, heartbeat_min_s=30, heartbeat_max_s=30) as worker:
        worker.register("blocked-one", enrolment_key=fleet.enrolment_key)
        stuck = worker.claim()["task"]["id"]
        moved = worker.block("no access", claim_next=True)
        assert moved["task"]["status"] == "blocked"
        assert worker.task_id == moved["next"]["task"]["id"] != stuck
    refused = fleet.agent("other")[0].post("/tasks/n0/progress", json={"claim_next": "later"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_input"


def test_the_agent_protocol_routes_over_http(server: LiveServer) -> None:
    fleet = new_board(server, "proto")
    fleet.add_tasks({"id": "p1", "title": "Protocol", "description": "every route once"})
    agent, _ = fleet.agent("p")
    admin = server.admin()
    me = agent.get("/me").json()
    assert me["role"] == "agent" and me["agent_id"] == "p" and me["notice"]["leases"] == []

    epoch = agent.post("/claim").json()["lease"]["epoch"]
    context = agent.get("/tasks/p1/context").json()
    assert context["task"]["description"] == "every route once" and context["handoff"] is None
    beat = agent.post("/tasks/p1/heartbeat", json={"epoch": epoch, "conflict": True}).json()
    assert beat["ok"] and beat["lease"]["conflict_extensions"] == 1
    assert agent.post("/heartbeat").json()["notice"]["leases"][0]["task_id"] == "p1"
    stale = agent.post("/tasks/p1/heartbeat", json={"epoch": epoch + 7})
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "lease_lost"

    released = agent.post("/tasks/p1/release", json={"message": "over to someone else"}).json()
    assert released["task"]["status"] == "todo"
    assert released["task"]["handoff"]["recovery_reason"] == "released"

    agent.post("/claim")
    blocked = agent.post("/tasks/p1/block", json={"description": "needs credentials"})
    assert blocked.status_code == 200 and blocked.json()["task"]["status"] == "blocked"
    assert admin.post("/boards/proto/tasks/p1/requeue").json()["status"] == "todo"

    agent.post("/claim")
    validating = agent.post("/tasks/p1/progress", json={"status": "completed", "validate": True})
    assert validating.json()["task"]["status"] == "in_progress"
    assert "validating" in validating.json()["lease"]["flags"]
    checked = admin.post("/boards/proto/tasks/p1/validation", json={"passed": True, "note": "ok"})
    assert checked.status_code == 200 and checked.json()["task"]["status"] == "done"
    admin_context = admin.get("/boards/proto/tasks/p1/context").json()
    assert admin_context["task"]["status"] == "done"


@pytest.mark.parametrize(
    "read",
    [
        "/boards/{board}/tasks", "/boards/{board}/overview",
        "/leases", "/statistics", "/events", "/me", "/boards",
    ],
)  # fmt: skip
def test_any_authenticated_call_of_an_agent_touches_its_lease(
    server: LiveServer, read: str
) -> None:
    board = "touch-" + "".join(ch for ch in read if ch.isalpha())
    fleet = new_board(server, board)
    fleet.add_tasks({"id": "t", "title": "held"})
    agent, _ = fleet.agent("toucher")
    before = agent.post("/claim").json()["lease"]
    time.sleep(0.3)  # the clock must move for an extension to show
    assert agent.get(read.format(board=board)).status_code == 200
    lease = server.admin().get("/leases", params={"board_id": board}).json()["leases"][0]
    assert when(lease["expires_at"]) > when(before["expires_at"])
    assert lease["version"] > before["version"]
