"""The operations guide stays true: every `tenure` command it shows parses
with the options it shows, and the settings help says what the code does."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import typer

from tenure.cli import app
from tenure.core.errors import InvalidInput
from tenure.evidence import check_worktree
from tenure.settings import SETTINGS_BY_NAME

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _guide_commands() -> list[list[str]]:
    text = GUIDE.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].split(">", 1)[0].strip()
            words = shlex.split(line)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words = words[1:]  # environment assignments before the command
            if words and words[0] == "tenure":
                commands.append(words[1:])
    return commands


def test_the_guide_shows_the_operations_commands() -> None:
    shown = {" ".join(words[:2]) for words in _guide_commands()}
    for wanted in ("events prune", "db migrate", "config show", "task edit", "agent rotate"):
        assert wanted in shown, wanted
    assert any(words[0] == "export" for words in _guide_commands())
    assert any(words[0] == "import" for words in _guide_commands())


@pytest.mark.parametrize("words", _guide_commands(), ids=" ".join)
def test_every_command_in_the_guide_parses(words: list[str]) -> None:
    command: click.Command = typer.main.get_command(app)
    context = click.Context(command, info_name="tenure")
    rest = list(words)
    while isinstance(command, click.Group) and rest:
        sub = command.get_command(context, rest[0])
        if sub is None:
            break
        command, rest = sub, rest[1:]
        context = click.Context(command, info_name=words[0], parent=context)
    assert not isinstance(command, click.Group) or command.invoke_without_command, words
    command.make_context("tenure", rest)  # raises on an unknown option or a bad value


def test_the_worktree_roots_help_says_what_an_empty_list_does() -> None:
    help_text = SETTINGS_BY_NAME["agents.allowed_worktree_roots"].help
    assert "refused" in help_text and "project_root" in help_text
    with pytest.raises(InvalidInput, match="allowed_worktree_roots is empty"):
        check_worktree("/srv/worktrees/a1", ())
