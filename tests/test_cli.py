"""The `tenure` command's skeleton: version, serve placeholder, config, help."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tenure import __version__
from tenure.cli import app, main
from tenure.settings import SETTINGS, render_settings_markdown

runner = CliRunner()


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """No TENURE_* variable and no ./tenure.toml, whatever the developer's shell has."""
    monkeypatch.chdir(tmp_path)
    env: dict[str, str | None] = {setting.env: None for setting in SETTINGS}
    env["TENURE_CONFIG"] = None
    return env


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout == f"tenure {__version__}\n"


def test_config_show_lists_every_setting_with_its_source(
    clean_env: dict[str, str | None], tmp_path: Path
) -> None:
    toml = tmp_path / "custom.toml"
    toml.write_text("[server]\nport = 9000\n")
    env = clean_env | {"TENURE_MONITOR_INTERVAL": "0.5", "TENURE_CONFIG": str(toml)}
    result = runner.invoke(app, ["config", "show"], env=env)
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert lines["SETTING"] == ["VALUE", "SOURCE"]
    assert lines["monitor.interval"] == ["0.5", "env", "TENURE_MONITOR_INTERVAL"]
    assert lines["server.port"] == ["9000", str(toml)]
    assert lines["server.host"] == ["127.0.0.1", "default"]
    assert set(lines) - {"SETTING"} == {setting.name for setting in SETTINGS}


def test_config_show_json_reads_the_file_given(
    clean_env: dict[str, str | None], tmp_path: Path
) -> None:
    toml = tmp_path / "other.toml"
    toml.write_text('[log]\nformat = "json"\n[hooks]\nsecret = "s3cret"\n')
    result = runner.invoke(app, ["config", "show", "--json", "--config", str(toml)], env=clean_env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["log.format"] == {"value": "json", "source": str(toml), "env": "TENURE_LOG_FORMAT"}
    assert shown["hooks.secret"]["value"] == "***"
    assert "s3cret" not in result.stdout
    assert shown["agents.allowed_worktree_roots"]["value"] == []


def test_config_show_names_a_wrong_setting_and_exits_2(clean_env: dict[str, str | None]) -> None:
    result = runner.invoke(
        app, ["config", "show"], env=clean_env | {"TENURE_SERVER_PORT": "eighty"}
    )
    assert result.exit_code == 2
    assert "server.port" in result.stderr
    assert "TENURE_SERVER_PORT" in result.stderr
    assert result.stdout == ""


def test_config_docs_prints_the_settings_reference() -> None:
    result = runner.invoke(app, ["config", "docs"])
    assert result.exit_code == 0
    assert result.stdout == render_settings_markdown()


def _commands(command: Any, path: str = "tenure") -> list[tuple[str, Any]]:
    """Every command under `command`, by its full name (groups included)."""
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, f"{path} {name}")
    return found


def test_every_command_has_an_example_in_its_help() -> None:
    commands = _commands(typer.main.get_command(app))
    assert {"tenure version", "tenure config show", "tenure serve"} <= {p for p, _ in commands}
    missing = [path for path, command in commands if "Example:" not in (command.help or "")]
    assert missing == [], f"commands whose help lacks 'Example:': {missing}"


def test_main_is_the_console_entry_point(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["tenure", "version"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"tenure {__version__}\n"
