"""Contract: open MCP sessions counted per server (`agent_sessions`), and in
each agent's `open_sessions` with them."""

from __future__ import annotations

from typing import Any

from contract_records import BOARD, agent, board, seed


async def _counts(store: Any) -> dict[str, int]:
    """Each agent's `open_sessions`."""
    agents = await store.read(lambda tx: tx.list_agents(BOARD))
    return {a.id: a.open_sessions for a in agents}


async def _take_all(store: Any) -> dict[tuple[str, int], int]:
    """{(agent, server): sessions} of every row, counting them all out."""

    def take(tx: Any) -> dict[tuple[str, int], int]:
        found: dict[tuple[str, int], int] = {}
        for server in tx.session_servers():
            for board_id, agent_id, sessions in tx.take_sessions(server):
                assert board_id == BOARD
                found[(agent_id, server)] = sessions
        return found

    result: dict[tuple[str, int], int] = await store.run(take)
    return result


async def test_sessions_are_counted_per_agent_and_server(store: Any) -> None:
    await store.run(seed(board(), agent("a1"), agent("a2", token_hash="h2")))

    def opens(tx: Any) -> list[int]:
        return [
            tx.open_session(BOARD, agent_id, server)
            for agent_id, server in (("a1", 7), ("a1", 7), ("a1", 8), ("a2", 8))
        ]

    assert await store.run(opens) == [1, 2, 3, 1]  # each agent's count, on every server
    assert await _counts(store) == {"a1": 3, "a2": 1}
    assert sorted(await store.read(lambda tx: tx.session_servers())) == [7, 8]
    assert await _take_all(store) == {("a1", 7): 2, ("a1", 8): 1, ("a2", 8): 1}
    assert await _counts(store) == {"a1": 0, "a2": 0}


async def test_a_close_counts_one_down_and_the_last_removes_the_row(store: Any) -> None:
    await store.run(seed(board(), agent("a1")))
    await store.run(lambda tx: [tx.open_session(BOARD, "a1", s) for s in (7, 7, 8)])
    assert await store.run(lambda tx: tx.close_session(BOARD, "a1", 7)) == 2
    assert sorted(await store.read(lambda tx: tx.session_servers())) == [7, 8]
    assert await store.run(lambda tx: tx.close_session(BOARD, "a1", 7)) == 1
    assert await store.read(lambda tx: tx.session_servers()) == [8]
    # None left there (counted out, or never opened on that server): nothing to count down.
    assert await store.run(lambda tx: tx.close_session(BOARD, "a1", 7)) == 1
    assert await store.run(lambda tx: tx.close_session(BOARD, "a1", 9)) == 1
    assert await store.run(lambda tx: tx.close_session(BOARD, "a1", 8)) == 0
    assert await store.read(lambda tx: tx.session_servers()) == []
    assert await _counts(store) == {"a1": 0}


async def test_taking_a_servers_sessions_counts_them_out_and_says_whose_they_were(
    store: Any,
) -> None:
    await store.run(seed(board(), agent("a1"), agent("a2", token_hash="h2")))

    def opens(tx: Any) -> None:
        for agent_id, server in (("a1", 7), ("a1", 7), ("a2", 7), ("a2", 8)):
            tx.open_session(BOARD, agent_id, server)

    await store.run(opens)
    taken = await store.run(lambda tx: tx.take_sessions(7))
    assert sorted(taken) == [(BOARD, "a1", 2), (BOARD, "a2", 1)]
    assert await _counts(store) == {"a1": 0, "a2": 1}
    assert await store.run(lambda tx: tx.take_sessions(7)) == []
    assert await _take_all(store) == {("a2", 8): 1}


async def test_forgetting_sessions_counts_out_every_one(store: Any) -> None:
    await store.run(
        seed(board(), agent("a1"), agent("a2", token_hash="h2"), agent("a3", token_hash="h3"))
    )
    await store.run(lambda tx: [tx.open_session(BOARD, a, s) for a, s in (("a1", 7), ("a2", 8))])
    assert await store.run(lambda tx: tx.forget_sessions()) == 2  # agents that had some
    assert await store.read(lambda tx: tx.session_servers()) == []
    assert await _counts(store) == {"a1": 0, "a2": 0, "a3": 0}


async def test_an_agent_deleted_takes_its_session_rows_with_it(store: Any) -> None:
    await store.run(seed(board(), agent("a1")))
    await store.run(lambda tx: tx.open_session(BOARD, "a1", 7))
    assert await store.run(lambda tx: tx.delete_agent(BOARD, "a1"))
    assert await store.read(lambda tx: tx.session_servers()) == []
