"""Which worktree paths Tenure accepts: only under an allowed root, symlinks followed."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tenure.auth import ADMIN, Caller, Role
from tenure.clock import FakeClock
from tenure.core.errors import InvalidInput
from tenure.core.model import Agent, Board
from tenure.evidence import check_worktree, worktree_for
from tenure.service import Coordinator, Options
from tenure.store.sqlite import open_sqlite

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
TEMPLATE = "{project_root}/../worktrees/{agent_id}"


def test_a_path_under_an_allowed_root_is_accepted_resolved(roots: Path) -> None:
    (roots / "a1" / "src").mkdir(parents=True)
    given = str(roots / "a1" / "src" / ".." / ".")
    assert check_worktree(given, [str(roots)]) == os.path.realpath(roots / "a1")


def test_a_path_that_does_not_exist_yet_is_judged_by_where_it_would_be(roots: Path) -> None:
    assert check_worktree(str(roots / "later"), [str(roots)]) == str(roots.resolve() / "later")


def test_a_path_outside_every_root_is_refused(roots: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(InvalidInput, match="outside the allowed roots") as caught:
        check_worktree(str(elsewhere), [str(roots)])
    assert caught.value.details["field"] == "worktree"


def test_a_sibling_sharing_the_roots_prefix_is_refused(roots: Path, tmp_path: Path) -> None:
    sneaky = tmp_path / "worktrees-evil"
    sneaky.mkdir()
    with pytest.raises(InvalidInput):
        check_worktree(str(sneaky), [str(roots)])


def test_escaping_through_dotdot_is_refused(roots: Path) -> None:
    with pytest.raises(InvalidInput, match="outside the allowed roots"):
        check_worktree(str(roots / "a1" / ".." / ".." / "etc"), [str(roots)])


def test_escaping_through_a_symlink_is_refused(roots: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (roots / "a1").symlink_to(secret)
    with pytest.raises(InvalidInput, match="outside the allowed roots"):
        check_worktree(str(roots / "a1"), [str(roots)])
    with pytest.raises(InvalidInput):
        check_worktree(str(roots / "a1" / "deeper"), [str(roots)])


def test_a_symlink_that_stays_inside_is_accepted(roots: Path) -> None:
    (roots / "real").mkdir()
    (roots / "alias").symlink_to(roots / "real")
    assert check_worktree(str(roots / "alias"), [str(roots)]) == str((roots / "real").resolve())


def test_an_allowed_root_that_is_itself_a_symlink_still_works(tmp_path: Path) -> None:
    real = tmp_path / "real-root"
    (real / "a1").mkdir(parents=True)
    link = tmp_path / "link-root"
    link.symlink_to(real)
    assert check_worktree(str(link / "a1"), [str(link)]) == str((real / "a1").resolve())


def test_with_no_allowed_roots_every_path_is_refused(roots: Path) -> None:
    with pytest.raises(InvalidInput, match="allowed_worktree_roots is empty"):
        check_worktree(str(roots), [])


@pytest.mark.parametrize("bad", ["", "   ", "relative/path", "./a1", "/tmp/a\x00b"])
def test_empty_relative_or_nul_paths_are_refused(roots: Path, bad: str) -> None:
    with pytest.raises(InvalidInput):
        check_worktree(bad, [str(roots)])


def _agent(worktree: str | None = None, agent_id: str = "a1") -> Agent:
    return Agent("b1", agent_id, agent_id, "hash", EPOCH, worktree=worktree)


def test_worktree_for_rechecks_a_registered_path_that_became_an_escaping_symlink(
    roots: Path, tmp_path: Path
) -> None:
    (roots / "a1").mkdir()
    agent = _agent(str(roots / "a1"))
    assert worktree_for(agent, None, "", [str(roots)]) == (roots / "a1").resolve()
    (roots / "a1").rmdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (roots / "a1").symlink_to(outside)
    assert worktree_for(agent, None, "", [str(roots)]) is None


def test_worktree_for_derives_the_template_under_the_project_roots_parent(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "worktrees" / "a1").mkdir(parents=True)
    board = Board("b1", "b1", EPOCH, project_root=str(tmp_path / "project"))
    found = worktree_for(_agent(), board, TEMPLATE, [])
    assert found == (tmp_path / "worktrees" / "a1").resolve()


def test_worktree_for_refuses_a_template_that_leaves_the_project_and_the_roots(
    tmp_path: Path,
) -> None:
    (tmp_path / "a" / "project").mkdir(parents=True)
    (tmp_path / "escape" / "a1").mkdir(parents=True)
    board = Board("b1", "b1", EPOCH, project_root=str(tmp_path / "a" / "project"))
    assert worktree_for(_agent(), board, "{project_root}/../../escape/{agent_id}", []) is None


def test_worktree_for_gives_none_without_anything_to_read(roots: Path, tmp_path: Path) -> None:
    board = Board("b1", "b1", EPOCH, project_root=str(tmp_path))
    assert worktree_for(None, board, TEMPLATE, [str(roots)]) is None
    assert worktree_for(_agent(), Board("b1", "b1", EPOCH), TEMPLATE, [str(roots)]) is None
    assert worktree_for(_agent(), board, "", [str(roots)]) is None
    assert worktree_for(_agent(), board, "{nonsense}/x", [str(roots)]) is None
    assert worktree_for(_agent(), board, TEMPLATE, [str(roots)]) is None  # not created


async def _coordinator(tmp_path: Path, roots: tuple[str, ...]) -> Coordinator:
    store = await open_sqlite(tmp_path / "tenure.db", FakeClock(EPOCH))
    coordinator = Coordinator(store, options=Options(allowed_worktree_roots=roots))
    await coordinator.admin.create_board(ADMIN, "b1")
    return coordinator


async def test_registration_refuses_a_worktree_outside_the_allowed_roots(
    roots: Path, tmp_path: Path
) -> None:
    coordinator = await _coordinator(tmp_path, (str(roots),))
    try:
        with pytest.raises(InvalidInput, match="outside the allowed roots"):
            await coordinator.admin.register_agent(
                ADMIN, {"agent_id": "a1", "worktree": str(tmp_path)}, "b1"
            )
        with pytest.raises(InvalidInput):
            await coordinator.admin.register_agent(
                ADMIN, {"agent_id": "a1", "worktree": str(roots / ".." / "x")}, "b1"
            )
        agents = await coordinator.admin.list_agents(ADMIN, "b1")
        assert agents == []
    finally:
        await coordinator.store.close()


async def test_registration_stores_the_resolved_worktree_and_updates_are_checked(
    roots: Path, tmp_path: Path
) -> None:
    (roots / "real").mkdir()
    (roots / "alias").symlink_to(roots / "real")
    coordinator = await _coordinator(tmp_path, (str(roots),))
    try:
        made = await coordinator.admin.register_agent(
            ADMIN, {"agent_id": "a1", "worktree": str(roots / "alias")}, "b1"
        )
        assert made["agent"]["worktree"] == str((roots / "real").resolve())
        me = Caller(Role.AGENT, "b1", "a1")
        with pytest.raises(InvalidInput):
            await coordinator.admin.register_agent(
                me, {"agent_id": "a1", "worktree": str(tmp_path)}
            )
        stored = await coordinator.store.read(lambda tx: tx.get_agent("b1", "a1"))
        assert stored is not None and stored.worktree == str((roots / "real").resolve())
    finally:
        await coordinator.store.close()


async def test_registration_with_no_roots_configured_refuses_any_worktree(
    roots: Path, tmp_path: Path
) -> None:
    coordinator = await _coordinator(tmp_path, ())
    try:
        with pytest.raises(InvalidInput, match="allowed_worktree_roots"):
            await coordinator.admin.register_agent(
                ADMIN, {"agent_id": "a1", "worktree": str(roots)}, "b1"
            )
        plain = await coordinator.admin.register_agent(ADMIN, {"agent_id": "a2"}, "b1")
        assert plain["agent"]["worktree"] is None
    finally:
        await coordinator.store.close()
