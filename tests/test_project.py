"""The project's front door: the README's two commands, CI, and the public API."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import tenure

ROOT = Path(__file__).resolve().parent.parent
START_COMMAND = "./scripts/tenure serve"
TEST_COMMAND = "./scripts/test"


def _readme_commands() -> list[str]:
    """The first line of each of the README's first two fenced code blocks."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    return [block.strip().splitlines()[0].strip() for block in blocks[:2]]


def _commands_of(script: Path) -> list[str]:
    """A shell script's lines without blanks and comments."""
    lines = (line.strip() for line in script.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_readme_starts_with_the_start_and_the_test_command() -> None:
    assert _readme_commands() == [START_COMMAND, TEST_COMMAND]


def test_readme_opens_with_its_commands_before_any_other_section() -> None:
    text = (ROOT / "README.md").read_text()
    assert text.index(START_COMMAND) < text.index("\n## ")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = ROOT / ".ci" / "run"
    lines = _commands_of(ci)
    assert lines[0] == "set -euo pipefail"
    assert "export CI=true" in lines
    assert lines[-1] == _readme_commands()[1]
    assert ci.read_text().startswith("#!/usr/bin/env bash\n")


def test_the_readme_commands_and_ci_are_executable_scripts() -> None:
    for command in [*_readme_commands(), "./.ci/run"]:
        script = ROOT / command.split()[0]
        assert script.is_file(), command
        assert os.access(script, os.X_OK), f"{script} lacks its executable bit"


def test_the_start_script_hands_its_arguments_to_the_tenure_command() -> None:
    lines = _commands_of(ROOT / "scripts" / "tenure")
    assert lines[-1] == 'exec "$tenure_venv/bin/tenure" "$@"'
    assert "ensure_venv" in lines


def test_the_test_script_runs_lint_types_tests_and_core_coverage() -> None:
    text = (ROOT / "scripts" / "test").read_text()
    for needle in (
        'ruff" check src tests',
        'ruff" format --check src tests',
        "mypy",
        "-n auto --dist loadgroup",
        "--cov=tenure --cov-branch",
        "--include='src/tenure/core/*'",
        "--fail-under=100",
    ):
        assert needle in text, needle


def test_every_public_name_is_importable() -> None:
    assert "__version__" in tenure.__all__
    assert len(set(tenure.__all__)) == len(tenure.__all__), "duplicates in tenure.__all__"
    for name in tenure.__all__:
        assert hasattr(tenure, name), f"tenure.__all__ names {name!r}, which tenure lacks"
        assert getattr(importlib.import_module("tenure"), name) is getattr(tenure, name)


def test_the_version_is_the_installed_distribution_version() -> None:
    assert tenure.__version__ == version("tenure")


def test_the_shell_scripts_parse() -> None:
    for script in ("scripts/tenure", "scripts/test", "scripts/_venv.sh", ".ci/run"):
        checked = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
        assert checked.returncode == 0, f"{script}: {checked.stderr}"
