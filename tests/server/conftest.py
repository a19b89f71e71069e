"""Fixtures for tests against a real `tenure serve` process (see tests/support/server.py).

- `live_server`: a factory, `live_server(env=None, args=())` -> a started
  `LiveServer` in a fresh folder, stopped at the end of the test.
- `short_lease_env`: settings with leases of 2 s and a fast monitor.

Modules that share one server for all their tests build it in a module-scoped
fixture with `start_server` and mark themselves with one `xdist_group`, so
pytest-xdist runs them on one worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from tests.support.server import SHORT_LEASES, LiveServer, start_server


@pytest.fixture
def short_lease_env() -> dict[str, str]:
    return dict(SHORT_LEASES)


@pytest.fixture
def live_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def make(env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()) -> LiveServer:
        folder: Path = tmp_path_factory.mktemp("server")
        server = start_server(folder, env, args)
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()
