"""Who may do what over HTTP, and SPEC's error shape for every kind of refusal,
against one real server process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from tests.support.server import Fleet, LiveServer, new_board, start_server

pytestmark = pytest.mark.xdist_group("server-auth")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("auth"))
    yield live
    live.close()


@pytest.fixture(scope="module")
def boards(server: LiveServer) -> tuple[Fleet, Fleet]:
    """Two boards with one task each; `alpha` has two agents, one holding a1."""
    alpha, beta = new_board(server, "alpha"), new_board(server, "beta")
    alpha.add_tasks({"id": "a1", "title": "alpha's task"}, {"id": "a2", "title": "another"})
    beta.add_tasks({"id": "b1", "title": "beta's task"})
    return alpha, beta


def refused(response: httpx.Response, status: int, code: str) -> dict:
    """Assert SPEC's error shape with this status and code; the error body."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def test_a_request_without_a_token_is_unauthorized(server: LiveServer) -> None:
    answer = server.client().get("/boards")
    refused(answer, 401, "unauthorized")
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    refused(server.client().post("/claim"), 401, "unauthorized")


def test_a_wrong_or_malformed_token_is_unauthorized(server: LiveServer) -> None:
    for token in ("nonsense", "tnr_agent_doesnotexist", "tnr_admin_guess", "tnr_enrol_x"):
        refused(server.client(token).get("/boards"), 401, "unauthorized")
    basic = httpx.get(server.url + "/api/v1/boards", headers={"Authorization": "Basic eDp5"})
    refused(basic, 401, "unauthorized")


def test_a_revoked_agent_token_is_refused_at_once(server: LiveServer, boards: tuple) -> None:
    alpha, _ = boards
    agent, _ = alpha.agent("short-lived")
    assert agent.get("/me").status_code == 200
    revoked = server.admin().post("/boards/alpha/agents/short-lived/revoke")
    assert revoked.status_code == 200 and revoked.json()["agent"]["revoked"] is True
    refused(agent.get("/me"), 401, "unauthorized")
    refused(agent.post("/claim"), 401, "unauthorized")


def test_an_agent_cannot_act_on_a_task_another_agent_holds(
    server: LiveServer, boards: tuple
) -> None:
    alpha, _ = boards
    holder, _ = alpha.agent("holder")
    other, _ = alpha.agent("other")
    claimed = holder.post("/claim").json()
    task_id = claimed["task"]["id"]
    for path, body in (
        (f"/tasks/{task_id}/progress", {"progress": 50}),
        (f"/tasks/{task_id}/progress", {"status": "completed"}),
        (f"/tasks/{task_id}/release", {}),
        (f"/tasks/{task_id}/heartbeat", {}),
    ):
        refused(other.post(path, json=body), 403, "not_holder")
    lease = server.admin().get(f"/boards/alpha/tasks/{task_id}").json()["lease"]
    assert lease["agent_id"] == "holder" and lease["progress"] == 0


def test_an_enrolment_key_may_only_register_agents(server: LiveServer, boards: tuple) -> None:
    alpha, _ = boards
    key = server.client(alpha.enrolment_key)
    refused(key.post("/claim"), 403, "forbidden")
    refused(key.get("/boards"), 403, "forbidden")
    refused(key.get("/boards/alpha/tasks"), 403, "forbidden")
    refused(key.post("/boards", json={"id": "mine"}), 403, "forbidden")
    refused(key.post("/boards/alpha/tasks", json={"id": "z", "title": "z"}), 403, "forbidden")
    refused(key.get("/events"), 403, "forbidden")
    refused(key.get("/events/stream"), 403, "forbidden")
    refused(key.get("/tasks/a1/context"), 403, "forbidden")
    registered = key.post("/agents", json={"agent_id": "enrolled"})
    assert registered.status_code == 201
    assert registered.json()["agent"]["board_id"] == "alpha"
    # A board name in the body does not move the agent to another board.
    elsewhere = key.post("/agents", json={"agent_id": "sneaky", "board_id": "beta"})
    assert elsewhere.status_code == 201 and elsewhere.json()["agent"]["board_id"] == "alpha"


def test_agents_see_only_their_own_board(server: LiveServer, boards: tuple) -> None:
    _, beta = boards
    outsider, _ = beta.agent("outsider")
    refused(outsider.get("/boards/alpha/tasks"), 404, "not_found")
    refused(outsider.get("/boards/alpha/tasks/a1"), 404, "not_found")
    refused(outsider.get("/boards/alpha/agents"), 404, "not_found")
    refused(outsider.get("/leases", params={"board_id": "alpha"}), 404, "not_found")
    refused(outsider.get("/events", params={"board_id": "alpha"}), 404, "not_found")
    refused(outsider.post("/tasks/a1/progress", json={"progress": 5}), 404, "not_found")
    refused(outsider.get("/tasks/a1/context"), 404, "not_found")
    boards_seen = outsider.get("/boards").json()["boards"]
    assert [b["id"] for b in boards_seen] == ["beta"]
    events = outsider.get("/events").json()["events"]
    assert events and {e["board_id"] for e in events} == {"beta"}


def test_admin_routes_refuse_agents_and_viewers(server: LiveServer, boards: tuple) -> None:
    alpha, _ = boards
    agent, _ = alpha.agent("plain")
    viewer_token = server.admin().post("/boards", json={"id": "viewed"}).json()["viewer_token"]
    viewer = server.client(viewer_token)
    assert viewer.get("/boards/viewed/tasks").status_code == 200
    for caller in (agent, viewer):
        refused(caller.post("/boards", json={"id": "nope"}), 403, "forbidden")
        board = "alpha" if caller is agent else "viewed"
        refused(
            caller.post(f"/boards/{board}/tasks", json={"id": "n", "title": "n"}), 403, "forbidden"
        )
    refused(agent.post("/boards/alpha/tasks/a2/unassign"), 403, "forbidden")
    refused(
        agent.post("/boards/alpha/tasks/a2/assign", json={"agent_id": "plain"}), 403, "forbidden"
    )
    refused(agent.post("/boards/alpha/agents/holder/revoke"), 403, "forbidden")
    refused(agent.post("/boards/alpha/tasks/a2/requeue"), 403, "forbidden")


def test_a_body_over_one_mebibyte_is_refused_with_413(server: LiveServer) -> None:
    admin = server.admin()
    big = b'{"id": "big", "title": "' + b"x" * (1024 * 1024) + b'"}'
    declared = admin.post("/boards", content=big, headers={"Content-Type": "application/json"})
    refused(declared, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size shows while streaming
        for _ in range(17):
            yield b"y" * 65536

    streamed = admin.post(
        "/boards/alpha/tasks/import", content=chunks(), headers={"Content-Type": "application/json"}
    )
    refused(streamed, 413, "payload_too_large")
    assert admin.get("/boards").status_code == 200


def test_fields_out_of_range_are_refused_with_422(server: LiveServer, boards: tuple) -> None:
    alpha, _ = boards
    worker, _ = alpha.agent("ranger")
    task_id = worker.post("/claim").json()["task"]["id"]
    for body in (
        {"progress": 101},
        {"progress": -1},
        {"progress": "half"},
        {"status": "finished"},
        {"message": "m" * (16 * 1024 + 1)},
        {"branch": "-rf"},
        {"surprise": True},
    ):
        error = refused(worker.post(f"/tasks/{task_id}/progress", json=body), 422, "invalid_input")
        assert error["details"]["errors"], error
    not_json = worker.post(
        f"/tasks/{task_id}/progress", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    refused(not_json, 422, "invalid_input")
    refused(server.admin().get("/events", params={"limit": 0}), 422, "invalid_input")


@pytest.mark.parametrize("agent_id", ["../x", "-x", "a b", " x", "x/y", "", "a" * 65])
def test_invalid_agent_ids_are_refused(server: LiveServer, boards: tuple, agent_id: str) -> None:
    alpha, _ = boards
    answer = server.client(alpha.enrolment_key).post("/agents", json={"agent_id": agent_id})
    refused(answer, 422, "invalid_input")


def test_the_longest_valid_agent_id_is_accepted(server: LiveServer, boards: tuple) -> None:
    alpha, _ = boards
    answer = server.client(alpha.enrolment_key).post("/agents", json={"agent_id": "a" * 64})
    assert answer.status_code == 201


def test_unknown_routes_and_ids_answer_not_found(server: LiveServer, boards: tuple) -> None:
    admin = server.admin()
    refused(admin.get("/no/such/route"), 404, "not_found")
    refused(httpx.get(server.url + "/nothing-here"), 404, "not_found")
    refused(admin.get("/boards/alpha/tasks/missing"), 404, "not_found")
    refused(admin.get("/boards/missing/tasks"), 404, "not_found")
    refused(admin.post("/boards", json={"id": "alpha"}), 409, "conflict")


def test_task_listings_come_in_pages_and_a_bad_page_is_invalid_input(
    server: LiveServer, boards: tuple
) -> None:
    admin = server.admin()
    first = admin.get("/boards/alpha/tasks", params={"limit": 1}).json()
    assert [t["id"] for t in first["tasks"]] == ["a1"] and first["next"]
    second = admin.get("/boards/alpha/tasks", params={"limit": 1, "after": first["next"]})
    assert [t["id"] for t in second.json()["tasks"]] == ["a2"] and second.json()["next"] is None
    whole = admin.get("/boards/alpha/tasks").json()
    assert [t["id"] for t in whole["tasks"]] == ["a1", "a2"] and whole["next"] is None
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"after": "x" * 600}):
        refused(admin.get("/boards/alpha/tasks", params=params), 422, "invalid_input")
    overview = admin.get("/boards/alpha/overview").json()
    assert sorted(t["id"] for t in overview["tasks"]) == ["a1", "a2"]  # one may be held
    assert (overview["done_total"], overview["done_shown"]) == (0, 200) and overview["now"]
    refused(admin.get("/boards/missing/overview"), 404, "not_found")
    not_a_cursor = admin.get("/boards/alpha/tasks", params={"after": "bm9wZQ"})
    bad = refused(not_a_cursor, 422, "invalid_input")
    assert bad["details"]["field"] == "after"


def test_health_readiness_and_openapi(server: LiveServer) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert "reachable from other machines" not in server.logs()  # loopback: no warning
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["checks"]["monitor"]["passes"] >= 1
    schema = httpx.get(server.url + "/openapi.json").json()
    assert "/api/v1/claim" in schema["paths"] and "/api/v1/events/stream" in schema["paths"]
    progress = schema["components"]["schemas"]["ProgressIn"]["properties"]["progress"]
    bounds = progress["anyOf"][0]
    assert bounds["minimum"] == 0 and bounds["maximum"] == 100
    assert httpx.get(server.url + "/docs").status_code == 200
    metrics = httpx.get(server.url + "/metrics")
    assert metrics.status_code == 200 and "tenure_" in metrics.text
