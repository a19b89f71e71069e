"""Two live servers for the MCP tests, started once per run.

Both pin SPEC's detector, whose numbers they shrink.
`steady`: SPEC's lease durations (minutes), a fast monitor and a short
suspect window, for lifecycles, touches, session closes and bad arguments.
`brisk`: a lease with at most one progress report lasts 1.5 s (+0.5 s grace),
so a silent agent is recovered within about two seconds: zombies and
claim-backs. Two reports make a lease `proven` (minutes) again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.mcp.live import LiveServer

#: Seconds after a close before a suspect lease may be recovered (SPEC: 30 s);
#: long enough for a new stdio proxy to start on a loaded machine.
SUSPECT_AFTER_CLOSE = 8.0
STEADY_MONITOR_INTERVAL = 0.5
BRISK_MONITOR_INTERVAL = 0.3
BRISK_LEASE = 1.5
BRISK_GRACE = 0.5


def _server(
    factory: pytest.TempPathFactory, name: str, env: dict[str, str]
) -> Iterator[LiveServer]:
    server = LiveServer(factory.mktemp(name), env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def steady(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from _server(
        tmp_path_factory,
        "steady",
        {
            "TENURE_DETECTOR_POLICY": "spec",
            "TENURE_MONITOR_INTERVAL": str(STEADY_MONITOR_INTERVAL),
            "TENURE_LEASE_SUSPECT_AFTER_CLOSE": str(SUSPECT_AFTER_CLOSE),
        },
    )


@pytest.fixture(scope="session")
def brisk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from _server(
        tmp_path_factory,
        "brisk",
        {
            "TENURE_DETECTOR_POLICY": "spec",
            "TENURE_MONITOR_INTERVAL": str(BRISK_MONITOR_INTERVAL),
            # Unproven (no report) and working (one report) leases: 1.5 s + 0.5 s grace.
            "TENURE_LEASE_PHASE1_LEASE": str(BRISK_LEASE),
            "TENURE_LEASE_PHASE1_GRACE": str(BRISK_GRACE),
            "TENURE_LEASE_PHASE2_LEASE": str(BRISK_LEASE),
            "TENURE_LEASE_PHASE2_GRACE": str(BRISK_GRACE),
        },
    )


@pytest.fixture(params=["http", "stdio"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)
