"""Input checks shared by every adapter: SPEC's limits, each raising `InvalidInput`.

HTTP, MCP and the CLI all call these before handing a value to the core, so
a field is judged the same way whichever transport carried it. The core's
transitions call them too, so a value that skipped an adapter is still
refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tenure.core.errors import InvalidInput
from tenure.core.model import check_id

__all__ = [
    "MAX_DESCRIPTION_BYTES",
    "MAX_EPOCH",
    "MAX_EVENT_ID",
    "MAX_LABELS",
    "MAX_LABEL_CHARS",
    "MAX_TEXT_BYTES",
    "check_branch",
    "check_description",
    "check_head_sha",
    "check_id",
    "check_labels",
    "check_progress",
    "check_text",
]

#: Message and blocker text limit (SPEC, Errors and limits).
MAX_TEXT_BYTES = 16 * 1024
#: Task description limit.
MAX_DESCRIPTION_BYTES = 64 * 1024
#: Labels and skills: how many, and how long each.
MAX_LABELS = 32
MAX_LABEL_CHARS = 64
#: Git refuses longer ref components on most filesystems; 255 keeps paths safe.
MAX_BRANCH_CHARS = 255
#: The largest epoch a caller may quote: the stores keep epochs in 32-bit
#: integers (PostgreSQL `integer`), and no task ever sees that many leases.
#: A larger number would overflow the column when a refusal logs it.
MAX_EPOCH = 2**31 - 1
#: The largest event id a caller may name (64-bit in both stores).
MAX_EVENT_ID = 2**63 - 1

_SHA = re.compile(r"[0-9a-fA-F]{4,64}")
# Characters `git check-ref-format` forbids anywhere in a ref name.
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def _invalid(what: str, message: str, value: object) -> InvalidInput:
    return InvalidInput(message, details={"field": what, "value": str(value)[:80]})


def check_progress(value: object, what: str = "progress") -> int:
    """Return `value` as a percentage 0..100; refuse anything else (bools too)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise _invalid(what, f"{what} must be an integer from 0 to 100", value)
    return value


def check_text(value: object, what: str = "message", limit: int = MAX_TEXT_BYTES) -> str:
    """Return `value` if it is a string of at most `limit` bytes in UTF-8.

    A NUL character or a lone surrogate is refused: neither can be stored
    as text (PostgreSQL refuses the one, UTF-8 cannot encode the other), so
    both stores refuse them alike, here.
    """
    if not isinstance(value, str):
        raise _invalid(what, f"{what} must be a string", type(value).__name__)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _invalid(what, f"{what} holds a lone surrogate, not text", value) from None
    if size > limit:
        raise _invalid(what, f"{what} is longer than {limit} bytes", value)
    if "\x00" in value:
        raise _invalid(what, f"{what} holds a NUL character", value)
    return value


def check_description(value: object) -> str:
    """A task description (64 KiB at most)."""
    return check_text(value, "description", MAX_DESCRIPTION_BYTES)


def check_labels(values: Iterable[object], what: str = "labels") -> tuple[str, ...]:
    """Labels or skills: at most 32, each a non-empty string of at most 64 characters."""
    items = tuple(values)
    if len(items) > MAX_LABELS:
        raise _invalid(what, f"at most {MAX_LABELS} {what}", len(items))
    for item in items:
        if not isinstance(item, str) or not 0 < len(item) <= MAX_LABEL_CHARS:
            raise _invalid(what, f"each of {what} must be 1 to {MAX_LABEL_CHARS} characters", item)
    return tuple(str(item) for item in items)


def check_branch(value: object, what: str = "branch") -> str:
    """Return `value` if it is a valid git ref name that does not start with `-`.

    The rules are those of `git check-ref-format --branch`, so the name can be
    pasted into the handoff's `git merge` line safely.
    """
    if not isinstance(value, str) or not value:
        raise _invalid(what, f"{what} must be a non-empty string", value)
    problem = _branch_problem(value)
    if problem:
        raise _invalid(what, f"{what} is not a valid git branch name: {problem}", value)
    return value


def _branch_problem(name: str) -> str:
    if len(name) > MAX_BRANCH_CHARS:
        return f"longer than {MAX_BRANCH_CHARS} characters"
    if name.startswith("-"):
        return "starts with '-'"
    if _REF_FORBIDDEN.search(name):
        return "contains a space, a control character or one of ~^:?*[\\"
    if name == "@" or "@{" in name:
        return "contains '@{' or is '@'"
    if ".." in name:
        return "contains '..'"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "has an empty path component"
    if name.endswith("."):
        return "ends with '.'"
    for part in name.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return "a component starts with '.' or ends with '.lock'"
    return ""


def check_head_sha(value: object, what: str = "head_sha") -> str:
    """A git object name: 4 to 64 hex digits (abbreviated, SHA-1 or SHA-256)."""
    if not isinstance(value, str) or _SHA.fullmatch(value) is None:
        raise _invalid(what, f"{what} must be 4 to 64 hexadecimal digits", value)
    return value.lower()
