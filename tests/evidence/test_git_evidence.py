"""GitEvidence against real git repositories: conflicts, changes, failures, timeouts."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.gitrepo import Repo

from tenure.core.decisions import Evidence
from tenure.core.model import Agent, Board, Lease
from tenure.evidence import UNMERGED_CODES, GitEvidence, parse_status

#: A moment long before anything a test does; files aged to it look untouched.
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
#: The last signal the tests compare against.
SIGNAL = datetime(2020, 6, 1, tzinfo=UTC)


def evidence(roots: Path, **kwargs: object) -> GitEvidence:
    return GitEvidence(allowed_roots=[str(roots)], template="", **kwargs)  # type: ignore[arg-type]


def lease_for(agent_id: str, last_signal_at: datetime = SIGNAL) -> Lease:
    return Lease(
        board_id="b1",
        task_id="t1",
        agent_id=agent_id,
        epoch=1,
        assigned_at=last_signal_at,
        expires_at=last_signal_at + timedelta(seconds=180),
        grace_s=60,
        recover_after=last_signal_at + timedelta(seconds=240),
        last_renewed_at=last_signal_at,
        last_signal_at=last_signal_at,
    )


def agent_at(worktree: Path | None, agent_id: str = "a1") -> Agent:
    return Agent(
        "b1",
        agent_id,
        agent_id,
        "hash",
        LONG_AGO,
        worktree=str(worktree) if worktree else None,
    )


async def test_a_real_merge_conflict_is_reported(
    roots: Path, make_repo: Callable[[Path], Repo]
) -> None:
    repo = make_repo(roots / "a1")
    repo.conflict()
    repo.age(LONG_AGO)
    found = await evidence(roots).inspect(repo.path, SIGNAL)
    assert found == Evidence(conflict=True, changed=False)


async def test_a_clean_worktree_shows_no_conflict_and_no_change(
    roots: Path, make_repo: Callable[[Path], Repo]
) -> None:
    repo = make_repo(roots / "a1")
    repo.age(LONG_AGO)
    source = evidence(roots)
    assert await source.inspect(repo.path, SIGNAL) == Evidence()
    assert source.stats.git_runs == 1 and source.stats.failures == 0


async def test_a_folder_that_is_not_a_repository_shows_no_conflict(roots: Path) -> None:
    plain = roots / "a1"
    plain.mkdir()
    (plain / "notes.txt").write_text("not a repository\n")
    source = evidence(roots)
    assert await source.inspect(plain, SIGNAL) == Evidence()
    assert source.stats.failures == 1


async def test_a_missing_git_executable_shows_no_conflict(
    roots: Path, make_repo: Callable[[Path], Repo], tmp_path: Path
) -> None:
    repo = make_repo(roots / "a1")
    repo.conflict()
    source = evidence(roots, git=str(tmp_path / "no-such-git"))
    assert await source.inspect(repo.path, SIGNAL) == Evidence()
    assert source.stats.failures == 1


def _process_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie waiting for its reaper counts)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in {"Z", "X"}
    except FileNotFoundError:
        return True


async def test_a_hung_git_is_killed_at_the_timeout(
    roots: Path, make_repo: Callable[[Path], Repo], hung_git: Path, tmp_path: Path
) -> None:
    repo = make_repo(roots / "a1")
    repo.conflict()
    source = evidence(roots, git=str(hung_git), git_timeout=0.5)
    started = time.monotonic()
    found = await source.inspect(repo.path, SIGNAL)
    elapsed = time.monotonic() - started
    assert found == Evidence()  # a timeout counts as no conflict
    assert source.stats.timeouts == 1
    assert 0.4 <= elapsed < 10.0  # cut near 0.5 s, never the wrapper's 120 s
    # The wrapper's child was killed with it, not left sleeping on the pipe.
    child = int((tmp_path / "hung-child.pid").read_text())
    deadline = time.monotonic() + 5.0
    while not _process_gone(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _process_gone(child)


async def test_a_file_edited_after_the_last_signal_is_a_change(
    roots: Path, make_repo: Callable[[Path], Repo]
) -> None:
    repo = make_repo(roots / "a1")
    repo.write("src/work.py", "x = 1\n")
    repo.age(LONG_AGO)
    source = evidence(roots)
    assert (await source.inspect(repo.path, SIGNAL)).changed is False
    repo.set_mtime("src/work.py", SIGNAL + timedelta(seconds=5))
    assert await source.inspect(repo.path, SIGNAL) == Evidence(
        changed=True, changed_at=SIGNAL + timedelta(seconds=5)
    )


async def test_an_edit_before_the_last_signal_is_not_a_change(
    roots: Path, make_repo: Callable[[Path], Repo]
) -> None:
    repo = make_repo(roots / "a1")
    repo.write("README.md", "edited\n")
    repo.age(LONG_AGO)
    repo.set_mtime("README.md", SIGNAL - timedelta(seconds=5))
    assert " M README.md" in repo.status()
    assert (await evidence(roots).inspect(repo.path, SIGNAL)).changed is False


async def test_a_commit_after_the_last_signal_is_a_change_though_the_tree_is_clean(
    roots: Path, make_repo: Callable[[Path], Repo]
) -> None:
    repo = make_repo(roots / "a1")
    repo.age(LONG_AGO)
    since = datetime.now(UTC) - timedelta(seconds=30)
    repo.write("done.txt", "finished\n")
    repo.commit_all("work")
    repo.set_mtime("done.txt", LONG_AGO)  # only git's own files stay recent
    assert repo.status() == ""
    assert (await evidence(roots).inspect(repo.path, since)).changed is True


async def test_only_max_paths_listed_paths_are_looked_at(
    roots: Path, make_repo: Callable[[Path], Repo]
) -> None:
    repo = make_repo(roots / "a1")
    for name in ("a.txt", "b.txt", "c.txt"):
        repo.write(name, name)
    repo.age(LONG_AGO)
    repo.set_mtime("c.txt", SIGNAL + timedelta(seconds=5))
    assert (await evidence(roots, max_paths=2).inspect(repo.path, SIGNAL)).changed is False
    assert (await evidence(roots, max_paths=3).inspect(repo.path, SIGNAL)).changed is True


async def test_probe_reads_the_agents_worktree_and_counts(
    roots: Path, make_repo: Callable[[Path], Repo]
) -> None:
    repo = make_repo(roots / "a1")
    repo.conflict()
    repo.age(LONG_AGO)
    source = evidence(roots)
    found = await source.probe(lease_for("a1"), agent_at(repo.path), None)
    assert found == Evidence(conflict=True)
    assert source.stats.probes == 1 and source.stats.conflicts == 1


async def test_probe_without_a_readable_worktree_is_none(roots: Path, tmp_path: Path) -> None:
    source = evidence(roots)
    board = Board("b1", "b1", LONG_AGO)
    assert await source.probe(lease_for("a1"), None, board) is None
    assert await source.probe(lease_for("a1"), agent_at(None), board) is None
    assert await source.probe(lease_for("a1"), agent_at(roots / "missing"), board) is None
    outside = tmp_path / "outside"
    outside.mkdir()
    assert await source.probe(lease_for("a1"), agent_at(outside), board) is None
    assert source.stats.probes == 4 and source.stats.no_worktree == 4
    assert source.stats.git_runs == 0


async def test_probe_uses_the_template_under_the_project_roots_parent(
    tmp_path: Path, make_repo: Callable[[Path], Repo]
) -> None:
    project = make_repo(tmp_path / "project")
    worktree = tmp_path / "worktrees" / "a1"
    project.git("worktree", "add", "-q", "-b", "tenure/a1", str(worktree))
    edited = worktree / "README.md"
    edited.write_text("changed in the linked worktree\n")
    source = GitEvidence(allowed_roots=(), template="{project_root}/../worktrees/{agent_id}")
    board = Board("b1", "b1", LONG_AGO, project_root=str(tmp_path / "project"))
    found = await source.probe(
        lease_for("a1", datetime.now(UTC) - timedelta(minutes=5)), agent_at(None), board
    )
    assert found is not None and found.changed and not found.conflict
    assert found.changed_at is not None and found.changed_at > datetime.now(UTC) - timedelta(
        minutes=5
    )


def test_git_timeout_must_be_positive(roots: Path) -> None:
    with pytest.raises(ValueError):
        evidence(roots, git_timeout=0)


@pytest.mark.parametrize("code", sorted(UNMERGED_CODES))
def test_every_unmerged_code_is_a_conflict(code: str) -> None:
    listing = f" M a.txt\x00{code} both.txt\x00?? new.txt\x00".encode()
    parsed = parse_status(listing)
    assert parsed.unmerged is True
    assert parsed.paths == ("a.txt", "both.txt", "new.txt")


@pytest.mark.parametrize("code", ["M ", " M", "A ", "D ", "??", "R ", "MM", "AM"])
def test_other_codes_are_not_conflicts(code: str) -> None:
    assert parse_status(f"{code} a.txt\x00".encode() + b"old.txt\x00").unmerged is False


def test_a_renames_old_path_is_skipped() -> None:
    parsed = parse_status(b"R  new name.txt\x00old name.txt\x00 M other.txt\x00")
    assert parsed.paths == ("new name.txt", "other.txt")


async def test_a_file_deleted_after_the_last_signal_is_a_change(
    roots: Path, make_repo: Callable[[Path], Repo]
) -> None:
    repo = make_repo(roots / "a1")
    repo.write("lib/gone.py", "x = 1\n")
    repo.write("lib/stays.py", "y = 1\n")
    repo.commit_all("two files")
    (repo.path / "lib" / "gone.py").unlink()
    repo.age(LONG_AGO)
    assert " D lib/gone.py" in repo.status()
    source = evidence(roots)
    assert (await source.inspect(repo.path, SIGNAL)).changed is False
    repo.set_mtime("lib", SIGNAL + timedelta(seconds=5))
    assert (await source.inspect(repo.path, SIGNAL)).changed is True


_CODES = [*sorted(UNMERGED_CODES), "M ", " M", "MM", "A ", "AM", "D ", " D", "??", "R ", "C ", " R"]
_CHARS = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
_PATHS = st.text(_CHARS, min_size=1, max_size=40)


@given(st.lists(st.tuples(st.sampled_from(_CODES), _PATHS, _PATHS), max_size=20))
def test_parse_status_reads_back_any_listing(entries: list[tuple[str, str, str]]) -> None:
    listing = b""
    for code, path, old in entries:
        listing += f"{code} {path}".encode() + b"\x00"
        if "R" in code or "C" in code:
            listing += old.encode() + b"\x00"
    parsed = parse_status(listing)
    assert parsed.paths == tuple(path for _, path, _ in entries)
    assert parsed.unmerged == any(code in UNMERGED_CODES for code, _, _ in entries)
