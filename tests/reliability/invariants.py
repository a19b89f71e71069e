"""The invariant checker: reads the event log and the final state of a
database after a run, and holds them against what the agents were told.

Invariants (each violation is a line in the returned list):

1. No task ever had two live leases at once: ordered by epoch, each lease
   ended no later than the next began, and only the last may be live; the
   lease.created/reclaimed and lease.recovered/released events of each epoch
   agree with the rows and do not overlap either.
2. Epochs only grow per task, in the order the log recorded them.
3. Every task is completed exactly once.
4. No acknowledged report is lost: each one shows as a lease.renewed event
   of its epoch with its progress, and in that lease's highest progress.
5. No stale write is accepted: every write event of an epoch falls inside
   that lease's life and was sent by its holder; every refused late write
   left a lease.stale_refused event and its progress appears nowhere.
6. (checked by the callers, from `recoveries`) dead agents' tasks were
   recovered on time.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from tests.reliability.agents import LATE_PROGRESS, Ledger

Row = dict[str, Any]
#: Events that write a lease without creating or ending it.
WRITE_EVENTS = {"lease.renewed", "lease.extended", "lease.revived", "lease.escalated",
                "lease.stalled", "lease.suspect"}  # fmt: skip
START_EVENTS = {"lease.created", "lease.reclaimed"}
END_EVENTS = {"lease.recovered", "lease.released"}


@dataclass
class Snapshot:
    """The final state of one board."""

    tasks: list[Row]
    leases: list[Row]
    events: list[Row]


def _time(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _clean(row: Row) -> Row:
    out = dict(row)
    for key in ("assigned_at", "ended_at", "recover_after", "expires_at", "at", "completed_at"):
        if key in out:
            out[key] = _time(out[key])
    if isinstance(out.get("data"), str):
        out["data"] = json.loads(out["data"])
    return out


QUERIES = (
    "SELECT id, status, epoch, completed_at, recovery_count FROM tasks WHERE board_id = {p}",
    "SELECT task_id, epoch, agent_id, assigned_at, expires_at, recover_after, ended_at, "
    "end_reason, progress, max_progress FROM leases WHERE board_id = {p}",
    "SELECT id, type, task_id, agent_id, epoch, at, data FROM events WHERE board_id = {p} "
    "ORDER BY id",
)


def load_sqlite(path: Path, board: str) -> Snapshot:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        parts = [
            [_clean(dict(r)) for r in conn.execute(q.format(p="?"), (board,))] for q in QUERIES
        ]
    return Snapshot(*parts)


def load_postgres(dsn: str, board: str) -> Snapshot:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        parts = [[_clean(r) for r in conn.execute(q.format(p="%s"), (board,))] for q in QUERIES]
    return Snapshot(*parts)


def check(snapshot: Snapshot, ledger: Ledger) -> list[str]:
    """Every violated invariant, as text (empty: all hold)."""
    problems: list[str] = []
    leases: dict[str, list[Row]] = defaultdict(list)
    for lease in snapshot.leases:
        leases[lease["task_id"]].append(lease)
    by_epoch = {(x["task_id"], x["epoch"]): x for x in snapshot.leases}
    events: dict[str, list[Row]] = defaultdict(list)
    for event in snapshot.events:
        if event["task_id"] is not None:
            events[event["task_id"]].append(event)

    # 1. One live lease at a time, by the rows.
    for task, rows in leases.items():
        rows.sort(key=lambda x: x["epoch"])
        for before, after in itertools.pairwise(rows):
            if before["ended_at"] is None:
                problems.append(
                    f"{task}: epoch {before['epoch']} is live but {after['epoch']} exists"
                )
            elif before["ended_at"] > after["assigned_at"]:
                problems.append(
                    f"{task}: epoch {before['epoch']} ended at {before['ended_at']}, after epoch "
                    f"{after['epoch']} began at {after['assigned_at']}: {before} {after}"
                )
            if after["assigned_at"] < before["assigned_at"]:
                problems.append(f"{task}: epoch {after['epoch']} began before {before['epoch']}")

    # 1 and 2 by the log: starts and ends per epoch, epochs never going back.
    for task, log in events.items():
        starts: dict[int, Row] = {}
        ends: dict[int, Row] = {}
        highest = 0
        for event in log:
            kind, epoch = event["type"], event["epoch"]
            if kind in START_EVENTS:
                if epoch in starts:
                    problems.append(f"{task}: epoch {epoch} started twice")
                if epoch <= highest:
                    problems.append(f"{task}: epoch {epoch} started after epoch {highest}")
                starts[epoch] = event
                highest = max(highest, epoch)
            elif kind in END_EVENTS:
                if epoch in ends:
                    problems.append(f"{task}: epoch {epoch} ended twice")
                ends[epoch] = event
            elif kind in WRITE_EVENTS and epoch is not None and epoch < highest:
                problems.append(f"{task}: {kind} of epoch {epoch} after epoch {highest} began")
        ordered = sorted(starts)
        for before, after in itertools.pairwise(ordered):
            end = ends.get(before)
            if end is None:
                problems.append(f"{task}: epoch {before} never ended, yet {after} began")
            elif end["at"] > starts[after]["at"] or end["id"] > starts[after]["id"]:
                problems.append(
                    f"{task}: epoch {before} ended after epoch {after} began: {end} {starts[after]}"
                )
        for epoch, start in starts.items():
            row = by_epoch.get((task, epoch))
            if row is None:
                problems.append(f"{task}: epoch {epoch} has events but no lease row")
                continue
            if start["at"] != row["assigned_at"]:
                problems.append(f"{task}: epoch {epoch} row and event disagree on its start")
            end = ends.get(epoch)
            if (end is None) != (row["ended_at"] is None) or (
                end is not None and end["at"] != row["ended_at"]
            ):
                problems.append(f"{task}: epoch {epoch} row and events disagree on its end")
        for epoch in {x["epoch"] for x in leases.get(task, [])} - set(starts):
            problems.append(f"{task}: lease epoch {epoch} has no start event")

    # 3. Completed exactly once.
    for task in snapshot.tasks:
        done = [
            e for e in events.get(task["id"], [])
            if e["type"] == "lease.released" and e["data"].get("reason") == "completed"
        ]  # fmt: skip
        if task["status"] != "done" or len(done) != 1 or task["completed_at"] is None:
            problems.append(f"{task['id']}: status {task['status']}, completed {len(done)} times")

    # 4. Acknowledged reports are kept.
    renewed = {
        (e["task_id"], e["epoch"], e["data"].get("progress"))
        for e in snapshot.events
        if e["type"] == "lease.renewed"
    }
    completed_by = {
        (e["task_id"], e["agent_id"], e["epoch"])
        for e in snapshot.events
        if e["type"] == "lease.released" and e["data"].get("reason") == "completed"
    }
    for ack in ledger.acks:
        row = by_epoch.get((ack.task, ack.epoch))
        if ack.completed:
            if not any(
                (ack.task, ack.agent, epoch) in completed_by
                for epoch in range(ack.epoch, ack.epoch + 2)
            ):
                problems.append(f"acknowledged completion lost: {ack}")
            continue
        if row is None or row["agent_id"] != ack.agent:
            problems.append(f"acknowledged report on a lease that is not the agent's: {ack}")
        elif (ack.task, ack.epoch, ack.progress) not in renewed:
            problems.append(f"acknowledged report has no lease.renewed event: {ack}")
        elif row["max_progress"] < ack.progress:
            problems.append(f"acknowledged progress lost (max {row['max_progress']}): {ack}")

    # 5. No stale write accepted.
    for event in snapshot.events:
        if event["type"] not in WRITE_EVENTS or event["epoch"] is None:
            continue
        row = by_epoch.get((event["task_id"], event["epoch"]))
        if row is None or event["agent_id"] != row["agent_id"]:
            problems.append(f"write event {event['id']} names no lease of its agent")
            continue
        if event["at"] < row["assigned_at"] or (
            row["ended_at"] is not None and event["at"] > row["ended_at"]
        ):
            problems.append(
                f"write event {event['id']} outside its lease's life: {event} {dict(row)}"
            )
        if event["type"] == "lease.renewed":
            sent = (event["agent_id"], event["task_id"], event["data"].get("progress"))
            if sent not in ledger.sent:
                problems.append(
                    f"lease.renewed {event['id']} carries a report its holder never sent"
                )
    refused = {
        (e["task_id"], e["agent_id"], e["epoch"])
        for e in snapshot.events
        if e["type"] == "lease.stale_refused"
    }
    acked_late = {(a.task, a.agent) for a in ledger.acks if a.progress == LATE_PROGRESS}
    for refusal in ledger.refusals:
        if (refusal.task, refusal.agent, refusal.epoch) not in refused:
            problems.append(f"a refused late write left no lease.stale_refused event: {refusal}")
        row = by_epoch.get((refusal.task, refusal.epoch))
        if row is None or row["ended_at"] is None:
            problems.append(f"a late write was refused while its lease lived: {refusal}")
        if (refusal.task, refusal.agent) not in acked_late and any(
            task == refusal.task and progress == LATE_PROGRESS for task, _, progress in renewed
        ):
            problems.append(f"a refused late write shows as applied: {refusal}")
    return problems


def recoveries(snapshot: Snapshot) -> dict[tuple[str, int], Row]:
    """The lease.recovered event of each (task, epoch)."""
    return {
        (e["task_id"], e["epoch"]): e for e in snapshot.events if e["type"] == "lease.recovered"
    }


def lease_rows(snapshot: Snapshot) -> dict[tuple[str, int], Row]:
    return {(x["task_id"], x["epoch"]): x for x in snapshot.leases}
