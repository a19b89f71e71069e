"""Real git repositories for tests: made in a temporary directory with the git on PATH."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime
from pathlib import Path


class Repo:
    """A git repository on disk and the few moves the tests make in it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(self.path), *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def write(self, name: str, text: str) -> Path:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    def commit_all(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def status(self) -> str:
        return self.git("--no-optional-locks", "status", "--porcelain").stdout

    def age(self, moment: datetime) -> None:
        """Set every file and directory of the repository (its .git too) to `moment`,
        so only what a test changes afterwards looks recent."""
        stamp = moment.timestamp()
        for root, dirs, files in os.walk(self.path):
            for name in [*dirs, *files]:
                os.utime(os.path.join(root, name), (stamp, stamp), follow_symlinks=False)
        os.utime(self.path, (stamp, stamp))

    def set_mtime(self, name: str, moment: datetime) -> None:
        stamp = moment.timestamp()
        os.utime(self.path / name, (stamp, stamp))

    def conflict(self) -> None:
        """Stop in the middle of a real merge that leaves an unmerged path (UU)."""
        self.write("shared.txt", "base\n")
        self.commit_all("base")
        self.git("checkout", "-q", "-b", "other")
        self.write("shared.txt", "theirs\n")
        self.commit_all("theirs")
        self.git("checkout", "-q", "main")
        self.write("shared.txt", "ours\n")
        self.commit_all("ours")
        merged = self.git("merge", "--no-edit", "other", check=False)
        assert merged.returncode != 0, merged.stdout
        assert "UU shared.txt" in self.status()


def init_repo(path: Path) -> Repo:
    """A repository with one commit on `main`."""
    path.mkdir(parents=True, exist_ok=True)
    repo = Repo(path)
    repo.git("init", "-q", "-b", "main")
    repo.write("README.md", "hello\n")
    repo.commit_all("first")
    return repo
