"""Real git repositories for the evidence tests, built in `tmp_path`.

Each test gets its own repositories, made with the git on PATH under a fixed
identity and no user or system configuration, so the host's git settings
cannot change what a probe sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.gitrepo import Repo, init_repo


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A fixed identity and no user or system git configuration."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    for var in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{var}_NAME", "Tenure Tests")
        monkeypatch.setenv(f"GIT_{var}_EMAIL", "tests@tenure.invalid")
    yield


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    """The one allowed worktree root of a test."""
    root = tmp_path / "worktrees"
    root.mkdir()
    return root


@pytest.fixture
def hung_git(tmp_path: Path) -> Path:
    """A `git` that never answers: it starts a long sleep and waits for it.

    It writes the sleeping child's pid to `hung-child.pid`, so a test can check
    that the timeout killed the whole process group, not just the wrapper.
    """
    script = tmp_path / "hung-git"
    pidfile = tmp_path / "hung-child.pid"
    script.write_text(f"#!/bin/sh\nsleep 120 &\necho $! > '{pidfile}'\nwait\n")
    script.chmod(0o755)
    return script


@pytest.fixture
def make_repo() -> Callable[[Path], Repo]:
    """Make a repository with one commit at a path."""
    return init_repo
