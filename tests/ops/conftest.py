"""Fixtures of the operations tests: `live_server`, a factory of real
`tenure serve` processes (see tests/support/server.py), each in a fresh
folder and stopped at the end of the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest
from tests.support.server import LiveServer, start_server


@pytest.fixture
def live_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def make(env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()) -> LiveServer:
        server = start_server(tmp_path_factory.mktemp("ops-server"), env, args)
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()
