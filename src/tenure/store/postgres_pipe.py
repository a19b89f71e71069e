"""An agent call's hot statements, sent through libpq's pipeline directly.

A unit of work on PostgreSQL makes two round trips when it can: BEGIN with
the reads it names (the database's clock, its agent and leases, the task it
acts on), then the writes nothing waited for with COMMIT. Through psycopg's
cursor each statement cost some 30 us of Python (binding, psycopg's
prepared-statement cache, result bookkeeping), about half of an agent call's
CPU on the client: the resource eight concurrent agents run out of. These
statements are few, their text fixed and their values plain, so this module
hands them to libpq itself (`execute`):

- each is prepared once per connection, under a name of ours (`tenure_w_`
  and a digest of its text), by a Parse message in the same pipeline as its
  first use;
- its values go as text (`encode`), typed by the server from the statement;
- every result is read; the first failure is raised as psycopg's own error
  for it, so the store translates it exactly as before; rows are loaded by
  psycopg's own loaders (`Prepared.rows`), so they are what a cursor gives.

Which of our statements a connection holds is remembered (`Prepared`), and
read again from `pg_prepared_statements` after anything that may have
deallocated them (a rollback: psycopg then deallocates every statement of
the connection). Waiting on the socket happens in `select`, which releases
the GIL, never in a blocking libpq call.
"""

from __future__ import annotations

import hashlib
import json
import re
import select
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import abc as pg_abc
from psycopg import pq
from psycopg.adapt import AdaptersMap, Loader, Transformer

_NAME_PREFIX = "tenure_w_"
_names: dict[str, tuple[bytes, bytes]] = {}
_PLACEHOLDER = re.compile(r"%[s%]")

ExecStatus = pq.ExecStatus
_DONE = (ExecStatus.COMMAND_OK, ExecStatus.TUPLES_OK)


def statement(sql: str) -> tuple[bytes, bytes]:
    """`sql` (psycopg's `%s` placeholders) as (our name for it, libpq's `$n` text).

    The name is a digest of the text, so it is the same on every connection
    and in every process, and worker threads naming new statements at once
    can never hand one name to two texts.
    """
    found = _names.get(sql)
    if found is None:
        count = 0

        def number(match: re.Match[str]) -> str:
            nonlocal count
            if match.group() == "%%":
                return "%"
            count += 1
            return f"${count}"

        digest = hashlib.blake2b(sql.encode(), digest_size=10).hexdigest()
        found = (f"{_NAME_PREFIX}{digest}".encode(), _PLACEHOLDER.sub(number, sql).encode())
        _names[sql] = found
    return found


def encode(value: Any) -> bytes | None:
    """A parameter as PostgreSQL's text input for it (None: NULL).

    The types are those of Tenure's rows: text, integers, floats, booleans,
    aware datetimes, and lists of them for array parameters. (The exact
    common types first: a call sends some seventy values.)
    """
    kind = type(value)
    if kind is str:
        return _text(value)
    if value is None:
        return None
    if kind is int or kind is float:
        return repr(value).encode()
    if kind is datetime:
        return _time(value)
    return _other(value)


def _text(value: str) -> bytes:
    if "\x00" in value:
        # libpq would cut a text parameter at its first NUL, silently.
        raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    try:
        return value.encode()
    except UnicodeEncodeError as exc:
        raise psycopg.DataError(f"text that is not valid Unicode: {exc.reason}") from None


def _time(value: datetime) -> bytes:
    if value.tzinfo is None:
        raise TypeError("a naive datetime has no place in a timestamptz column")
    return value.isoformat().encode()


def _other(value: Any) -> bytes:
    """`encode` for subclasses (a StrEnum is its text, an IntEnum its number),
    booleans and arrays."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, int):
        return str(int(value)).encode()
    if isinstance(value, float):
        return repr(float(value)).encode()
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, list | tuple):
        return ("{" + ",".join(_element(item) for item in value) + "}").encode()
    raise TypeError(f"no text form for a parameter of type {type(value).__name__}")


def _element(item: Any) -> str:
    """One element of an array literal: quoted, with `"` and `\\` escaped."""
    if item is None:
        return "NULL"
    text = encode(item)
    assert text is not None
    escaped = text.decode().replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


_JSON = json.JSONDecoder()


class _JsonbText(Loader):
    """jsonb in text format, as psycopg's own loader gives it, without the
    encoding sniffing and trailing-space check of `json.loads` (PostgreSQL
    writes jsonb as UTF-8 with nothing around the value)."""

    def load(self, data: pg_abc.Buffer) -> Any:
        return _JSON.raw_decode(bytes(data).decode())[0]


#: One statement of a pipeline: its text (psycopg's `%s` placeholders) and
#: values, prepared under our name; with None for values, a statement sent
#: as it is, unprepared (BEGIN, COMMIT).
Step = tuple[str, Sequence[Any] | None]


class Prepared:
    """What this module keeps per connection: which of our statements it
    holds (None: not known), and a row loader bound to it."""

    __slots__ = ("_loader", "names")

    def __init__(self) -> None:
        self.names: set[bytes] | None = None
        self._loader: pg_abc.Transformer | None = None

    def forget(self) -> None:
        """Something may have deallocated them: read them again before use."""
        self.names = None

    def rows(self, conn: psycopg.Connection[Any], result: pq.abc.PGresult) -> list[tuple[Any, ...]]:
        """The rows of `result`, each value loaded as a psycopg cursor would
        (jsonb a little faster: see `_JsonbText`)."""
        loader = self._loader
        if loader is None:
            adapters = AdaptersMap(conn.adapters)
            adapters.register_loader("jsonb", _JsonbText)
            loader = self._loader = Transformer(adapters)
        loader.set_pgresult(result)
        return loader.load_rows(0, result.ntuples, tuple)


def execute(
    conn: psycopg.Connection[Any], prepared: Prepared, steps: Sequence[Step]
) -> list[pq.abc.PGresult]:
    """Send `steps` in one round trip; every step's result, in order. Raise
    psycopg's error for the first that fails (nothing after it ran).

    The connection must be idle (in a transaction or not) and outside
    psycopg's own pipeline.
    """
    # Encoded before anything is sent: a value refused here leaves nothing
    # queued on the connection.
    batch = [
        (None, sql.encode(), None)
        if values is None
        else (*statement(sql), [encode(value) for value in values])
        for sql, values in steps
    ]
    if prepared.names is None:
        held = conn.execute(
            "SELECT name FROM pg_prepared_statements WHERE starts_with(name, %s)", (_NAME_PREFIX,)
        ).fetchall()
        prepared.names = {str(name).encode() for (name,) in held}
    names = prepared.names
    pgconn = conn.pgconn
    # Which results answer a step (True) rather than a Parse (False).
    answers: list[bool] = []
    pgconn.enter_pipeline_mode()
    try:
        for name, text, encoded in batch:
            if name is None:
                pgconn.send_query_params(text, None)
            else:
                if name not in names:
                    pgconn.send_prepare(name, text)
                    names.add(name)
                    answers.append(False)
                pgconn.send_query_prepared(name, encoded)
            answers.append(True)
        pgconn.pipeline_sync()
        _flush(pgconn)
        results = _results(pgconn)
        pgconn.exit_pipeline_mode()
    except BaseException:
        # The connection broke, or was left mid-pipeline: it is of no more use.
        prepared.forget()
        conn.close()
        raise
    failure = _failure(results, len(answers), conn.info.encoding)
    if failure is not None:
        # What followed the failure in the pipeline was skipped, its
        # statements' first Parse included: read the names again next time.
        prepared.forget()
        raise failure
    return [result for result, answer in zip(results, answers, strict=True) if answer]


def send(
    conn: psycopg.Connection[Any],
    prepared: Prepared,
    writes: Sequence[tuple[str, Sequence[Any]]],
    *,
    commit: bool,
) -> None:
    """Send `writes` (each a statement and its values), then COMMIT if
    asked, in one round trip (see `execute`)."""
    steps: list[Step] = list(writes)
    if commit:
        steps.append(("COMMIT", None))
    execute(conn, prepared, steps)


def _flush(pgconn: pq.abc.PGconn) -> None:
    """Send everything queued, reading input meanwhile so that a server busy
    writing results to us never waits on us while we wait on it."""
    while pgconn.flush() == 1:
        readable, _, _ = select.select([pgconn.socket], [pgconn.socket], [])
        if readable:
            pgconn.consume_input()


def _results(pgconn: pq.abc.PGconn) -> list[pq.abc.PGresult]:
    """Every result up to the pipeline's sync, in order."""
    results: list[pq.abc.PGresult] = []
    while True:
        while pgconn.is_busy():
            select.select([pgconn.socket], [], [])
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            continue  # the end of one statement's results
        if result.status == ExecStatus.PIPELINE_SYNC:
            return results
        results.append(result)


def _failure(
    results: Sequence[pq.abc.PGresult], expected: int, encoding: str
) -> psycopg.Error | None:
    """psycopg's error for the first result that is not a success, if any."""
    for result in results:
        status = result.status
        if status == ExecStatus.FATAL_ERROR:
            return psycopg.errors.error_from_result(result, encoding=encoding)
        if status not in _DONE:
            name = ExecStatus(status).name
            return psycopg.OperationalError(f"unexpected result in a pipeline: {name}")
    if len(results) != expected:
        return psycopg.OperationalError(f"{len(results)} results in a pipeline of {expected}")
    return None
