"""Names that reach a path or a git command: every branch name Tenure accepts
is one git itself accepts as a branch (`git check-ref-format --branch`) and
cannot be read as an option; every id Tenure accepts is one safe path
component. Property tests over text made of the troublesome characters."""

from __future__ import annotations

import subprocess
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenure.core.errors import InvalidInput
from tenure.core.model import check_id
from tenure.core.validate import check_branch

#: Characters that matter to git refs, shells and paths, and plain ones.
TRICKY = "ab-_./@{}~^:?*[]\\ \t\n\x00\x01\x7f;$`'\"|&<>!é"
names = st.text(alphabet=TRICKY, min_size=1, max_size=12)


def git_accepts_branch(name: str) -> bool:
    done = subprocess.run(
        ["git", "check-ref-format", "--branch", name], capture_output=True, text=True, timeout=10
    )
    return done.returncode == 0 and done.stdout.strip() == name


@given(names)
def test_every_accepted_branch_is_a_branch_git_accepts_and_no_option(name: str) -> None:
    try:
        check_branch(name)
    except InvalidInput:
        return
    assert not name.startswith("-")
    assert "\x00" not in name  # cannot even be an argument
    assert git_accepts_branch(name), f"Tenure accepts {name!r}, git does not"


@pytest.mark.parametrize("name", ["main", "tenure/agent-1", "feature/x.y", "a_b-c"])
def test_ordinary_branches_are_accepted(name: str) -> None:
    assert check_branch(name) == name and git_accepts_branch(name)


@given(names)
def test_every_accepted_id_is_one_safe_path_component(value: str) -> None:
    try:
        check_id(value)
    except InvalidInput:
        return
    assert value not in {".", ".."} and not value.startswith(("-", "."))
    assert PurePosixPath(value).name == value and len(PurePosixPath(value).parts) == 1
    assert value.isprintable() and value.isascii() and " " not in value
