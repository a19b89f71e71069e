"""Shared input checks, statistics, the public API, and the core's purity."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from corekit import Bench

import tenure.core
from tenure.core import LeaseState, Policy, statistics
from tenure.core import lease as lease_module
from tenure.core.errors import InvalidInput
from tenure.core.validate import (
    check_branch,
    check_description,
    check_head_sha,
    check_labels,
    check_progress,
    check_text,
)

CORE = Path(tenure.core.__file__).parent

# Input checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 50, 100])
def test_progress_from_0_to_100_is_accepted(value: int) -> None:
    assert check_progress(value) == value


@pytest.mark.parametrize("value", [-1, 101, 50.0, "50", True, None])
def test_progress_out_of_range_or_of_the_wrong_type_is_refused(value: object) -> None:
    with pytest.raises(InvalidInput):
        check_progress(value)


def test_text_is_limited_to_16_kib_in_utf8() -> None:
    assert check_text("é" * 8192) == "é" * 8192
    with pytest.raises(InvalidInput):
        check_text("é" * 8193)
    with pytest.raises(InvalidInput):
        check_text(42)
    assert check_description("x" * 65536)
    with pytest.raises(InvalidInput):
        check_description("x" * 65537)


@pytest.mark.parametrize("bad", ["a\x00b", "\x00", "lone \ud800 surrogate"])
def test_text_that_no_store_can_keep_is_refused(bad: str) -> None:
    """A NUL character (PostgreSQL's text refuses it) or a lone surrogate
    (UTF-8 cannot encode it): refused alike for both stores."""
    with pytest.raises(InvalidInput) as refused:
        check_text(bad, "message")
    assert refused.value.details["field"] == "message"
    assert check_text("tabs\tand\nnewlines \u2603") == "tabs\tand\nnewlines \u2603"


@pytest.mark.parametrize(
    "name", ["main", "tenure/a1", "feature/parser-2", "fix_1.2", "a@b", "release/v1.0"]
)
def test_valid_git_branch_names_are_accepted(name: str) -> None:
    assert check_branch(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-x",
        "--upload-pack=evil",
        "a b",
        "a..b",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[b",
        "a\\b",
        "a\tb",
        "@",
        "a@{1}",
        "/a",
        "a/",
        "a//b",
        "a.",
        ".hidden",
        "a/.b",
        "a.lock",
        "a/b.lock/c",
        "x" * 256,
        None,
    ],
)
def test_invalid_git_branch_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidInput):
        check_branch(name)


def test_head_shas_are_hex_and_lowercased() -> None:
    assert check_head_sha("ABCD") == "abcd"
    assert check_head_sha("a" * 64)
    for bad in ("abc", "g" * 40, "a" * 65, 7):
        with pytest.raises(InvalidInput):
            check_head_sha(bad)


def test_labels_are_limited_in_number_and_length() -> None:
    assert check_labels(["a", "b"]) == ("a", "b")
    with pytest.raises(InvalidInput):
        check_labels(["x"] * 33)
    with pytest.raises(InvalidInput):
        check_labels(["x" * 65])
    with pytest.raises(InvalidInput):
        check_labels([""])
    with pytest.raises(InvalidInput):
        check_labels([3])


# Statistics -------------------------------------------------------------------------------


def test_statistics_count_leases_by_state_and_flag_and_summarise_counters() -> None:
    bench = Bench()
    for task_id in ("t1", "t2", "t3"):
        bench.add(task_id)
    bench.claim("a1", "t1")
    bench.claim("a2", "t2")
    bench.claim("a3", "t3")
    bench.set(10)
    for _ in range(2):
        bench.report("a1", "t1", progress=10)
    bench.report("a2", "t2", status="completed", validate=True)
    bench.set(181)
    bench.report("a3", "t3", status="completed")
    leases = [lease for history in bench.history.values() for lease in history]
    stats = statistics(
        leases, bench.now, bench.policy, {"revivals": 2, "recoveries.lease_expired": 1}
    )
    assert stats["live"] == 2
    assert stats["by_state"][LeaseState.ACTIVE] == 2
    assert stats["by_state"][LeaseState.ENDED] == 1
    assert stats["by_state"][LeaseState.IN_GRACE] == 0
    assert stats["by_flag"]["validating"] == 1
    assert stats["average_renewals"] == 1.0
    assert stats["revivals"] == 2
    assert stats["recoveries"] == {
        "agent_disconnected": 0,
        "lease_expired": 1,
        "validation_timeout": 0,
    }
    assert stats["false_recoveries"] == {"reclaimed": 0, "lost": 0}
    assert stats["extensions"] == {"merge_conflict": 0, "validation": 0}
    assert stats["counters"] == {"revivals": 2, "recoveries.lease_expired": 1}


def test_statistics_of_nothing() -> None:
    stats = statistics([], Bench().now, Policy())
    assert stats["live"] == 0 and stats["average_renewals"] == 0.0
    assert set(stats["by_state"]) == {state.value for state in LeaseState}


# The public API -------------------------------------------------------------------------------

CONTRACT = {
    "lease_state": ["lease", "now", "policy"],
    "seconds_left": ["lease", "now"],
    "phase_of": ["lease", "policy"],
    "compute_recover_after": ["expires_at", "grace_s", "suspect_since", "policy"],
    "median_interval": ["stamps"],
    "create": ["task", "agent_id", "now", "policy", "branch"],
    "touch": ["lease", "now", "policy", "task"],
    "report": ["subject", "agent_id", "report", "now", "policy"],
    "heartbeat": ["subject", "agent_id", "now", "policy", "epoch"],
    "release": ["subject", "agent_id", "now", "policy", "message"],
    "block": ["subject", "agent_id", "now", "policy", "reason"],
    "validation_result": ["subject", "now", "policy", "passed", "note", "by_holder"],
    "unassign": ["task", "live", "now", "policy", "reason"],
    "cancel": ["task", "live", "now", "policy"],
    "requeue": ["task", "now", "policy"],
    "session_closed": ["lease", "now", "policy"],
    "extend_for_conflict": ["lease", "now", "policy"],
    "recover": ["task", "lease", "now", "policy", "reason"],
    "statistics": ["leases", "now", "policy", "counters"],
}


@pytest.mark.parametrize(("name", "params"), sorted(CONTRACT.items()))
def test_the_lease_module_keeps_the_contract_signatures(name: str, params: list[str]) -> None:
    function = getattr(lease_module, name)
    assert list(inspect.signature(function).parameters)[: len(params)] == params
    assert getattr(tenure.core, name) is function


def test_end_assignment_takes_reason_and_status_as_keywords() -> None:
    parameters = inspect.signature(lease_module.end_assignment).parameters
    assert list(parameters)[:4] == ["task", "lease", "now", "policy"]
    for keyword in ("reason", "status", "handoff"):
        assert parameters[keyword].kind is inspect.Parameter.KEYWORD_ONLY


def test_everything_exported_exists() -> None:
    for name in tenure.core.__all__:
        assert hasattr(tenure.core, name), name


# Purity ------------------------------------------------------------------------------------

FORBIDDEN_MODULES = {
    "asyncio",
    "sqlite3",
    "psycopg",
    "psycopg_pool",
    "subprocess",
    "socket",
    "threading",
    "http",
    "httpx",
    "urllib",
    "mcp",
    "fastapi",
    "starlette",
    "uvicorn",
    "time",
    "os",
    "io",
    "pathlib",
    "shutil",
    "multiprocessing",
    "tenure.clock",
    "tenure.store",
    "tenure.service",
}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}


def core_modules() -> list[Path]:
    return sorted(CORE.glob("*.py"))


def imported_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_scan_sees_every_core_module() -> None:
    names = {path.stem for path in core_modules()}
    assert {"lease", "detector", "handoff", "stats", "model", "policy"} <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda path: path.stem)
def test_the_core_imports_nothing_that_does_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for name in imported_names(tree):
        root = name.split(".")[0]
        assert root not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
        assert name not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
        assert not any(name.startswith(f"{bad}.") for bad in FORBIDDEN_MODULES)


@pytest.mark.parametrize("path", core_modules(), ids=lambda path: path.stem)
def test_the_core_reads_no_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in CLOCK_CALLS, (
                f"{path.name}:{node.lineno} calls .{node.func.attr}()"
            )
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"open", "input", "print"}, (
                f"{path.name}:{node.lineno} calls {node.func.id}()"
            )


def test_the_purity_scan_catches_an_offender() -> None:
    bad = ast.parse("import asyncio\nfrom datetime import datetime\ndatetime.now()\n")
    assert "asyncio" in imported_names(bad)
    calls = [n.func.attr for n in ast.walk(bad) if isinstance(n, ast.Call)]  # type: ignore[attr-defined]
    assert "now" in calls
