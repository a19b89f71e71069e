"""An agent's whole life over MCP, on both transports, against a live server."""

from __future__ import annotations

from tests.mcp.conftest import BRISK_GRACE, BRISK_LEASE, BRISK_MONITOR_INTERVAL
from tests.mcp.live import Admin, LiveServer, agent_session, wait_for

from tenure.api.mcp import INSTRUCTIONS
from tenure.auth import ADMIN

EXPECTED_TOOLS = {
    "register_agent",
    "request_next_task",
    "report_task_progress",
    "report_blocker",
    "release_task",
    "get_task_context",
    "heartbeat",
    "ping",
}
#: A silent brisk lease is recovered by now, with room for a loaded machine.
BRISK_RECOVERY_BOUND = BRISK_LEASE + BRISK_GRACE + BRISK_MONITOR_INTERVAL + 5.0

LEASE_FIELDS = {"task_id", "epoch", "expires_at", "seconds_left", "phase", "state"}


async def test_tools_are_listed_with_schemas_and_advice(steady: LiveServer, transport: str) -> None:
    async with steady.admin() as admin:
        _, key = await admin.board()
    async with agent_session(steady, key, transport) as agent:
        listed = (await agent.client.list_tools()).tools
    by_name = {tool.name: tool for tool in listed}
    assert set(by_name) == EXPECTED_TOOLS
    progress = by_name["report_task_progress"].input_schema
    assert progress["required"] == ["task_id"]
    assert progress["properties"]["progress"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 100,
        "description": "Percent done, 0 to 100.",
    }
    assert progress["properties"]["status"]["enum"] == ["in_progress", "completed", "blocked"]
    assert progress["properties"]["claim_next"]["type"] == "boolean"
    assert "agent_id" not in by_name["request_next_task"].input_schema["properties"]
    for name in ("request_next_task", "report_task_progress"):
        assert "lease_lost" in (by_name[name].description or "")


async def test_the_server_instructions_reach_the_agent_on_both_transports(
    steady: LiveServer, transport: str
) -> None:
    """Through `tenure mcp` too: the proxy hands on what the server says."""
    async with steady.admin() as admin:
        _, key = await admin.board()
    async with agent_session(steady, key, transport) as agent:
        told = agent.client.instructions
    assert told == INSTRUCTIONS
    assert "claim_next=true" in told and "lease_lost" in told


async def test_register_claim_report_complete(steady: LiveServer, transport: str) -> None:
    async with steady.admin() as admin:
        board, key = await admin.board("t1")
        async with agent_session(steady, key, transport) as agent:
            made = await agent.call("register_agent", agent_id="worker", skills=["python"])
            assert made["agent"]["id"] == "worker"
            assert made["token"].startswith("tnr_agent_")
            # The session now acts as the new agent: it counts as its open session.
            agents = await admin.coordinator.admin.list_agents(ADMIN, board)
            assert [a["open_sessions"] for a in agents if a["id"] == "worker"] == [1]

            claimed = await agent.call("request_next_task")
            assert claimed["task"]["id"] == "t1"
            assert claimed["handoff"] is None
            lease = claimed["lease"]
            assert set(lease) >= LEASE_FIELDS
            assert (lease["epoch"], lease["phase"], lease["state"]) == (1, 1, "active")
            assert [held["task_id"] for held in claimed["notice"]["leases"]] == ["t1"]

            reported = await agent.call(
                "report_task_progress",
                task_id="t1",
                progress=30,
                message="parser written",
                branch="tenure/worker",
                head_sha="abc1234",
            )
            assert reported["lease"]["progress"] == 30
            assert reported["lease"]["branch"] == "tenure/worker"
            assert reported["lease"]["renewal_count"] == 1

            done = await agent.call("report_task_progress", task_id="t1", status="completed")
            assert done["task"]["status"] == "done"
            assert done["lease"] is None
            assert done["notice"]["leases"] == []
            assert (await admin.task(board, "t1"))["status"] == "done"

        # Leaving the session (DELETE, or the proxy's stdin ending) closes it.
        async def closed() -> bool:
            agents = await admin.coordinator.admin.list_agents(ADMIN, board)
            return [a["open_sessions"] for a in agents if a["id"] == "worker"] == [0]

        await wait_for(closed, timeout=5.0)


async def test_a_completion_can_claim_the_next_task_in_the_same_call(
    steady: LiveServer, transport: str
) -> None:
    async with steady.admin() as admin:
        board, _ = await admin.board("t1", "t2")
        token = await admin.agent(board, "worker")
        async with agent_session(steady, token, transport) as agent:
            first = await agent.call("request_next_task")
            done = await agent.call(
                "report_task_progress",
                task_id=first["task"]["id"],
                status="completed",
                claim_next=True,
            )
            assert done["task"]["status"] == "done"
            second = done["next"]["task"]["id"]
            assert {first["task"]["id"], second} == {"t1", "t2"}
            assert done["next"]["lease"]["epoch"] == 1
            assert [held["task_id"] for held in done["notice"]["leases"]] == [second]
            last = await agent.call(
                "report_task_progress", task_id=second, status="completed", claim_next=True
            )
            assert last["next"]["task"] is None and last["next"]["reason"] == "no_todo_tasks"


async def test_a_recovered_task_comes_with_its_handoff(brisk: LiveServer, transport: str) -> None:
    async with brisk.admin() as admin:
        board, _ = await admin.board("t1")
        first, second = await admin.agent(board, "first"), await admin.agent(board, "second")
        async with agent_session(brisk, first, transport) as agent:
            await agent.call("request_next_task")
            await agent.call(
                "report_task_progress",
                task_id="t1",
                progress=40,
                message="tokenizer done\nparser next",
                branch="work/first",
            )
            # ...then the agent goes silent until its lease is recovered.
            await _recovered(admin, board, "t1")
        async with agent_session(brisk, second, transport) as agent:
            claimed = await agent.call("request_next_task")
    handoff = claimed["handoff"]
    assert claimed["task"]["id"] == "t1"
    assert handoff["recovered_from_agent"] == "first"
    assert handoff["previous_progress"] == 40
    assert handoff["previous_agent_branch"] == "work/first"
    assert handoff["last_progress_message"] == "tokenizer done\nparser next"
    assert "git merge work/first --no-edit" in handoff["instructions"]
    assert claimed["lease"]["epoch"] == 2


async def test_a_zombie_gets_lease_lost_and_its_late_note_lands_in_the_handoff(
    brisk: LiveServer, transport: str
) -> None:
    async with brisk.admin() as admin:
        board, _ = await admin.board("t1")
        zombie_token, heir_token = (
            await admin.agent(board, "zombie"),
            await admin.agent(board, "heir"),
        )
        async with (
            agent_session(brisk, zombie_token, transport) as zombie,
            agent_session(brisk, heir_token, transport) as heir,
        ):
            await zombie.call("request_next_task")
            await _recovered(admin, board, "t1")
            await heir.call("request_next_task")
            # Two reports, the second past 25 %: the heir's lease is `proven` (minutes).
            await heir.call("report_task_progress", task_id="t1", progress=26)
            await heir.call("report_task_progress", task_id="t1", progress=30)
            before = await admin.lease(board, "t1")

            refused = await zombie.fails(
                "report_task_progress", task_id="t1", progress=80, message="late: tests pass"
            )
            assert refused.code == "lease_lost"
            assert set(refused.error) == {"code", "message", "details"}
            notice = refused.error["details"]["notice"]
            assert notice["leases"] == []
            assert [lost["task_id"] for lost in notice["lost"]] == ["t1"]
            assert "request_next_task" in notice["message"]

            context = await heir.call("get_task_context", task_id="t1")
            notes = context["handoff"]["late_notes"]
            assert any(note.endswith("late: tests pass") for note in notes), notes
            after = await admin.lease(board, "t1")
            assert after is not None and before is not None
            assert after["agent_id"] == "heir"
            assert after["progress"] == 30
            assert after["epoch"] == before["epoch"]


async def test_an_agent_whose_recovered_task_nobody_took_claims_it_back(
    brisk: LiveServer, transport: str
) -> None:
    async with brisk.admin() as admin:
        board, _ = await admin.board("t1")
        token = await admin.agent(board, "sleeper")
        async with agent_session(brisk, token, transport) as agent:
            await agent.call("request_next_task")
            await agent.call("report_task_progress", task_id="t1", progress=20)
            await _recovered(admin, board, "t1")
            back = await agent.call("report_task_progress", task_id="t1", progress=60)
            assert back["result"] == "reclaimed"
            assert back["lease"]["epoch"] == 2
            assert back["lease"]["agent_id"] == "sleeper"
            task = await admin.task(board, "t1")
            assert (task["status"], task["assignee"]) == ("in_progress", "sleeper")


async def test_report_blocker_and_release_end_the_lease(steady: LiveServer, transport: str) -> None:
    async with steady.admin() as admin:
        board, _ = await admin.board("t1", "t2")
        token = await admin.agent(board, "a")
        async with agent_session(steady, token, transport) as agent:
            first = (await agent.call("request_next_task"))["task"]["id"]
            blocked = await agent.call(
                "report_blocker", task_id=first, description="no database access", severity="high"
            )
            assert blocked["task"]["status"] == "blocked"
            second = (await agent.call("request_next_task"))["task"]["id"]
            released = await agent.call("release_task", task_id=second, message="half way")
            assert released["task"]["status"] == "todo"
            assert released["notice"]["leases"] == []
            again = await agent.call("request_next_task")
            assert again["task"]["id"] == second
            assert again["handoff"]["recovery_reason"] == "released"
            assert again["handoff"]["last_progress_message"] == "half way"
            await agent.call("report_task_progress", task_id=second, status="completed")
            nothing = await agent.call("request_next_task")
            assert nothing["task"] is None
            assert nothing["reason"] == "no_todo_tasks"
            assert nothing["retry_after_s"] > 0


async def _recovered(admin: Admin, board: str, task_id: str) -> None:
    """Wait until the monitor has taken the task back."""

    async def check() -> bool:
        task = await admin.task(board, task_id)
        return bool(task["status"] == "todo" and task["recovery_count"] >= 1)

    await wait_for(check, timeout=BRISK_RECOVERY_BOUND)
