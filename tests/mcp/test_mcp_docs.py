"""docs/agents.md stays true to the tools and its configurations stay valid."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from tenure.api.mcp_tools import TOOLS

DOC = Path(__file__).resolve().parents[2] / "docs" / "agents.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_tool_and_its_arguments_are_documented() -> None:
    text = DOC.read_text()
    rows = {
        line.split("|")[1].strip(" `"): line for line in text.splitlines() if line.startswith("| `")
    }
    for tool in TOOLS:
        assert tool.name in rows, tool.name
        for argument in tool.properties:
            assert f"`{argument}`" in rows[tool.name], (tool.name, argument)


def test_the_client_configurations_parse() -> None:
    configs = [json.loads(block) for block in _blocks("json")]
    assert len(configs) == 2
    for config in configs:
        assert "tenure" in config["mcpServers"]
    tomls = [tomllib.loads(block) for block in _blocks("toml")]
    assert {"url", "command"} <= {key for t in tomls for key in t["mcp_servers"]["tenure"]}


def test_the_agent_protocol_says_what_to_do_on_lease_lost() -> None:
    [protocol] = _blocks("markdown")
    assert "lease_lost" in protocol and "request_next_task" in protocol
