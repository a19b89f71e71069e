"""The lab's trace format: what a fleet of agents did, one JSON object a line.

A trace is the input of `tenure.lab.replay`: the moments at which agents were
given tasks, reported progress, called any other tool, changed files in their
worktree, hit and left merge conflicts, completed, lost their session and
died. Times `t` are seconds from the start of the trace, and lines are sorted
by `t`. Unknown fields are ignored, so traces may carry notes of their own; an
unknown type, a malformed line, or a line out of order is refused with its
line number (`InvalidInput`, details `line`).

    {"t": 0.0,   "type": "assign",   "agent": "a1", "task": "T1"}
    {"t": 35.2,  "type": "progress", "agent": "a1", "task": "T1", "progress": 10}
    {"t": 50.0,  "type": "activity", "agent": "a1"}
    {"t": 51.0,  "type": "write",    "agent": "a1"}
    {"t": 400.0, "type": "conflict_start", "agent": "a1"}
    {"t": 700.0, "type": "conflict_end",   "agent": "a1"}
    {"t": 900.0, "type": "complete", "agent": "a1", "task": "T1"}
    {"t": 950.0, "type": "disconnect", "agent": "a1", "how": "dropped"}
    {"t": 1200.0, "type": "disconnect", "agent": "a2", "how": "closed"}
    {"t": 1200.0, "type": "death",   "agent": "a2", "task": "T7"}

A `disconnect` ends the agent's last session, `how` saying in which way:
`closed` (the default, so older traces still load) is an explicit close
(the client's DELETE, or the stdio proxy seeing its agent process exit);
`dropped` is a connection that dropped with no DELETE (a network fault, a
killed process tree). An explicit close after a drop, with no call between,
makes the close explicit; a drop after an explicit close changes nothing.

A **stint** is one `assign` of a task to an agent, until its `complete`, its
`death`, or the end of the trace (`stints`). `death` is ground truth for the
scores and is never shown to the engine; a dead agent sends nothing more (a
later `assign` to the same id is a new agent process under the old name).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from tenure.core.errors import InvalidInput
from tenure.core.model import check_id

__all__ = [
    "Stint",
    "TraceEvent",
    "TraceType",
    "dump_trace",
    "load_trace",
    "parse_trace",
    "stints",
]


class TraceType(StrEnum):
    """The kinds of line a trace may hold."""

    ASSIGN = "assign"
    PROGRESS = "progress"
    ACTIVITY = "activity"
    WRITE = "write"
    CONFLICT_START = "conflict_start"
    CONFLICT_END = "conflict_end"
    COMPLETE = "complete"
    DISCONNECT = "disconnect"
    DEATH = "death"


#: Types that name a task (for `death` the task is optional: the agent's open stint).
_NEEDS_TASK = frozenset({TraceType.ASSIGN, TraceType.PROGRESS, TraceType.COMPLETE})

#: Types that are calls of the agent to the server (they reopen a closed session).
CALLS = frozenset({TraceType.PROGRESS, TraceType.ACTIVITY, TraceType.COMPLETE})

#: How a `disconnect` ended the session: an explicit close, or a dropped connection.
CLOSED, DROPPED = "closed", "dropped"
HOWS = (CLOSED, DROPPED)


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One line of a trace. `line` is its 1-based line number (0 if built in code)."""

    t: float
    type: TraceType
    agent: str
    task: str | None = None
    progress: int | None = None
    message: str = ""
    line: int = 0
    how: str = CLOSED  # `disconnect` only: `closed` or `dropped`

    @property
    def dropped(self) -> bool:
        """A `disconnect` whose connection dropped (no explicit close)."""
        return self.type is TraceType.DISCONNECT and self.how == DROPPED

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this line (only the fields its type uses)."""
        out: dict[str, Any] = {"t": round(self.t, 3), "type": str(self.type), "agent": self.agent}
        if self.task is not None:
            out["task"] = self.task
        if self.progress is not None:
            out["progress"] = self.progress
        if self.message:
            out["message"] = self.message
        if self.type is TraceType.DISCONNECT:
            out["how"] = self.how
        return out


@dataclass
class Stint:
    """One assign of `task` to `agent`, until complete, death or the end of the trace.

    `ending` is `complete`, `death` or `end`; `end` its time. `closed_session`
    is true for a death whose agent's last session was closed explicitly when
    it died (its process exited), `dropped_session` for one whose connection
    had dropped (a killed process tree); neither for a silent death. `blips`
    counts disconnects the agent came back from during the stint.
    """

    agent: str
    task: str
    start: float
    end: float = math.inf
    ending: str = "end"
    death: float | None = None
    closed_session: bool = False
    dropped_session: bool = False
    blips: int = 0
    line: int = 0

    @property
    def dead(self) -> bool:
        """True when the agent died during this stint."""
        return self.death is not None


def _refuse(line: int, message: str, **details: Any) -> InvalidInput:
    return InvalidInput(f"trace line {line}: {message}", details={"line": line, **details})


def _event_from(raw: Any, line: int) -> TraceEvent:
    """One parsed line, checked for form (not yet for its place in the trace)."""
    if not isinstance(raw, Mapping):
        raise _refuse(line, "a line must be a JSON object")
    t = raw.get("t")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise _refuse(line, "t must be a number of seconds >= 0", field="t")
    kind = raw.get("type")
    try:
        typ = TraceType(str(kind))
    except ValueError:
        raise _refuse(
            line,
            f"unknown type {str(kind)[:40]!r}; one of {', '.join(TraceType)}",
            field="type",
        ) from None
    agent = raw.get("agent")
    try:
        agent = check_id(agent, "agent")  # type: ignore[arg-type]
    except InvalidInput as error:
        raise _refuse(line, error.message, field="agent") from None
    task = raw.get("task")
    if task is not None or typ in _NEEDS_TASK:
        try:
            task = check_id(task, "task")  # type: ignore[arg-type]
        except InvalidInput as error:
            raise _refuse(line, f"{typ} needs a task: {error.message}", field="task") from None
    progress: int | None = None
    if typ is TraceType.PROGRESS:
        value = raw.get("progress")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
            raise _refuse(line, "progress must be a number from 0 to 100", field="progress")
        progress = round(value)
    message = raw.get("message", "")
    if not isinstance(message, str):
        raise _refuse(line, "message must be a string", field="message")
    how = raw.get("how", CLOSED) if typ is TraceType.DISCONNECT else CLOSED
    if how not in HOWS:
        raise _refuse(line, f"how must be one of {', '.join(HOWS)}", field="how")
    return TraceEvent(float(t), typ, agent, task, progress, message, line, str(how))


def parse_trace(lines: Iterable[str]) -> list[TraceEvent]:
    """Parse JSON lines into events, refusing the first bad line with its number.

    Blank lines are skipped. Besides each line's form, the order is checked
    (`t` never goes down) and a dead agent may send nothing but a new `assign`.
    """
    events: list[TraceEvent] = []
    dead: set[str] = set()
    last_t = 0.0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise _refuse(number, f"not JSON ({error.msg})") from None
        event = _event_from(raw, number)
        if event.t < last_t:
            raise _refuse(number, f"t={event.t} is earlier than the line before (t={last_t})")
        last_t = event.t
        if event.agent in dead:
            if event.type is not TraceType.ASSIGN:
                raise _refuse(number, f"agent {event.agent} died earlier and sends nothing more")
            dead.discard(event.agent)
        if event.type is TraceType.DEATH:
            dead.add(event.agent)
        events.append(event)
    return events


def load_trace(path: str | Path) -> list[TraceEvent]:
    """Read and parse the trace file at `path`."""
    with open(path, encoding="utf-8") as handle:
        return parse_trace(handle)


def dump_trace(events: Iterable[TraceEvent | Mapping[str, Any]]) -> str:
    """The JSON-lines text of a trace (one compact object a line, ending in a newline)."""
    out = []
    for event in events:
        data = event.to_dict() if isinstance(event, TraceEvent) else dict(event)
        out.append(json.dumps(data, separators=(",", ":")))
    return "\n".join(out) + ("\n" if out else "")


@dataclass
class _Open:
    """Per-agent state while cutting a trace into stints."""

    stints: dict[str, Stint] = field(default_factory=dict)
    connected: bool = True
    dropped: bool = False  # while disconnected: the connection dropped


def stints(events: Iterable[TraceEvent]) -> list[Stint]:
    """The trace's stints, in the order of their `assign`."""
    found: list[Stint] = []
    agents: dict[str, _Open] = {}
    end = 0.0
    for event in events:
        end = event.t
        state = agents.setdefault(event.agent, _Open())
        if event.type is TraceType.ASSIGN:
            assert event.task is not None
            stint = Stint(event.agent, event.task, event.t, line=event.line)
            state.stints[event.task] = stint
            found.append(stint)
        elif event.type is TraceType.DISCONNECT:
            # An explicit close after a drop makes it explicit, never the reverse.
            state.dropped = event.dropped and (state.connected or state.dropped)
            state.connected = False
        elif event.type is TraceType.DEATH:
            if event.task is None:
                held = list(state.stints.values())
                state.stints.clear()
            else:
                held = [state.stints.pop(event.task)] if event.task in state.stints else []
            for stint in held:
                stint.end, stint.ending, stint.death = event.t, "death", event.t
                stint.closed_session = not state.connected and not state.dropped
                stint.dropped_session = not state.connected and state.dropped
            state.connected, state.dropped = True, False
        elif event.type in CALLS:
            if not state.connected:
                for stint in state.stints.values():
                    stint.blips += 1
                state.connected, state.dropped = True, False
            if event.type is TraceType.COMPLETE and event.task in state.stints:
                stint = state.stints.pop(event.task)
                stint.end, stint.ending = event.t, "complete"
    for stint in found:
        if stint.ending == "end":
            stint.end = end
    return found
