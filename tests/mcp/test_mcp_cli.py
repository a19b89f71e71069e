"""`tenure mcp` refuses to start without a token or a reachable server."""

from __future__ import annotations

import os
import subprocess

from tests.mcp.live import TENURE_BIN, free_port


def _run(*args: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENURE_")}
    if token is not None:
        env["TENURE_TOKEN"] = token
    return subprocess.run(
        [str(TENURE_BIN), "mcp", *args],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_a_token_it_says_so() -> None:
    done = _run("--url", "http://127.0.0.1:1", token=None)
    assert done.returncode == 2
    assert "TENURE_TOKEN" in done.stderr


def test_without_a_server_it_says_which_one() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = _run("--url", url, token="tnr_agent_x")
    assert done.returncode == 1
    assert f"cannot open a session at {url}/mcp" in done.stderr
    assert "ExceptionGroup" not in done.stderr
