"""The server's logs: text for people by default, JSON lines with `log.format=json`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tests.support.server import start_server

pytestmark = pytest.mark.xdist_group("dashboard")

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING) tenure\.\w+: ")


def _logs(folder: Path, env: dict[str, str]) -> str:
    server = start_server(folder, {"TENURE_LOG_LEVEL": "INFO", **env})
    try:
        assert server.admin().get("/boards").status_code == 200
    finally:
        server.stop()
    return server.logs()


def test_the_server_logs_text_by_default(tmp_path: Path) -> None:
    logs = _logs(tmp_path, {})
    lines = [line for line in logs.splitlines() if TEXT_LINE.match(line)]
    assert any("tenure.server: tenure" in line and "ready" in line for line in lines), logs
    assert not any(line.startswith("{") for line in logs.splitlines())


def test_the_server_logs_json_lines_when_asked(tmp_path: Path) -> None:
    logs = _logs(tmp_path, {"TENURE_LOG_FORMAT": "json"})
    entries = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert entries, logs
    for entry in entries:
        assert {"ts", "level", "logger", "message"} <= set(entry)
        assert entry["ts"].endswith("Z")
    assert any(e["logger"] == "tenure.server" and "ready" in e["message"] for e in entries)
    assert not any(TEXT_LINE.match(line) for line in logs.splitlines())
