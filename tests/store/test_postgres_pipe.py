"""`tenure.store.postgres_pipe` on a real PostgreSQL: values arrive as sent,
a failure anywhere in the pipeline keeps nothing and is psycopg's own error,
and statements deallocated behind its back are prepared again."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import pq
from tests.support.pg import empty_postgres_dsn

from tenure.store import postgres_pipe
from tenure.store.postgres_pipe import Prepared, encode, send, statement

pytestmark = pytest.mark.postgres

INSERT = (
    "INSERT INTO t (id, s, i, f, b, at, tags, counts, doc) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


@pytest.fixture(scope="module")
def dsn() -> str:
    return empty_postgres_dsn()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS t")
        c.execute(
            "CREATE TABLE t (id int PRIMARY KEY, s text, i bigint, f float8, b boolean, "
            "at timestamptz, tags text[], counts bigint[], doc jsonb)"
        )
        yield c


def _rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM t ORDER BY id").fetchall()


def test_statements_get_one_name_and_numbered_placeholders() -> None:
    name, text = statement("SELECT %s, '100%%', %s")
    assert text == b"SELECT $1, '100%', $2"
    assert statement("SELECT %s, '100%%', %s") == (name, text)
    assert statement("SELECT %s")[0] != name


def test_values_arrive_as_sent(conn: psycopg.Connection[Any]) -> None:
    """Awkward text, extreme numbers, times in other zones, arrays whose
    elements need quoting, JSON text: each reads back equal."""
    plus5 = timezone(timedelta(hours=5, minutes=30))
    awkward = ['a"b', "c\\d", "e,f", "{g}", "NULL", "", " h ", "ünï", "x'y"]
    values = [
        (1, 'quote" back\\slash \'single\' ünïcødé ✓', 2**62, 1e-300, True,
         datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=plus5), awkward, [0, -1, 2**62],
         '{"k": "v\\"w", "n": [1, 2.5]}'),
        (2, "", -(2**62), -0.0, False, datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
         [], [], "[]"),
        (3, None, None, math.inf, None, None, None, None, None),
    ]  # fmt: skip
    prepared = Prepared()
    conn.execute("BEGIN")
    send(conn, prepared, [(INSERT, v) for v in values], commit=True)
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    got = _rows(conn)
    assert got[0][:8] == values[0][:8]
    assert got[0][8] == {"k": 'v"w', "n": [1, 2.5]}
    assert got[1][:8] == values[1][:8] and got[1][8] == []
    assert got[2][3] == math.inf and got[2][:3] == (3, None, None)
    assert math.isnan(_nan_round_trip(conn, prepared))


def _nan_round_trip(conn: psycopg.Connection[Any], prepared: Prepared) -> float:
    conn.execute("BEGIN")
    send(conn, prepared, [("UPDATE t SET f = %s WHERE id = %s", (math.nan, 3))], commit=True)
    value = conn.execute("SELECT f FROM t WHERE id = 3").fetchone()
    assert value is not None
    return float(value[0])


def test_subclasses_go_as_their_values() -> None:
    """An enum is its value, not its repr; a bool is never a number."""

    class Level(enum.IntEnum):
        HIGH = 3

    class Kind(enum.StrEnum):
        RENEWED = "lease.renewed"

    class Ratio(float):
        pass

    assert encode(Level.HIGH) == b"3"
    assert encode(Kind.RENEWED) == b"lease.renewed"
    assert encode(Ratio(0.5)) == b"0.5"
    assert (encode(True), encode(False)) == (b"t", b"f")
    assert encode([Kind.RENEWED, None, True]) == b'{"lease.renewed",NULL,"t"}'


def test_a_value_with_no_text_form_is_refused_before_anything_is_sent(
    conn: psycopg.Connection[Any],
) -> None:
    prepared = Prepared()
    conn.execute("BEGIN")
    naive = datetime(2026, 1, 1)
    with pytest.raises(TypeError):
        send(conn, prepared, [(INSERT, (1, "x", 1, 1.0, True, naive, [], [], "{}"))], commit=True)
    with pytest.raises(TypeError):
        encode(object())
    # The connection is still in its transaction and usable.
    assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
    assert conn.execute("SELECT 1").fetchone() == (1,)
    conn.execute("ROLLBACK")
    assert _rows(conn) == []


@pytest.mark.parametrize("bad", ["cut\x00here", "lone \ud800"])
def test_text_postgresql_cannot_keep_is_refused_not_cut(
    conn: psycopg.Connection[Any], bad: str
) -> None:
    """libpq ends a text parameter at its first NUL: sent as it is, the value
    would be cut short without a word. It is refused, as psycopg refuses it,
    and so is a lone surrogate."""
    with pytest.raises(psycopg.DataError):
        encode(bad)
    conn.execute("BEGIN")
    with pytest.raises(psycopg.DataError):
        send(
            conn,
            Prepared(),
            [(INSERT, (1, bad, 1, 1.0, True, None, None, None, None))],
            commit=True,
        )
    conn.execute("ROLLBACK")
    assert _rows(conn) == []


def test_a_failure_keeps_nothing_and_later_statements_are_prepared_again(
    conn: psycopg.Connection[Any],
) -> None:
    """A duplicate key in the middle: psycopg's UniqueViolation, nothing of the
    pipeline (before or after it) kept; a statement first named after the
    failure was never prepared, and the next pipeline prepares it."""
    prepared = Prepared()
    row = (1, "a", 1, 1.0, True, None, None, None, None)
    later = "UPDATE t SET s = %s WHERE id = %s"
    conn.execute("BEGIN")
    send(conn, prepared, [(INSERT, row)], commit=True)
    conn.execute("BEGIN")
    with pytest.raises(psycopg.errors.UniqueViolation):
        send(
            conn,
            prepared,
            [(INSERT, (2, *row[1:])), (INSERT, row), (later, ("changed", 1))],
            commit=True,
        )
    assert prepared.names is None
    conn.execute("ROLLBACK")
    assert [r[:2] for r in _rows(conn)] == [(1, "a")]
    conn.execute("BEGIN")
    send(conn, prepared, [(later, ("changed", 1))], commit=True)
    assert [r[:2] for r in _rows(conn)] == [(1, "changed")]


def test_statements_deallocated_behind_its_back(conn: psycopg.Connection[Any]) -> None:
    """DEALLOCATE ALL by someone else: the next pipeline fails as
    invalid_sql_statement_name, keeps nothing, and the one after works."""
    prepared = Prepared()
    row = (1, "a", 1, 1.0, True, None, None, None, None)
    conn.execute("BEGIN")
    send(conn, prepared, [(INSERT, row)], commit=True)
    conn.execute("DEALLOCATE ALL")
    conn.execute("BEGIN")
    with pytest.raises(psycopg.errors.InvalidSqlStatementName):
        send(conn, prepared, [(INSERT, (2, *row[1:]))], commit=True)
    conn.execute("ROLLBACK")
    conn.execute("BEGIN")
    send(conn, prepared, [(INSERT, (2, *row[1:]))], commit=True)
    assert [r[0] for r in _rows(conn)] == [1, 2]


def test_what_a_connection_holds_is_read_before_first_use(
    conn: psycopg.Connection[Any],
) -> None:
    """A new `Prepared()` knows nothing: it reads pg_prepared_statements first,
    so a statement the connection already holds is not prepared twice."""
    first = Prepared()
    conn.execute("BEGIN")
    send(conn, first, [(INSERT, (1, "a", 1, 1.0, True, None, None, None, None))], commit=True)
    again = Prepared()
    conn.execute("BEGIN")
    send(conn, again, [(INSERT, (2, "b", 1, 1.0, True, None, None, None, None))], commit=True)
    assert again.names is not None and statement(INSERT)[0] in again.names
    assert len(_rows(conn)) == 2


def test_a_batch_larger_than_the_socket_buffers_goes_through(
    conn: psycopg.Connection[Any],
) -> None:
    """Thousands of statements with large values: sending interleaves with
    reading, so neither side waits on the other for ever."""
    big = "x" * 4000
    rows = [(i, big, i, float(i), True, None, None, None, None) for i in range(3000)]
    conn.execute("BEGIN")
    send(conn, Prepared(), [(INSERT, r) for r in rows], commit=True)
    assert conn.execute("SELECT count(*), sum(length(s)) FROM t").fetchone() == (3000, 12_000_000)


def test_a_connection_that_breaks_mid_pipeline_is_closed(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin, psycopg.connect(dsn, autocommit=True) as c:
        c.execute("BEGIN")
        admin.execute("SELECT pg_terminate_backend(%s)", (c.info.backend_pid,))
        prepared = Prepared()
        prepared.names = set()  # known: the first statement goes in the pipeline
        with pytest.raises(psycopg.OperationalError):
            send(c, prepared, [("SELECT %s", (1,))], commit=True)
        assert c.closed and prepared.names is None


def test_rows_load_as_a_cursor_loads_them(conn: psycopg.Connection[Any]) -> None:
    """`Prepared.rows` (its own jsonb loader among psycopg's) gives what a
    psycopg cursor gives for the same row."""
    doc = '{"k": "v\\"w ünï \\\\ ✓", "n": [1, 2.5, -0.0, 1e300, null, true], "e": {}}'
    row = (1, "s", 2**62, 0.5, True, datetime(2026, 1, 2, tzinfo=UTC), ["a", 'b"'], [1, 2], doc)
    conn.execute("BEGIN")
    prepared = Prepared()
    send(conn, prepared, [(INSERT, row)], commit=True)
    sql = "SELECT * FROM t WHERE id = %s"
    (result,) = postgres_pipe.execute(conn, prepared, [(sql, (1,))])
    assert prepared.rows(conn, result) == conn.execute(sql, (1,)).fetchall()
