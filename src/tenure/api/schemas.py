"""Request bodies of the HTTP API, with SPEC's limits, so OpenAPI states them.

Each model forbids unknown fields and carries the limits of SPEC's "Errors and
limits" (progress 0-100, texts of 16 KiB, descriptions of 64 KiB, up to 32
labels and skills of 64 characters, ids of the glossary's form), so a client
reading /openapi.json knows what the server accepts before it sends anything.
The Coordinator checks every value again: these models describe, the
Coordinator decides. Answers are the Coordinator's JSON views, documented by
the loose response models at the end.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tenure.core.model import ID_PATTERN
from tenure.core.validate import MAX_EPOCH

#: One request body may not exceed this many bytes (SPEC: 413 over 1 MiB).
MAX_BODY_BYTES = 1024 * 1024

Id = Annotated[str, StringConstraints(pattern=f"^{ID_PATTERN.pattern}$", max_length=64)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Text16K = Annotated[str, Field(max_length=16 * 1024)]
Name = Annotated[str, Field(max_length=200)]
Branch = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^-]")]
Sha = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{4,64}$")]
Epoch = Annotated[int, Field(ge=1, le=MAX_EPOCH)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BoardIn(_Body):
    """A new board. Its enrolment key and viewer token are in the answer, once."""

    id: Id
    name: Name = ""
    project_root: Annotated[str, Field(max_length=4096)] | None = None


class TaskIn(_Body):
    """A new task."""

    id: Id
    title: Annotated[str, Field(min_length=1, max_length=512)]
    description: Annotated[str, Field(max_length=64 * 1024)] = ""
    priority: Literal["low", "medium", "high", "urgent"] = "medium"
    labels: Annotated[list[Short], Field(max_length=32)] = []
    required_skills: Annotated[list[Short], Field(max_length=32)] = []
    estimated_hours: Annotated[float, Field(ge=0, le=10_000)] | None = None
    dependencies: Annotated[list[Id], Field(max_length=32)] = []


class TaskPatch(_Body):
    """Fields of a task to change; those left out stay as they are."""

    title: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    description: Annotated[str, Field(max_length=64 * 1024)] | None = None
    priority: Literal["low", "medium", "high", "urgent"] | None = None
    labels: Annotated[list[Short], Field(max_length=32)] | None = None
    required_skills: Annotated[list[Short], Field(max_length=32)] | None = None
    estimated_hours: Annotated[float, Field(ge=0, le=10_000)] | None = None
    dependencies: Annotated[list[Id], Field(max_length=32)] | None = None


class TaskImport(_Body):
    """Several tasks at once (a JSON list of tasks is accepted as well)."""

    tasks: Annotated[list[TaskIn], Field(max_length=10_000)]


class AgentIn(_Body):
    """An agent's registration. Under an enrolment key the agent joins the key's
    board; an admin names the board; under an agent's own token it updates its
    profile."""

    agent_id: Id
    name: Name = ""
    role: Name = ""
    skills: Annotated[list[Short], Field(max_length=32)] = []
    worktree: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    board_id: Id | None = None


class ClaimIn(_Body):
    """A claim; `worktree` optionally sets the agent's worktree first."""

    worktree: Annotated[str, Field(min_length=1, max_length=4096)] | None = None


class AssignIn(_Body):
    """Give a named task to a named agent (admin)."""

    agent_id: Id


class ProgressIn(_Body):
    """A progress report by the holder. `completed` ends the task (or opens a
    validation window with `validate`); `blocked` ends the lease. `claim_next`:
    then claim the agent's next task in the same call (the answer's `next`)."""

    status: Literal["in_progress", "completed", "blocked"] = "in_progress"
    progress: Annotated[int, Field(ge=0, le=100)] | None = None
    message: Text16K = ""
    branch: Branch | None = None
    head_sha: Sha | None = None
    epoch: Epoch | None = None
    validate_: Annotated[bool, Field(alias="validate")] = False
    claim_next: bool = False

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class HeartbeatIn(_Body):
    """An explicit sign of life about one task, optionally with worktree evidence
    (a remote agent reporting a merge conflict gets an extension)."""

    epoch: Epoch | None = None
    conflict: bool = False
    changed: bool = False


class BlockIn(_Body):
    """The holder cannot go on. `claim_next`: then claim the agent's next task
    in the same call (the answer's `next`)."""

    description: Annotated[str, Field(min_length=1, max_length=16 * 1024)]
    severity: Literal["low", "medium", "high", "critical"] = "medium"
    claim_next: bool = False


class ReleaseIn(_Body):
    """The holder gives the task back, with an optional note for the next agent."""

    message: Text16K = ""


class ValidationIn(_Body):
    """The result of a validation window."""

    passed: bool
    note: Text16K = ""


class ErrorBody(BaseModel):
    """SPEC's one error shape: `{"error": {"code", "message", "details"}}`."""

    class Inner(BaseModel):
        code: str
        message: str
        details: dict[str, Any] = {}

    error: Inner


#: The error answers every route may give, for OpenAPI.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (401, "No token, or an unknown or revoked one (`unauthorized`)."),
        (403, "`forbidden` or `not_holder`."),
        (404, "Unknown id, or an id of another board (`not_found`)."),
        (409, "`lease_lost` or `conflict`."),
        (413, "A body over 1 MiB (`payload_too_large`)."),
        (422, "A field out of range or of the wrong form (`invalid_input`)."),
        (503, "The database cannot be reached (`store_unavailable`)."),
    )
}
