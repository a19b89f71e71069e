"""`tenure board watch BOARD`: the dashboard's board, live in a terminal.

For people on the server's host over SSH: the four columns (todo, in
progress, blocked, done), each held task with its agent, progress, a ticking
lease countdown with phase and grace, state and flags, last note and branch;
recovered tasks with their handoff; dead letters in red; the fleet figures
and the latest events. It opens with the board's overview (the done tasks
completed last are held, older ones only counted), follows the board's
event stream and refetches only the tasks an event names, so it stays
cheap on a large board and on a long history.

`render_board(tasks, stats, now)` builds the picture from the API's JSON
(no I/O), so tests render it into a captured Console.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from tenure.cli_client import DEFAULT_URL, ApiCall, Token, Url

Json = dict[str, Any]

COLUMNS = (
    ("todo", "To do"),
    ("in_progress", "In progress"),
    ("blocked", "Blocked"),
    ("done", "Done"),
)
_PRIORITY = {"urgent": 0, "high": 1, "medium": 2, "low": 3}
_STATE_STYLE = {
    "active": "green",
    "expiring_soon": "yellow",
    "in_grace": "bold yellow",
    "suspect": "bold yellow",
    "expired": "bold red",
    "ended": "dim",
}
_EVENT_STYLE = {
    "lease.recovered": "red",
    "task.dead_lettered": "bold red",
    "lease.escalated": "yellow",
    "lease.stalled": "yellow",
    "lease.suspect": "yellow",
    "lease.stale_refused": "yellow",
    "lease.revived": "green",
    "lease.reclaimed": "green",
    "lease.created": "cyan",
}
#: Tasks an event may name before the watcher refetches the whole board instead.
REFETCH_ALL_OVER = 25


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _clock(seconds: float) -> str:
    s = max(0, round(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def lease_state(lease: Json, now: datetime, warning_s: float = 60.0) -> str:
    """The lease's state at `now`, from its JSON (so the view ages between fetches)."""
    if lease.get("ended_at"):
        return "ended"
    recover_after = _moment(lease.get("recover_after"))
    expires_at = _moment(lease.get("expires_at"))
    if recover_after is not None and now >= recover_after:
        return "expired"
    if lease.get("suspect_since"):
        return "suspect"
    if expires_at is not None:
        left = (expires_at - now).total_seconds()
        if left < 0:
            return "in_grace"
        if left < warning_s:
            return "expiring_soon"
    return "active"


def _bar(progress: int, width: int = 14) -> Text:
    filled = round(max(0, min(100, progress)) / 100 * width)
    bar = Text("▕", style="dim")
    bar.append("█" * filled, style="cyan")
    bar.append("░" * (width - filled), style="dim")
    bar.append("▏", style="dim")
    bar.append(f" {progress:>3}%")
    return bar


def _countdown(lease: Json, state: str, now: datetime) -> str:
    expires_at = _moment(lease.get("expires_at")) or now
    recover_after = _moment(lease.get("recover_after")) or now
    left = (expires_at - now).total_seconds()
    if state == "expired":
        return "expired, awaiting the monitor"
    if state == "in_grace":
        return f"in grace, recoverable in {_clock((recover_after - now).total_seconds())}"
    return f"{_clock(left)} left"


def render_card(task: Json, now: datetime, warning_s: float = 60.0) -> Text:
    """One task as a few lines of text."""
    dead = bool(task.get("dead_lettered"))
    card = Text()
    card.append(task.get("title", ""), style="bold red" if dead else "bold")
    card.append(f"  {task['id']}", style="dim")
    priority = task.get("priority", "medium")
    if priority in ("urgent", "high"):
        card.append(f"  {priority}", style="red" if priority == "urgent" else "yellow")
    tags = []
    if dead:
        tags.append(("DEAD LETTER", "bold white on red"))
    if task.get("recovery_count"):
        tags.append((f"recovered ×{task['recovery_count']}", "magenta"))
    lease = task.get("lease")
    if lease:
        state = lease_state(lease, now, warning_s)
        tags.insert(0, (state.replace("_", " "), _STATE_STYLE.get(state, "")))
        flags = sorted({*lease.get("flags", []), *task.get("flags", [])} - {"dead_letter"})
    else:
        flags = sorted(set(task.get("flags", [])) - {"dead_letter"})
    tags.extend((flag, "blue") for flag in flags)
    if tags:
        card.append("\n ")
        for label, style in tags:
            card.append(f"[{label}]", style=style)
            card.append(" ")
    if lease:
        card.append("\n ● ", style="cyan")
        card.append(str(lease.get("agent_id")), style="bold cyan")
        card.append(f"  epoch {lease.get('epoch')}\n ", style="dim")
        card.append_text(_bar(int(lease.get("progress") or 0)))
        state = lease_state(lease, now, warning_s)
        card.append(f"\n {_countdown(lease, state, now)}", style=_STATE_STYLE.get(state, ""))
        card.append(
            f" · phase {lease.get('phase')} · grace {round(lease.get('grace_s') or 0)}s",
            style="dim",
        )
        if lease.get("message"):
            card.append(f"\n “{_short(lease['message'])}”", style="italic")
        if lease.get("branch"):
            card.append(f"\n ⎇ {lease['branch']}", style="green")
    handoff = task.get("handoff")
    if handoff and not lease:
        reason = _words(str(handoff.get("recovery_reason", "")))
        card.append(
            f"\n ↩ handoff from {handoff.get('recovered_from_agent')} at "
            f"{handoff.get('previous_progress')}% ({reason})",
            style="magenta",
        )
        if handoff.get("previous_agent_branch"):
            card.append(f"\n ⎇ {handoff['previous_agent_branch']}", style="green")
        if handoff.get("last_progress_message"):
            card.append(f"\n “{_short(handoff['last_progress_message'])}”", style="italic")
    if task.get("status") == "blocked" and task.get("blocked_reason"):
        card.append(f"\n {_words(str(task['blocked_reason']))}", style="red")
    return card


def _words(text: str) -> str:
    """A code such as `recovery_budget_exhausted` in words; people's text as it is."""
    return text.replace("_", " ") if re.fullmatch(r"[a-z0-9_]+", text) else text


def _short(text: str, limit: int = 70) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _order(task: Json) -> tuple[Any, ...]:
    status = task.get("status")
    priority = _PRIORITY.get(task.get("priority", "medium"), 9)
    if status == "todo":
        return (0 if task.get("handoff") else 1, priority, task.get("created_at") or "", task["id"])
    if status == "blocked":
        return (0 if task.get("dead_lettered") else 1, priority, task["id"])
    if status == "done":
        return ("",)  # sorted apart, newest first
    return (priority, task.get("created_at") or "", task["id"])


def _finished(task: Json) -> str:
    return str(task.get("completed_at") or task.get("updated_at") or "")


def render_figures(stats: Json | None) -> Text:
    """The fleet figures in one line."""
    if not stats:
        return Text("figures: loading…", style="dim")
    by_state = stats.get("by_state", {})
    false = stats.get("false_recoveries", {})
    figures = [
        ("active leases", stats.get("live", 0), ""),
        ("expiring", by_state.get("expiring_soon", 0), "yellow"),
        ("in grace", by_state.get("in_grace", 0), "yellow"),
        ("suspect", by_state.get("suspect", 0), "yellow"),
        ("recoveries", sum(stats.get("recoveries", {}).values()), ""),
        ("revivals", stats.get("revivals", 0), ""),
        ("reclaimed", false.get("reclaimed", 0), ""),
        ("lost", false.get("lost", 0), ""),
        ("stale refused", stats.get("stale_refused", 0), ""),
        ("dead letters", stats.get("dead_letters", 0), "bold red"),
    ]
    line = Text()
    for index, (label, value, style) in enumerate(figures):
        if index:
            line.append("  ·  ", style="dim")
        line.append(str(value), style=(style if value else "") + " bold")
        line.append(f" {label}", style="dim")
    return line


def render_board(
    tasks: Sequence[Json],
    stats: Json | None,
    now: datetime,
    *,
    board_id: str = "",
    events: Sequence[Json] = (),
    per_column: int = 12,
    warning_s: float = 60.0,
    status_line: str = "",
    hidden_done: int = 0,
) -> RenderableType:
    """The board as a Rich renderable: figures, four columns, latest events.
    `hidden_done`: done tasks not among `tasks` (older than those), counted."""
    by_status: dict[str, list[Json]] = {status: [] for status, _ in COLUMNS}
    for task in tasks:
        by_status.setdefault(str(task.get("status")), []).append(task)
    for status, items in by_status.items():
        if status == "done":
            items.sort(
                key=lambda t: t.get("completed_at") or t.get("updated_at") or "", reverse=True
            )
        else:
            items.sort(key=_order)
    title = Text()
    title.append("Tenure", style="bold cyan")
    if board_id:
        title.append(f"  board {board_id}", style="bold")
    title.append(f"  {now.astimezone(UTC):%H:%M:%S} UTC", style="dim")
    if status_line:
        title.append(f"  {status_line}", style="dim")
    table = Table(expand=True, show_lines=False, pad_edge=False, box=None, padding=(0, 1))
    counts = {status: len(items) for status, items in by_status.items()}
    counts["done"] = counts.get("done", 0) + hidden_done
    for status, label in COLUMNS:
        table.add_column(f"{label} ({counts[status]})", ratio=1, overflow="fold")
    cells: list[RenderableType] = []
    for status, _ in COLUMNS:
        items = by_status[status]
        shown: list[RenderableType] = []
        for task in items[:per_column]:
            shown.append(render_card(task, now, warning_s))
            shown.append(Text(""))
        if counts[status] > per_column:
            shown.append(Text(f"… and {counts[status] - per_column} more", style="dim"))
        cells.append(Group(*shown))
    table.add_row(*cells)
    feed = Text()
    for event in list(events)[-8:][::-1]:
        at = (_moment(event.get("at")) or now).astimezone(UTC)
        feed.append(f"{at:%H:%M:%S} ", style="dim")
        feed.append(
            f"{event.get('type', ''):<20}", style=_EVENT_STYLE.get(event.get("type", ""), "")
        )
        subject = " · ".join(
            str(part) for part in (event.get("task_id"), event.get("agent_id")) if part
        )
        feed.append(f" {subject}\n")
    parts: list[RenderableType] = [title, render_figures(stats), Text(""), table]
    if events:
        parts += [Text("events", style="bold dim"), feed]
    return Group(*parts)


# ---------------------------------------------------------------- following
class ShownTasks:
    """The tasks the watcher holds: those of the board's overview (every task
    not done, the done ones completed last), kept current task by task as
    events name them. Older done tasks are only counted, as on the dashboard:
    a board's history never has to be read whole."""

    def __init__(self, overview: Json) -> None:
        self.tasks: dict[str, Json] = {t["id"]: t for t in overview["tasks"]}
        done = [t for t in self.tasks.values() if t.get("status") == "done"]
        #: Done tasks of the board not held here.
        self.hidden_done = max(0, int(overview.get("done_total", len(done))) - len(done))
        stamps = [m for t in done if (m := _moment(t.get("completed_at"))) is not None]
        # Hidden done tasks were completed at or before this (never after).
        self._cutoff = min(stamps) if stamps and self.hidden_done else None

    def changed(self, task: Json) -> None:
        """A task an event named, read again."""
        if task["id"] not in self.tasks and self._hidden(task):
            return  # an older done task (edited, say): still only counted
        self.tasks[task["id"]] = task

    def gone(self, task_id: str) -> None:
        """A task an event named no longer exists."""
        if self.tasks.pop(task_id, None) is None and self.hidden_done:
            # Named by an event but not held: most likely a hidden done task.
            self.hidden_done -= 1

    def _hidden(self, task: Json) -> bool:
        if task.get("status") != "done" or not self.hidden_done or self._cutoff is None:
            return False
        completed = _moment(task.get("completed_at"))
        return completed is not None and completed <= self._cutoff


def server_offset(tasks: Iterable[Json], response: httpx.Response | None = None) -> timedelta:
    """The server's clock minus this machine's, from a lease's expiry and seconds
    left (precise), else the response's Date header (to the second)."""
    local = datetime.now(UTC)
    for task in tasks:
        lease = task.get("lease") or {}
        expires_at = _moment(lease.get("expires_at"))
        if expires_at is not None and (lease.get("seconds_left") or 0) > 0:
            return expires_at - timedelta(seconds=lease["seconds_left"]) - local
    if response is not None and response.headers.get("date"):
        with contextlib.suppress(TypeError, ValueError):
            return parsedate_to_datetime(response.headers["date"]) - local
    return timedelta(0)


class BoardFollower(threading.Thread):
    """Reads the board's SSE stream into a queue, reconnecting with Last-Event-ID."""

    def __init__(self, call: ApiCall, board_id: str, after: int) -> None:
        super().__init__(name="tenure-watch-stream", daemon=True)
        self.call = call
        self.board_id = board_id
        self.last = after
        self.events: queue.Queue[Json] = queue.Queue()
        self.connected = False
        self.stopping = threading.Event()

    def run(self) -> None:
        import json

        while not self.stopping.is_set():
            try:
                with self.call.http.stream(
                    "GET",
                    "/api/v1/events/stream",
                    params={"board_id": self.board_id, "after": self.last},
                    headers={"Last-Event-ID": str(self.last)} if self.last else {},
                    timeout=httpx.Timeout(10.0, read=60.0),
                ) as response:
                    if response.status_code != 200:
                        self.connected = False
                        self.stopping.wait(3.0)
                        continue
                    self.connected = True
                    for line in response.iter_lines():
                        if self.stopping.is_set():
                            return
                        if line.startswith("id:"):
                            self.last = int(line[3:].strip())
                        elif line.startswith("data:"):
                            self.events.put(json.loads(line[5:].strip()))
            except (httpx.HTTPError, ValueError):
                self.connected = False
                self.stopping.wait(1.0)


def latest_events(call: ApiCall, board_id: str, keep: int = 8) -> tuple[list[Json], int]:
    """The board's latest events and the id to follow the stream from."""
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    kept: deque[Json] = deque(maxlen=keep)
    cursor = 0
    for _ in range(20):
        page = call(
            "GET",
            "/events",
            params={"board_id": board_id, "after": cursor, "since": since, "limit": 5000},
        )
        kept.extend(page["events"])
        cursor = page["last_id"]
        if len(page["events"]) < 5000:
            break
    return list(kept), cursor


def watch(
    board_id: Annotated[str, typer.Argument(help="The board's id.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
    per_column: Annotated[int, typer.Option(help="Cards shown per column.")] = 12,
    once: Annotated[bool, typer.Option("--once", help="Print the board once and exit.")] = False,
) -> None:
    """Show a board live in the terminal, following its event stream.

    Columns, lease countdowns, handoffs, fleet figures and events; Ctrl-C leaves.

    Example: tenure board watch web
    """
    from rich.live import Live

    console = Console(highlight=False)  # made now, so it measures the terminal now
    call = ApiCall(url, token)
    board = f"/boards/{board_id}"
    shown = ShownTasks(call("GET", f"{board}/overview"))
    stats: Json = call("GET", "/statistics", params={"board_id": board_id})
    offset = server_offset(shown.tasks.values())

    def picture(events: Sequence[Json], status: str) -> RenderableType:
        return render_board(
            list(shown.tasks.values()),
            stats,
            datetime.now(UTC) + offset,
            board_id=board_id,
            events=events,
            per_column=per_column,
            status_line=status,
            hidden_done=shown.hidden_done,
        )

    recent, head = latest_events(call, board_id)
    if once:
        console.print(picture(recent, ""))
        return
    feed: deque[Json] = deque(recent, maxlen=8)
    follower = BoardFollower(call, board_id, head)
    follower.start()
    dirty: set[str] = set()
    stats_due = 0.0
    try:
        with Live(picture(feed, "connecting…"), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(0.25)
                while True:
                    try:
                        event = follower.events.get_nowait()
                    except queue.Empty:
                        break
                    feed.append(event)
                    if event.get("task_id"):
                        dirty.add(event["task_id"])
                    stats_due = stats_due or time.monotonic() + 1.0
                if len(dirty) > REFETCH_ALL_OVER:
                    shown = ShownTasks(call("GET", f"{board}/overview"))
                    dirty.clear()
                for task_id in list(dirty):
                    dirty.discard(task_id)
                    answer = call.http.get(f"/api/v1{board}/tasks/{task_id}")
                    if answer.status_code == 404:
                        shown.gone(task_id)
                    elif answer.is_success:
                        shown.changed(answer.json())
                if stats_due and time.monotonic() >= stats_due:
                    stats = call("GET", "/statistics", params={"board_id": board_id})
                    stats_due = 0.0
                live.update(picture(feed, "live" if follower.connected else "reconnecting…"))
    except KeyboardInterrupt:
        pass
    finally:
        follower.stopping.set()


def register(app: typer.Typer) -> None:
    """Add `watch` to the `board` group (made by `tenure.cli_client`)."""
    from tenure.cli_client import board_app

    board_app.command("watch")(watch)
