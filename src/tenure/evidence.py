"""Worktree evidence: what an agent's git worktree shows about its holder.

An agent deep in a merge conflict, or busy editing files, is alive even when
it does not report. The monitor asks `GitEvidence.probe` about the leases it
is about to act on (never the whole fleet), outside every transaction, and
hands the answer to the detector as an `Evidence` value:

- `conflict`: `git status` lists unmerged paths (UU, AA, DD, DU, UD, AU, UA);
- `changed`: something in the worktree moved after the lease's last signal:
  a listed path's mtime, the index file (adds, commits, checkouts) or the
  HEAD reflog (commits, merges, resets); `changed_at`: the latest of those
  moments (the detector stamps the signal then, not at the probe).

Both come from one `git status` run, so a probe costs one subprocess and at
most `max_paths` + 2 `lstat` calls however large the tree: git answers from
its own index, and Tenure never walks the tree itself. A probe that fails in
any way (no git, not a repository, a timeout, a refusal by git) counts as no
conflict and no change.

Which directories may be probed at all is a server decision, not the
agent's: a worktree an agent names must resolve (symlinks followed) under
one of `agents.allowed_worktree_roots`. With no roots configured, a named
worktree is refused; only the one derived from the board's `project_root`
through `agents.worktree_template` is probed, and only when it lies under
the parent of that project root (where the default template puts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tenure.core.decisions import Evidence
from tenure.core.errors import InvalidInput
from tenure.core.model import Agent, Board, Lease

log = logging.getLogger("tenure.evidence")

#: `git status --porcelain` codes of an unmerged path (both sides touched it).
UNMERGED_CODES = frozenset({"DD", "AU", "UD", "UA", "DU", "AA", "UU"})

#: Status output read at most, so a pathological tree cannot fill memory.
MAX_STATUS_BYTES = 4 * 1024 * 1024

# Variables that would point git at another repository or index than the
# worktree's own, whatever the server's environment holds.
_GIT_REDIRECTS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
)


# --------------------------------------------------------------------- paths


def _resolved_roots(roots: Sequence[str]) -> list[Path]:
    return [Path(os.path.realpath(os.path.expanduser(root))) for root in roots if root]


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def check_worktree(path: str, allowed_roots: Sequence[str]) -> str:
    """Return `path` resolved (symlinks followed) if it lies under an allowed root.

    Raises `InvalidInput` for a relative path, for any path when no roots are
    configured, and for a path that leaves every root, directly or through
    `..` or a symlink. The path need not exist yet: the parts that exist are
    resolved, so a symlink already there cannot smuggle it out. Probes check
    again when they run, since a symlink may appear later.
    """
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise InvalidInput("worktree must be a non-empty path", details={"field": "worktree"})
    if not os.path.isabs(path):
        raise InvalidInput(
            "worktree must be an absolute path (the server cannot know the agent's directory)",
            details={"field": "worktree", "value": path[:200]},
        )
    roots = _resolved_roots(allowed_roots)
    if not roots:
        raise InvalidInput(
            "this server accepts no worktree paths: agents.allowed_worktree_roots is empty",
            details={"field": "worktree", "value": path[:200]},
        )
    resolved = Path(os.path.realpath(path))
    if not _under(resolved, roots):
        raise InvalidInput(
            f"worktree {path!r} resolves to {str(resolved)!r}, outside the allowed roots",
            details={
                "field": "worktree",
                "value": path[:200],
                "resolved": str(resolved)[:200],
                "allowed_roots": [str(r) for r in roots],
            },
        )
    return str(resolved)


def worktree_for(
    agent: Agent | None,
    board: Board | None,
    template: str,
    allowed_roots: Sequence[str],
) -> Path | None:
    """The directory to probe for `agent`, or None when there is none to read.

    The agent's own `worktree` wins, checked again against `allowed_roots`.
    Else `template` (`{project_root}`, `{agent_id}`, `{board_id}`) derives one
    from the board's `project_root`; it may lie under the allowed roots or
    under the project root's parent. The result must be an existing directory.
    """
    if agent is None:
        return None
    try:
        if agent.worktree:
            found = Path(check_worktree(agent.worktree, allowed_roots))
        elif board is not None and board.project_root and template:
            derived = template.format(
                project_root=board.project_root, agent_id=agent.id, board_id=board.id
            )
            parent = os.path.dirname(os.path.realpath(board.project_root))
            found = Path(check_worktree(derived, (*allowed_roots, parent)))
        else:
            return None
    except (InvalidInput, KeyError, ValueError, IndexError) as exc:
        # A worktree that was fine at registration may have become a symlink
        # out since; a template may name an unknown field. Either way: no
        # evidence for this agent, and the reason in the log.
        log.debug("no worktree for %s/%s: %s", agent.board_id, agent.id, exc)
        return None
    return found if found.is_dir() else None


# ---------------------------------------------------------------------- git


@dataclass
class EvidenceStats:
    """Running figures of a `GitEvidence`, for tests, metrics and /readyz."""

    probes: int = 0
    no_worktree: int = 0
    git_runs: int = 0
    timeouts: int = 0
    failures: int = 0
    conflicts: int = 0
    changes: int = 0


@dataclass(frozen=True, slots=True)
class StatusListing:
    """What one `git status` run listed."""

    unmerged: bool
    paths: tuple[str, ...]


def parse_status(output: bytes) -> StatusListing:
    """Read `git status --porcelain=v1 -z` output: unmerged or not, and the paths.

    Each entry is `XY path`, NUL-terminated; a rename or copy is followed by
    one more NUL-terminated field, its old path, which is skipped.
    """
    fields = output.split(b"\x00")
    unmerged = False
    paths: list[str] = []
    i = 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if len(entry) < 4:
            continue
        code = entry[:2].decode("ascii", "replace")
        if code in UNMERGED_CODES:
            unmerged = True
        paths.append(os.fsdecode(entry[3:]))
        if code[0] in "RC" or code[1] in "RC":
            i += 1  # the old path of a rename or copy
    return StatusListing(unmerged, tuple(paths))


def _git_dir(worktree: Path) -> Path | None:
    """The worktree's git directory: `.git` itself, or where a `.git` file points
    (linked worktrees and submodules), read without running git."""
    dot_git = worktree / ".git"
    try:
        if dot_git.is_dir():
            return dot_git
        with dot_git.open("rb") as pointer:  # a few bytes: never a big file
            first = pointer.read(4096).decode("utf-8", "replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    if not first.startswith("gitdir:"):
        return None
    target = Path(first[len("gitdir:") :].strip())
    return target if target.is_absolute() else worktree / target


def _as_utc(posix: float) -> datetime:
    return datetime.fromtimestamp(posix, UTC)


def _mtime(path: Path) -> float | None:
    try:
        return path.lstat().st_mtime
    except OSError:
        return None  # deleted since git listed it: its moment is unknown


class GitEvidence:
    """`EvidenceSource` over local git worktrees (see the module docstring).

    - `allowed_roots`: directories under which a worktree an agent names may lie.
    - `template`: derives a worktree from the board's `project_root` when the
      agent names none; an empty template derives nothing.
    - `git_timeout`: seconds one `git status` may take before it is killed.
    - `git`: the git executable (a path or a name on PATH).
    - `max_paths`: listed paths whose mtime is checked at most, per probe.
    """

    def __init__(
        self,
        *,
        allowed_roots: Sequence[str],
        template: str,
        git_timeout: float = 10.0,
        git: str = "git",
        max_paths: int = 256,
    ) -> None:
        if git_timeout <= 0:
            raise ValueError("git_timeout must be positive")
        self.allowed_roots = tuple(allowed_roots)
        self.template = template
        self.git_timeout = git_timeout
        self.git = git
        self.max_paths = max(0, max_paths)
        self.stats = EvidenceStats()

    def statistics(self) -> EvidenceStats:
        """How many probes ran, and what they found."""
        return self.stats

    async def probe(
        self, lease: Lease, agent: Agent | None, board: Board | None
    ) -> Evidence | None:
        """What the holder's worktree shows now; None when it has no readable one."""
        self.stats.probes += 1
        # Path resolution and lstat calls stay off the event loop: a slow
        # network file system must not stall the server.
        path = await asyncio.to_thread(
            worktree_for, agent, board, self.template, self.allowed_roots
        )
        if path is None:
            self.stats.no_worktree += 1
            return None
        return await self.inspect(path, lease.last_signal_at)

    async def inspect(self, worktree: Path, since: datetime | None) -> Evidence:
        """The evidence in `worktree`: unmerged paths, and changes after `since`."""
        status = await self._status(worktree)
        if status is None:
            return Evidence()
        latest = None
        if since is not None:
            latest = await asyncio.to_thread(self._changed_since, worktree, status.paths, since)
        changed = latest is not None
        self.stats.conflicts += status.unmerged
        self.stats.changes += changed
        return Evidence(
            conflict=status.unmerged,
            changed=changed,
            changed_at=None if latest is None else _as_utc(latest),
        )

    def _changed_since(self, worktree: Path, paths: Sequence[str], since: datetime) -> float | None:
        """The latest mtime after `since` (a POSIX time), or None when nothing moved."""
        threshold = since.timestamp()
        moments: list[float | None] = []
        git_dir = _git_dir(worktree)
        if git_dir is not None:
            # The index moves with adds, commits and checkouts; the HEAD reflog
            # with commits, merges and resets, which leave no dirty path behind.
            markers = (git_dir / "index", git_dir / "logs" / "HEAD")
            moments.extend(_mtime(marker) for marker in markers)
        for listed in paths[: self.max_paths]:
            path = worktree / listed
            # A deleted file has no mtime left; its directory's tells when.
            moment = _mtime(path)
            moments.append(_mtime(path.parent) if moment is None else moment)
        later = [moment for moment in moments if moment is not None and moment > threshold]
        return max(later, default=None)

    async def _status(self, worktree: Path) -> StatusListing | None:
        """Run `git status` in `worktree`; None on any failure (counted)."""
        argv = [
            self.git,
            # Never take the index lock (the agent may be running git right
            # now) and never run a repository's fsmonitor command.
            "--no-optional-locks",
            "-c",
            "core.fsmonitor=false",
            "-C",
            str(worktree),
            "status",
            "--porcelain=v1",
            "-z",
            # Every untracked file, not just its directory: an edit inside a
            # new directory leaves the directory's mtime alone.
            "--untracked-files=all",
            "--ignore-submodules=all",
        ]
        env = {k: v for k, v in os.environ.items() if k not in _GIT_REDIRECTS}
        env.update(GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0", LC_ALL="C")
        self.stats.git_runs += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env=env,
                # Its own process group, so a timeout kills whatever it started
                # too (a wrapper script's children would hold the pipe open).
                start_new_session=True,
            )
        except OSError as exc:
            self.stats.failures += 1
            log.warning("cannot run %s: %s", self.git, exc)
            return None
        try:
            output, truncated = await asyncio.wait_for(
                _read_bounded(proc), timeout=self.git_timeout
            )
        except TimeoutError:
            self.stats.timeouts += 1
            log.warning("git status in %s took over %.1f s; killed", worktree, self.git_timeout)
            await _kill(proc)
            return None
        except BaseException:
            await _kill(proc)
            raise
        if proc.returncode != 0 and not truncated:
            self.stats.failures += 1
            log.debug("git status in %s exited %s", worktree, proc.returncode)
            return None
        return parse_status(output)


async def _read_bounded(proc: asyncio.subprocess.Process) -> tuple[bytes, bool]:
    """Read stdout up to `MAX_STATUS_BYTES`, then reap `proc`.

    Returns the output and whether it was cut short (the process is then
    killed, and what was read still counts as a valid listing: a partial last
    entry only fails its lstat).
    """
    assert proc.stdout is not None
    chunks: list[bytes] = []
    size = 0
    while size < MAX_STATUS_BYTES:
        chunk = await proc.stdout.read(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    truncated = size >= MAX_STATUS_BYTES
    if truncated:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
    return b"".join(chunks)[:MAX_STATUS_BYTES], truncated


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill the process group of `proc` and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(proc.wait(), timeout=5.0)


if TYPE_CHECKING:
    from tenure.monitor import EvidenceSource

    def _conforms(source: GitEvidence) -> EvidenceSource:
        """Never called: mypy proves here that GitEvidence is an EvidenceSource."""
        return source


__all__ = [
    "UNMERGED_CODES",
    "EvidenceStats",
    "GitEvidence",
    "StatusListing",
    "check_worktree",
    "parse_status",
    "worktree_for",
]
