"""Checking what callers send: task specs, agent profiles, board fields.

Every adapter passes raw mappings here, so a task imported from YAML, posted
over HTTP or created from the CLI meets the same limits and the same error
codes (SPEC, Errors and limits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tenure.core.errors import InvalidInput
from tenure.core.model import Priority, check_id
from tenure.core.validate import MAX_DESCRIPTION_BYTES, check_labels, check_text

TITLE_MAX = 512
NAME_MAX = 200
PATH_MAX = 4096


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task as a caller describes it, checked."""

    id: str
    title: str
    description: str = ""
    priority: Priority = Priority.MEDIUM
    labels: tuple[str, ...] = ()
    required_skills: tuple[str, ...] = ()
    estimated_hours: float | None = None
    dependencies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """An agent's registration fields, checked."""

    id: str
    name: str
    role: str = ""
    skills: tuple[str, ...] = ()
    worktree: str | None = None


def text(value: Any, field: str, limit: int, *, required: bool = False) -> str:
    """A string field of at most `limit` bytes (UTF-8), with no NUL in it."""
    checked = check_text("" if value is None else value, field, limit)
    if required and not checked.strip():
        raise InvalidInput(f"{field} is required", details={"field": field})
    if "\x00" in checked:
        raise InvalidInput(f"{field} may not contain NUL", details={"field": field})
    return checked


def short_list(value: Any, field: str) -> tuple[str, ...]:
    """Up to 32 strings of 1 to 64 characters (labels, skills), duplicates dropped."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidInput(f"{field} must be a list of strings", details={"field": field})
    items = check_labels(value, field)
    if any(not item.strip() or any(ord(ch) < 32 for ch in item) for item in items):
        raise InvalidInput(
            f"{field} may not hold blank items or control characters", details={"field": field}
        )
    return tuple(dict.fromkeys(items))


def id_list(value: Any, field: str) -> tuple[str, ...]:
    """A list of task ids (dependencies)."""
    items = short_list(value, field)
    for item in items:
        check_id(item, field)
    return items


def priority(value: Any) -> Priority:
    """A priority by name (case-insensitive); medium when absent."""
    if value is None:
        return Priority.MEDIUM
    try:
        return Priority(str(value).lower())
    except ValueError:
        raise InvalidInput(
            f"priority must be one of {[p.value for p in Priority]}",
            details={"field": "priority", "value": str(value)[:40]},
        ) from None


def hours(value: Any) -> float | None:
    """An estimate in hours: a number in [0, 10000], or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput("estimated_hours must be a number", details={"field": "estimated_hours"})
    number = float(value)
    if not 0 <= number <= 10_000:
        raise InvalidInput(
            "estimated_hours must be between 0 and 10000", details={"field": "estimated_hours"}
        )
    return number


def task_spec(data: Mapping[str, Any]) -> TaskSpec:
    """Check a task description from any transport or file."""
    if not isinstance(data, Mapping):
        raise InvalidInput("a task must be an object")
    unknown = set(data) - {
        "id",
        "title",
        "description",
        "priority",
        "labels",
        "required_skills",
        "skills",
        "estimated_hours",
        "dependencies",
        "depends_on",
    }
    if unknown:
        raise InvalidInput(
            f"unknown task fields: {sorted(unknown)}", details={"fields": sorted(unknown)}
        )
    return TaskSpec(
        id=check_id(data.get("id"), "id"),  # type: ignore[arg-type]
        title=text(data.get("title"), "title", TITLE_MAX, required=True),
        description=text(data.get("description"), "description", MAX_DESCRIPTION_BYTES),
        priority=priority(data.get("priority")),
        labels=short_list(data.get("labels"), "labels"),
        required_skills=short_list(
            data.get("required_skills", data.get("skills")), "required_skills"
        ),
        estimated_hours=hours(data.get("estimated_hours")),
        dependencies=id_list(data.get("dependencies", data.get("depends_on")), "dependencies"),
    )


def task_changes(data: Mapping[str, Any]) -> dict[str, Any]:
    """Check the fields of a task update; returns only the fields given."""
    allowed: dict[str, Callable[[Any], Any]] = {
        "title": lambda v: text(v, "title", TITLE_MAX, required=True),
        "description": lambda v: text(v, "description", MAX_DESCRIPTION_BYTES),
        "priority": priority,
        "labels": lambda v: short_list(v, "labels"),
        "required_skills": lambda v: short_list(v, "required_skills"),
        "estimated_hours": hours,
        "dependencies": lambda v: id_list(v, "dependencies"),
    }
    unknown = set(data) - set(allowed)
    if unknown:
        raise InvalidInput(
            f"fields that cannot be updated: {sorted(unknown)}", details={"fields": sorted(unknown)}
        )
    return {name: allowed[name](value) for name, value in data.items()}


def agent_profile(data: Mapping[str, Any]) -> AgentProfile:
    """Check an agent's registration fields."""
    agent_id = check_id(data.get("agent_id", data.get("id")), "agent_id")
    worktree = data.get("worktree")
    if worktree is not None:
        worktree = text(worktree, "worktree", PATH_MAX, required=True)
    return AgentProfile(
        id=agent_id,
        name=text(data.get("name") or agent_id, "name", NAME_MAX),
        role=text(data.get("role"), "role", NAME_MAX),
        skills=short_list(data.get("skills"), "skills"),
        worktree=worktree,
    )


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A dependency cycle among `edges` (task -> its dependencies), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for start in edges:
        if state.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, Iterable[str]]] = [(start, iter(edges.get(start, ())))]
        state[start] = 1
        path.append(start)
        while stack:
            node, children = stack[-1]
            advanced = False
            for child in children:
                mark = state.get(child, 0)
                if mark == 1:
                    return [*path[path.index(child) :], child]
                if mark == 0 and child in edges:
                    state[child] = 1
                    path.append(child)
                    stack.append((child, iter(edges.get(child, ()))))
                    advanced = True
                    break
            if not advanced:
                state[node] = 2
                path.pop()
                stack.pop()
    return None
