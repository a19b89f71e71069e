"""Quick reads on PostgreSQL (`tenure.store.postgres_lookup`): each statement
is one round trip in a READ ONLY transaction of its own, nothing can be
written through one, and a failure or a dead pooled connection leaves the
store as usable as before."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from tests.support.pg import fresh_postgres_dsn, terminate_sessions

from tenure.core.errors import StoreUnavailable, TenureError
from tenure.core.model import Agent, Board, Comment, Event, EventType
from tenure.store import postgres_pipe
from tenure.store.base import Tx
from tenure.store.postgres import PostgresStore, open_postgres

pytestmark = pytest.mark.postgres

BOARD = "b"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def dsn() -> str:
    return fresh_postgres_dsn()


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresStore]:
    opened = await open_postgres(dsn, max_size=2)
    try:
        if await opened.read(lambda tx: tx.get_board(BOARD)) is None:

            def setup(tx: Tx) -> None:
                tx.insert_board(Board(id=BOARD, name="Board", created_at=tx.now))
                tx.insert_agent(
                    Agent(board_id=BOARD, id="a0", name="a0", token_hash="h0", created_at=tx.now)
                )

            await opened.run(setup)
        yield opened
    finally:
        await opened.close()


def _pipelines(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The statements of every pipeline sent from now on, one list each."""
    sent: list[list[str]] = []
    real = postgres_pipe.execute

    def recording(conn: Any, prepared: Any, steps: Sequence[postgres_pipe.Step]) -> Any:
        sent.append([sql.split()[0] for sql, _ in steps])
        return real(conn, prepared, steps)

    monkeypatch.setattr(postgres_pipe, "execute", recording)
    return sent


async def test_a_lookup_is_one_read_only_pipeline_per_statement(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _pipelines(monkeypatch)
    agent = await store.read(lambda tx: tx.agent_by_token_hash("h0"), quick=True)
    assert agent is not None and agent.id == "a0"
    assert sent == [["BEGIN", "SELECT", "COMMIT"]]
    # Two lookups in one read: two transactions, each its own round trip.
    both = await store.read(
        lambda tx: (tx.get_agent(BOARD, "a0"), tx.agent_by_token_hash("nobody")), quick=True
    )
    assert both == (agent, None)
    assert len(sent) == 3
    # A plain read is one transaction as before: BEGIN comes with the clock.
    await store.read(lambda tx: tx.agent_by_token_hash("h0"))
    assert sent[3][0] == "BEGIN" and "COMMIT" not in sent[3]


async def test_a_lookup_writes_nothing(store: PostgresStore) -> None:
    """Writes are refused, whichever way they would go, and nothing is kept:
    the cursor, the writes kept for a COMMIT, and an INSERT through a
    statement that returns a row (PostgreSQL refuses it: READ ONLY)."""

    def comment(tx: Tx) -> int:
        return tx.add_comment(Comment(BOARD, "t0", NOW, "x", "hello"))

    attempts = [
        lambda tx: tx.insert_board(Board(id="other", name="Other", created_at=NOW)),
        lambda tx: tx.queue_event(Event(EventType.TASK_CREATED, BOARD, NOW)),
        lambda tx: tx.bump(BOARD, "recoveries.lease_expired"),
    ]
    for attempt in attempts:
        with pytest.raises(TenureError, match="only looks rows up"):
            await store.read(attempt, quick=True)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        await store.read(comment, quick=True)
    assert await store.read(lambda tx: tx.comments(BOARD, "t0")) == []
    assert [board.id for board in await store.read(lambda tx: tx.list_boards())] == [BOARD]
    assert await store.read(lambda tx: tx.counters(BOARD)) == {}
    # The store is as usable as before.
    assert await store.read(lambda tx: tx.agent_by_token_hash("h0"), quick=True) is not None


async def test_a_lookup_has_no_clock(store: PostgresStore) -> None:
    with pytest.raises(TenureError, match="no clock"):
        await store.read(lambda tx: tx.now, quick=True)


async def test_a_lookup_that_swallows_a_failed_statement_still_fails(
    store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A statement that fails leaves its transaction aborted: later ones in
    the same lookup raise the same error, the lookup raises even though its
    function caught it, and the connection is rolled back for the next
    caller."""
    later: list[str] = []

    def swallowing(tx: Tx) -> str:
        with contextlib.suppress(TenureError, psycopg.Error):
            tx._one("SELECT no_such_column FROM agents")  # type: ignore[attr-defined]
        try:
            tx.get_agent(BOARD, "a0")
            later.append("answered")
        except (TenureError, psycopg.Error):
            later.append("refused")
        return "swallowed"

    with pytest.raises((TenureError, psycopg.Error)):
        await store.read(swallowing, quick=True)
    assert later == ["refused"]
    # The store rolled the connection back (forgetting its statements), not the pool.
    assert "rolling back returned connection" not in caplog.text
    for _ in range(3):  # every pooled connection is idle and usable again
        assert await store.read(lambda tx: tx.get_agent(BOARD, "a0"), quick=True) is not None
        assert await store.run(lambda tx: tx.get_agent(BOARD, "a0")) is not None


async def test_a_lookup_on_a_dead_pooled_connection_runs_on_another(
    store: PostgresStore, dsn: str
) -> None:
    for _ in range(2):
        terminate_sessions(dsn)
        agent = await store.read(lambda tx: tx.agent_by_token_hash("h0"), quick=True)
        assert agent is not None and agent.id == "a0"


async def test_a_lookup_with_the_database_down_is_store_unavailable(dsn: str) -> None:
    store = await open_postgres(dsn, max_size=2, timeout=1.0, connect_timeout=1.0)
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        terminate_sessions(dsn)
        with pytest.raises(StoreUnavailable):
            await store.read(lambda tx: tx.agent_by_token_hash("h0"), quick=True)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await store.close()
