"""Fuzzing the HTTP API from its own OpenAPI schema with schemathesis, against
a live server holding real data (boards, agents, a held lease):

- stateless: every operation gets schema-valid and schema-violating requests,
  as the admin and as an agent;
- stateful: schemathesis chains operations along the links it infers (a
  board created, then its tasks listed, a task added, then assigned, ...).

Every answer must be below 500, and every error must be in SPEC's shape
`{"error": {"code", "message", "details"}}`. After the fuzzing, nothing is
half-written: tasks and leases in the database still agree. The example
counts are bounded so the whole file stays within about a minute.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import FlakyStrategyDefinition, Unsatisfiable
from schemathesis.core.transport import Response
from schemathesis.generation.modes import GenerationMode
from tests.support.server import LiveServer, new_board, start_server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fuzz-api")]

#: Examples per operation and mode, and stateful scenarios (FUZZ_EXAMPLES and
#: FUZZ_SCENARIOS raise them for a deeper local run); steps per scenario.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
SCENARIOS = int(os.environ.get("FUZZ_SCENARIOS", "20"))
STEPS = 8
CODES = {
    "unauthorized", "forbidden", "not_holder", "not_found", "lease_lost", "conflict",
    "payload_too_large", "invalid_input", "store_unavailable",
}  # fmt: skip


def fuzz_settings(examples: int) -> settings:
    """Bounded; derandomized under the `ci` profile (tests/conftest.py), exploring
    new inputs on every local run under `dev`."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=settings.default.derandomize,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def judge(response: Response, label: str) -> None:
    """No 5xx; an error is in SPEC's shape with one of SPEC's codes."""
    request = f"{label}: {response.request.method} {response.request.url}"
    assert response.status_code < 500, f"{request} -> {response.status_code}: {response.text}"
    if response.status_code < 400:
        return
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, f"{request}: {body}"
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, f"{request}: {body}"
    assert error["code"] in CODES and isinstance(error["message"], str), f"{request}: {body}"
    assert isinstance(error["details"], dict), f"{request}: {body}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("fuzz"))
    board = new_board(live, "fz")
    board.add_tasks(*({"id": f"t{n}", "title": f"task {n}"} for n in range(6)))
    worker, token = board.agent("worker")
    assert worker.post("/claim").json()["task"]["id"] == "t0"
    live.env["FUZZ_AGENT_TOKEN"] = token  # kept with the server for the tests below
    yield live
    live.close()


@pytest.fixture(scope="module")
def schema(server: LiveServer) -> Any:
    # The event stream never ends by itself; it has its own tests.
    return schemathesis.openapi.from_url(server.url + "/openapi.json").exclude(
        path="/api/v1/events/stream"
    )


def tokens(server: LiveServer) -> dict[str, str]:
    return {"admin": server.admin_token, "agent": server.env["FUZZ_AGENT_TOKEN"]}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("who", ["admin", "agent"])
def test_stateless_fuzzing_finds_no_5xx_and_only_specs_error_shape(
    server: LiveServer, schema: Any, who: str
) -> None:
    headers = {"Authorization": f"Bearer {tokens(server)[who]}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 25
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_one(server.url, headers, operation, mode)


def fuzz_one(url: str, headers: dict[str, str], operation: Any, mode: GenerationMode) -> None:
    """Bounded examples of one operation in one generation mode."""

    @fuzz_settings(EXAMPLES)
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        judge(case.call(base_url=url, headers=headers), operation.label)

    try:
        fuzz()
    except Unsatisfiable:
        # An operation with nothing to break (no parameters, no body) has no
        # schema-violating requests.
        assert mode is GenerationMode.NEGATIVE, operation.label


@pytest.mark.timeout(120)
def test_stateful_fuzzing_finds_no_5xx_and_only_specs_error_shape(
    server: LiveServer, schema: Any
) -> None:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    base = schema.as_state_machine()
    calls: list[str] = []
    failures: list[str] = []

    class Workflow(base):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": server.url, "headers": headers}

        def validate_response(self, response: Response, case: Any, **kwargs: Any) -> None:
            calls.append(case.operation.label)
            try:
                judge(response, case.operation.label)
            except AssertionError as failure:
                # Kept, not raised: Hypothesis would replay the scenario to show
                # it, and a server that moved on cannot be replayed.
                failures.append(str(failure))

    # A scenario's steps depend on what the server answered before, and the
    # server's state moves on: Hypothesis, seeing one choice sequence draw
    # differently twice, may stop the run as "flaky". That says nothing about
    # the API (the checks above keep their failures); the run is then simply
    # shorter, and the assertions below still need enough chained calls.
    with contextlib.suppress(FlakyStrategyDefinition):
        Workflow.run(
            settings=settings(
                max_examples=SCENARIOS,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
        )
    assert not failures, "\n".join(failures[:10])
    chained = {label for label in calls if "{" in label}
    print(f"\nstateful fuzzing: {len(calls)} calls, {len(chained)} chained operations")
    assert len(calls) >= SCENARIOS and len(chained) >= 5, (len(calls), sorted(chained))


def test_after_the_fuzzing_tasks_and_leases_still_agree(server: LiveServer) -> None:
    """Runs last in this file (pytest keeps file order): nothing is half-written."""
    with sqlite3.connect(server.database) as db:
        tasks = db.execute("SELECT board_id, id, status, epoch, assignee FROM tasks").fetchall()
        leases = db.execute(
            "SELECT board_id, task_id, epoch, agent_id, ended_at FROM leases"
        ).fetchall()
    live: dict[tuple[str, str], list[Any]] = {}
    newest: dict[tuple[str, str], int] = {}
    for board, task, epoch, agent, ended in leases:
        newest[(board, task)] = max(newest.get((board, task), 0), epoch)
        if ended is None:
            live.setdefault((board, task), []).append((epoch, agent))
    assert len(tasks) >= 6
    for board, task, status, epoch, assignee in tasks:
        held = live.get((board, task), [])
        assert len(held) <= 1, (board, task, held)
        if status == "in_progress":
            assert held == [(epoch, assignee)], (board, task, status, held)
        if status == "todo":
            assert not held, (board, task, status, held)
        assert epoch == newest.get((board, task), 0), (board, task, epoch)
