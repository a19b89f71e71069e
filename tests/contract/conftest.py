"""The contract suite's fixtures: one `store` per backend, on a FakeClock.

Every test in tests/contract runs against each backend: `sqlite` is a fresh
file in tmp_path; `postgres` comes from tests/support/pg.py (a fresh database
per test), which skips loudly outside CI and fails under CI=true when
PostgreSQL is missing. Until that module exists the postgres runs skip, and
say why.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from contract_records import T0

from tenure.clock import FakeClock
from tenure.store.sqlite import SqliteStore

BACKENDS = ["sqlite", "postgres"]
_PG_SUPPORT = Path(__file__).resolve().parents[1] / "support" / "pg.py"


def _pg_support() -> ModuleType:
    """tests/support/pg.py, imported by name or, failing that, by path."""
    if not _PG_SUPPORT.exists():
        pytest.skip(
            "postgres contract runs need tests/support/pg.py (open_postgres_store), "
            "which is not written yet"
        )
    try:
        return importlib.import_module("tests.support.pg")
    except ModuleNotFoundError as exc:
        if exc.name not in {"tests", "tests.support", "tests.support.pg"}:
            raise
    spec = importlib.util.spec_from_file_location("tests.support.pg", _PG_SUPPORT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


Opener = Callable[[], Awaitable[Any]]


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[tuple[Any, Opener]]:
    """(store, reopen): `reopen()` opens another store on the same database."""
    opened: list[Any] = []
    if request.param == "sqlite":
        path = tmp_path / "contract.db"

        async def reopen() -> Any:
            store = await SqliteStore.open(path, clock)
            opened.append(store)
            return store

        first = await reopen()
    else:
        pg = _pg_support()
        first = await pg.open_postgres_store(clock)
        opened.append(first)

        async def reopen() -> Any:
            again = getattr(pg, "reopen_postgres_store", None)
            if again is None:
                pytest.skip("tests/support/pg.py has no reopen_postgres_store(store, clock)")
            store = await again(first, clock)
            opened.append(store)
            return store

    yield first, reopen
    for store in reversed(opened):
        await store.close()


@pytest.fixture
def store(backend: tuple[Any, Opener]) -> Any:
    """A fresh, migrated, empty store of each backend."""
    return backend[0]


@pytest.fixture
def reopen(backend: tuple[Any, Opener]) -> Opener:
    """Open a second store on the same database as `store`."""
    return backend[1]
