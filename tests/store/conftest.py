"""Fixtures shared by the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tenure.store.postgres import PostgresStore


@pytest.fixture
async def stores() -> AsyncIterator[list[PostgresStore]]:
    """PostgreSQL stores a test opens (see `tests.support.pg.open_into`);
    closed at its end whatever happens."""
    opened: list[PostgresStore] = []
    yield opened
    for store in opened:
        await store.close()
