"""What MCP refuses: bad arguments, missing tokens, borrowed sessions. Nothing changes."""

from __future__ import annotations

from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from tests.mcp.live import LiveServer, agent_session, stored

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}

BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("report_task_progress", {"task_id": "missing", "progress": 10}, "not_found"),
    ("report_task_progress", {"task_id": "t1", "progress": 150}, "invalid_input"),
    ("report_task_progress", {"task_id": "t1", "progress": -1}, "invalid_input"),
    ("report_task_progress", {"task_id": "t1", "progress": "half"}, "invalid_input"),
    ("report_task_progress", {"task_id": "t1", "status": "finished"}, "invalid_input"),
    ("report_task_progress", {"task_id": "t1", "message": "x" * 100 * 1024}, "invalid_input"),
    ("report_task_progress", {"task_id": "t1", "branch": "-evil"}, "invalid_input"),
    ("report_task_progress", {"task_id": "t1", "claim_next": "yes"}, "invalid_input"),
    ("report_task_progress", {"progress": 10}, "invalid_input"),
    ("report_task_progress", {"task_id": "t1", "agent_id": "someone"}, "invalid_input"),
    ("report_blocker", {"task_id": "t1", "description": "", "severity": "high"}, "invalid_input"),
    ("report_blocker", {"task_id": "t1", "description": "x", "severity": "dire"}, "invalid_input"),
    ("report_blocker", {"task_id": "t1", "description": "x", "claim_next": 1}, "invalid_input"),
    ("release_task", {"task_id": "../t1"}, "invalid_input"),
    ("get_task_context", {"task_id": "missing"}, "not_found"),
    ("heartbeat", {"task_id": "t1", "epoch": -3}, "invalid_input"),
    ("no_such_tool", {}, "invalid_input"),
]


async def test_bad_arguments_are_refused_in_specs_shape_and_change_nothing(
    steady: LiveServer, transport: str
) -> None:
    async with steady.admin() as admin:
        board, _ = await admin.board("t1")
        token = await admin.agent(board, "a")
        async with agent_session(steady, token, transport) as agent:
            await agent.call("request_next_task")
            await agent.call("report_task_progress", task_id="t1", progress=20, message="ok")
            lease, task = await admin.lease(board, "t1"), await admin.task(board, "t1")
            for tool, arguments, code in BAD_CALLS:
                failed = await agent.fails(tool, **arguments)
                assert failed.code == code, (tool, arguments, failed.body)
                assert set(failed.error) == {"code", "message", "details"}
                assert isinstance(failed.error["message"], str) and failed.error["message"]
            assert stored(await admin.lease(board, "t1")) == stored(lease)
            assert stored(await admin.task(board, "t1")) == stored(task)


async def test_another_agents_task_is_not_yours(steady: LiveServer, transport: str) -> None:
    async with steady.admin() as admin:
        board, _ = await admin.board("t1")
        owner, intruder = await admin.agent(board, "owner"), await admin.agent(board, "intruder")
        async with (
            agent_session(steady, owner, transport) as agent,
            agent_session(steady, intruder, transport) as other,
        ):
            await agent.call("request_next_task")
            lease = await admin.lease(board, "t1")
            failed = await other.fails("report_task_progress", task_id="t1", progress=99)
            assert failed.code == "not_holder"
            assert stored(await admin.lease(board, "t1")) == stored(lease)


async def test_a_request_without_a_known_token_is_refused(steady: LiveServer) -> None:
    for headers in ({}, {"authorization": "Bearer tnr_agent_nobody"}, {"authorization": "Basic x"}):
        response = httpx.post(steady.mcp_url, json=INITIALIZE, headers={**ACCEPT, **headers})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    http = httpx2.AsyncClient(headers={"Authorization": "Bearer tnr_enrol_wrong"})
    with pytest.raises(Exception):  # noqa: B017 (the SDK's own error for a 401)
        async with http, Client(streamable_http_client(steady.mcp_url, http_client=http)):
            pass


async def test_a_session_answers_only_to_the_token_that_opened_it(steady: LiveServer) -> None:
    async with steady.admin() as admin:
        board, _ = await admin.board()
        owner, other = await admin.agent(board, "owner"), await admin.agent(board, "other")
    opened = httpx.post(
        steady.mcp_url, json=INITIALIZE, headers={**ACCEPT, "authorization": f"Bearer {owner}"}
    )
    assert opened.status_code == 200
    session = opened.headers["mcp-session-id"]
    borrowed = {"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
    for method in ("DELETE", "GET"):
        response = httpx.request(
            method,
            steady.mcp_url,
            headers={**ACCEPT, **borrowed, "authorization": f"Bearer {other}"},
        )
        assert response.status_code == 404
    # The owner still has it, and may end it.
    response = httpx.delete(
        steady.mcp_url, headers={**ACCEPT, **borrowed, "authorization": f"Bearer {owner}"}
    )
    assert response.status_code in (200, 204)


async def test_each_call_is_answered_with_one_json_body(steady: LiveServer) -> None:
    """A request's answer is `application/json` (the spec lets a server pick
    it over an SSE stream, and requires clients to take both): a client
    that accepts only JSON is served, one that accepts only SSE is told so."""
    async with steady.admin() as admin:
        board, _ = await admin.board("t1")
        token = await admin.agent(board, "json")
    auth = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    json_only = {**auth, "accept": "application/json"}
    opened = httpx.post(steady.mcp_url, json=INITIALIZE, headers=json_only)
    assert opened.status_code == 200
    assert opened.headers["content-type"].startswith("application/json")
    assert opened.json()["result"]["serverInfo"]["name"]
    session = {
        **json_only,
        "mcp-session-id": opened.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-06-18",
    }
    ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert httpx.post(steady.mcp_url, json=ready, headers=session).status_code == 202
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "request_next_task", "arguments": {}},
    }
    answered = httpx.post(steady.mcp_url, json=call, headers=session)
    assert answered.status_code == 200
    assert answered.headers["content-type"].startswith("application/json")
    assert '"t1"' in answered.json()["result"]["content"][0]["text"]
    sse_only = {**session, "accept": "text/event-stream"}
    assert httpx.post(steady.mcp_url, json={**call, "id": 3}, headers=sse_only).status_code == 406
    assert httpx.delete(steady.mcp_url, headers=session).status_code in (200, 204)
