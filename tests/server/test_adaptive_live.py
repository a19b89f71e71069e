"""The default detector (`adaptive`) in a real server, its numbers scaled
from minutes down to seconds: a holder that goes silent is recovered about
one allowance after its last call, one that keeps its rhythm never is."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from tests.support.server import LiveServer, new_board, start_server, wait_until

from tenure.core.policy import DetectorPolicy

pytestmark = pytest.mark.xdist_group("server-adaptive")

#: The silence no rhythm excuses, in seconds (the default is 500 s).
MAX_SILENCE_S = 2.0
#: Slack for a loaded CI machine on top of the detector's bound.
MARGIN_S = 3.0
SCALED = {
    "TENURE_DETECTOR_POLICY": "adaptive",
    "TENURE_DETECTOR_PRIOR_MEDIAN": "0.5",
    "TENURE_DETECTOR_MIN_GAP": "0.05",
    "TENURE_DETECTOR_MIN_SILENCE": "1",
    "TENURE_DETECTOR_MAX_SILENCE": str(MAX_SILENCE_S),
    "TENURE_DETECTOR_VALIDATOR_SILENCE": "1",
    "TENURE_DETECTOR_ADAPTIVE_GRACE": "0.2",
    "TENURE_DETECTOR_SUSPECT_WINDOW": "1",
    "TENURE_MONITOR_INTERVAL": "0.2",
    "TENURE_CLAIM_RETRY_AFTER": "0.2",
}


def test_adaptive_is_the_default_detector() -> None:
    assert DetectorPolicy().kind == "adaptive"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("adaptive"), SCALED)
    yield live
    live.close()


def test_a_silent_holder_is_recovered_and_a_steady_one_is_not(server: LiveServer) -> None:
    fleet = new_board(server, "rhythm")
    fleet.add_tasks({"id": "quiet", "title": "Goes silent"}, {"id": "steady", "title": "Reports"})
    silent, _ = fleet.agent("silent")
    steady, _ = fleet.agent("steady")
    assert silent.post("/claim").json()["task"]["id"] == "quiet"
    assert steady.post("/claim").json()["task"]["id"] == "steady"
    last_call = time.monotonic()
    report = silent.post("/tasks/quiet/progress", json={"progress": 20, "message": "begun"})
    assert report.status_code == 200, report.text

    stop = threading.Event()
    refused: list[str] = []

    def keep_rhythm() -> None:
        n = 0
        while not stop.wait(0.3):  # well inside any allowance the detector may give
            n += 1
            answer = steady.post("/tasks/steady/progress", json={"progress": min(n, 90)})
            if answer.status_code != 200:
                refused.append(answer.text)

    thread = threading.Thread(target=keep_rhythm, daemon=True)
    thread.start()
    try:
        admin = server.admin()
        task = wait_until(
            lambda: (t := admin.get("/boards/rhythm/tasks/quiet").json())["status"] == "todo" and t,
            MAX_SILENCE_S + 10,
            what="the recovery of the silent holder's task",
        )
        silence = time.monotonic() - last_call
        # Not before the least allowance; within the cap plus the monitor's
        # pace (0.2 s), with a margin for a loaded machine.
        assert 1.0 <= silence <= MAX_SILENCE_S + 0.2 + MARGIN_S
        assert task["handoff"]["recovered_from_agent"] == "silent"
        assert task["handoff"]["previous_progress"] == 20
        time.sleep(1.0)  # the steady holder outlives the silent one's allowance too
    finally:
        stop.set()
        thread.join(5)
    assert refused == []
    held = server.admin().get("/boards/rhythm/tasks/steady").json()
    assert held["status"] == "in_progress" and held["assignee"] == "steady"
