"""Pages of a board's task listing, and the cursor that resumes one after another.

A listing is in creation order, then by task id. A page resumes after the
place of the last task of the page before (a keyset, not an offset): tasks
added, finished or deleted meanwhile never show a task twice or skip one
that was there all along, and a page deep into a board of 100k tasks costs
what the first one does.

The cursor is that place, the task's creation moment and id, as opaque URL-
safe text: callers hand back what `next` gave them and need not parse it.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from tenure.core.errors import InvalidInput
from tenure.core.model import Task, check_id, ensure_utc

#: The most tasks one page may ask for.
PAGE_MAX = 1000

#: Longer than any cursor this server makes (an ISO moment and a task id).
CURSOR_MAX = 512


def cursor_after(task: Task) -> str:
    """The cursor of the page that follows `task`."""
    place = f"{task.created_at.isoformat()}|{task.id}".encode()
    return base64.urlsafe_b64encode(place).decode().rstrip("=")


def place_of(cursor: str) -> tuple[datetime, str]:
    """The (creation moment, task id) a cursor names; `InvalidInput` if it is
    not one this server made."""
    try:
        if not cursor or len(cursor) > CURSOR_MAX:
            raise ValueError(cursor)
        padded = cursor + "=" * (-len(cursor) % 4)
        place = base64.urlsafe_b64decode(padded.encode("ascii")).decode()
        moment, bar, task_id = place.partition("|")
        if not bar:
            raise ValueError(place)
        return ensure_utc(datetime.fromisoformat(moment)), check_id(task_id)
    except (UnicodeError, binascii.Error, ValueError, InvalidInput):
        raise InvalidInput(
            "`after` is not a cursor from a listing's `next`", details={"field": "after"}
        ) from None


def page_size(limit: int | None) -> int | None:
    """A page's size as asked (None: every task), checked."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_MAX:
        raise InvalidInput(
            f"`limit` must be a whole number from 1 to {PAGE_MAX}",
            details={"field": "limit", "max": PAGE_MAX},
        )
    return limit
