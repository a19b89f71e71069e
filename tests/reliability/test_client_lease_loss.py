"""The client under a lease loss learnt twice at once: by its background
heartbeat and by the worker's own call. Found by the chaos runs: the loss
the heartbeat flagged stayed pending after the worker's own call had told
it, and failed the worker's next, unrelated call (its next claim)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tenure.client import LeaseLostError, TenureClient

LOST = {"error": {"code": "lease_lost", "message": "the task was taken back", "details": {}}}


def test_a_loss_told_by_the_workers_own_call_does_not_fail_its_next_claim() -> None:
    progress_sent = threading.Event()
    claims = 0
    client: TenureClient

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal claims
        path = request.url.path
        if path.endswith("/claim"):
            claims += 1
            if claims > 1:
                return httpx.Response(200, json={"task": None, "reason": "no_todo_tasks"})
            lease = {"task_id": "t1", "epoch": 1, "seconds_left": 0.3}
            return httpx.Response(200, json={"task": {"id": "t1"}, "lease": lease})
        if path.endswith("/heartbeat"):
            progress_sent.wait(5)  # the heartbeat crosses the worker's report
            return httpx.Response(409, json=LOST)
        if path.endswith("/progress"):
            assert json.loads(request.content)["progress"] == 50
            progress_sent.set()
            deadline = time.monotonic() + 5
            while client._lost is None and time.monotonic() < deadline:  # the heartbeat flags it
                time.sleep(0.01)
            return httpx.Response(409, json=LOST)
        raise AssertionError(path)

    client = TenureClient("http://tenure", "tnr_agent_x", transport=httpx.MockTransport(handler))
    with client:
        assert client.claim()["task"]["id"] == "t1"
        with pytest.raises(LeaseLostError):
            client.report(50)
        assert client.claim()["task"] is None  # raised LeaseLostError before the fix
        assert client.task_id is None
