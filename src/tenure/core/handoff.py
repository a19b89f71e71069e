"""The handoff: what the next holder of a taken-back task is told.

A handoff is built when a lease ends without the task being finished
(recovery, release, unassign). Its `instructions` are markdown an agent can
follow as they are: merge the previous branch first, read its log, continue
from the progress reached. Late notes from the old holder join it afterwards
without ever lowering the progress it reports.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from tenure.core.model import Handoff, Lease, Task, ensure_utc
from tenure.core.policy import Policy

__all__ = [
    "RECOVERED_MARKER",
    "branch_of",
    "build_handoff",
    "handoff_comment",
    "is_visible",
    "render_instructions",
    "with_late_report",
]

#: Marks the board comment of a recovery, so people and scripts can find them.
RECOVERED_MARKER = "[tenure:recovered]"
#: Marks the board comment of a release or an unassignment.
HANDED_BACK_MARKER = "[tenure:handed-back]"
#: Late notes kept per handoff (the newest win); bounds the task row.
MAX_LATE_NOTES = 20


def branch_of(lease: Lease, policy: Policy) -> str:
    """The branch holding the holder's work: the one it reported, else the template."""
    return lease.branch or policy.branch_template.format(agent_id=lease.agent_id)


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


def render_instructions(
    *,
    agent_id: str,
    branch: str,
    progress: int,
    reason: str,
    message: str,
    head_sha: str | None = None,
    late_notes: tuple[str, ...] = (),
) -> str:
    """The handoff's markdown: merge first, read the log, continue from `progress`."""
    lines = [
        f"## Handoff from `{agent_id}` ({reason})",
        "",
        f"The previous holder reached **{progress}%**. Its work is on branch `{branch}`"
        + (f" (last commit `{head_sha}`)." if head_sha else "."),
        "",
        f"1. Merge the previous branch first: `git merge {branch} --no-edit`",
        f"2. Read what was done: `git log {branch}`",
        f"3. Continue from {progress}%; do not restart the task.",
        "",
    ]
    if message.strip():
        lines += [f"Last note from `{agent_id}`:", "", _quote(message), ""]
    else:
        lines += [
            f"No note was left: read `git diff main {branch}` and do not re-implement "
            "files that exist there.",
            "",
        ]
    if late_notes:
        lines += ["Notes that arrived after the recovery:", ""]
        lines += [_quote(note) for note in late_notes]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def build_handoff(task: Task, lease: Lease, now: datetime, policy: Policy, reason: str) -> Handoff:
    """The handoff for `lease` ending at `now` for `reason`.

    Its progress is the highest the lease reported, and never below the
    progress of the handoff the task already carries (the new holder merged
    that work first).
    """
    now = ensure_utc(now, "now")
    progress = max(lease.max_progress, lease.progress)
    if task.handoff is not None:
        progress = max(progress, task.handoff.previous_progress)
    branch = branch_of(lease, policy)
    return Handoff(
        recovered_at=now,
        recovered_from_agent=lease.agent_id,
        previous_progress=progress,
        time_spent_minutes=max(0.0, (now - lease.assigned_at).total_seconds() / 60.0),
        recovery_reason=str(reason),
        previous_agent_branch=branch,
        instructions=render_instructions(
            agent_id=lease.agent_id,
            branch=branch,
            progress=progress,
            reason=str(reason),
            message=lease.message,
            head_sha=lease.head_sha,
        ),
        expires_at=now + timedelta(seconds=policy.handoff_ttl_s),
        head_sha=lease.head_sha,
        last_progress_message=lease.message,
        epoch=lease.epoch,
    )


def with_late_report(
    handoff: Handoff, agent_id: str, now: datetime, progress: int | None, message: str
) -> Handoff:
    """`handoff` after a late report: the note kept, the progress never lowered."""
    notes = handoff.late_notes
    if message.strip():
        notes = (*notes, f"{agent_id} at {now.isoformat()}: {message}")[-MAX_LATE_NOTES:]
    reached = max(handoff.previous_progress, progress if progress is not None else 0)
    instructions = render_instructions(
        agent_id=handoff.recovered_from_agent,
        branch=handoff.previous_agent_branch,
        progress=reached,
        reason=handoff.recovery_reason,
        message=handoff.last_progress_message,
        head_sha=handoff.head_sha,
        late_notes=notes,
    )
    return replace(handoff, previous_progress=reached, late_notes=notes, instructions=instructions)


def is_visible(handoff: Handoff | None, now: datetime) -> bool:
    """True while the handoff is shown to agents (before its 24 h expiry)."""
    return handoff is not None and ensure_utc(now, "now") < handoff.expires_at


def handoff_comment(handoff: Handoff, *, recovered: bool) -> str:
    """The board comment for a handoff; a recovery's carries `RECOVERED_MARKER`."""
    marker = RECOVERED_MARKER if recovered else HANDED_BACK_MARKER
    return (
        f"{marker} Task taken back from `{handoff.recovered_from_agent}` "
        f"({handoff.recovery_reason}) at {handoff.recovered_at.isoformat()}: "
        f"{handoff.previous_progress}% after {handoff.time_spent_minutes:.1f} min.\n\n"
        f"{handoff.instructions}"
    )
