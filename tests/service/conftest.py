"""Service scenarios run on both stores with a FakeClock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.world import World, backends, make_world


@pytest.fixture(params=backends())
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    made = await make_world(request.param, tmp_path)
    await made.setup_board()
    try:
        yield made
    finally:
        await made.store.close()
