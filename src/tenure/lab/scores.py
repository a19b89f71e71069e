"""The lab's scores: false recoveries of live agents, and detection of dead ones.

A replay ends with one `StintOutcome` per stint (what the engine did to it,
read from the event log); `score` folds any selection of outcomes into
`Scores`, so a caller can score a subset (deaths that closed their session,
stints with session blips, one profile of a pooled bench) the same way.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COLUMNS", "Scores", "StintOutcome", "percentile", "score", "scores_table"]


@dataclass(frozen=True, slots=True)
class StintOutcome:
    """One stint and what the engine did to it (times in trace seconds).

    - `recoveries`: times the engine took the task from this agent during the
      stint (for a dead stint: also after the death, until the replay ended).
    - `detected_at`: for a dead stint, its first recovery at or after the
      death; the death itself when the agent no longer held the task then
      (recovered earlier and never claimed back); None if never.
    - `closed_session`, `dropped_session`, `blips`: as in `tenure.lab.trace.Stint`
      (a death after an explicit close, after a dropped connection; blips).
    - `lost_s`: for a live stint, seconds from its first recovery that no
      claim-back by the same agent followed, to the stint's end.
    """

    agent: str
    task: str
    start: float
    end: float
    ending: str
    death: float | None = None
    closed_session: bool = False
    dropped_session: bool = False
    blips: int = 0
    recoveries: tuple[float, ...] = ()
    recovery_reasons: tuple[str, ...] = ()
    reclaims: tuple[float, ...] = ()
    detected_at: float | None = None
    lost_s: float = 0.0

    @property
    def dead(self) -> bool:
        return self.death is not None

    @property
    def falsely_recovered(self) -> bool:
        """A live stint recovered at least once."""
        return not self.dead and bool(self.recoveries)

    @property
    def recovered_for_session(self) -> bool:
        """A live stint recovered at least once because its session ended."""
        return not self.dead and "agent_disconnected" in self.recovery_reasons

    @property
    def latency_s(self) -> float | None:
        """Seconds from death to detection, for a detected dead stint."""
        if self.death is None or self.detected_at is None:
            return None
        return self.detected_at - self.death


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class Scores:
    """Issue 9's scores of one replay (or of any selection of outcomes).

    `to_dict` gives exactly the published keys; `outcomes`, `refusals`
    (errors the engine answered, by call and code) and `log` (the event
    log's rows by type) are there for deeper looks.
    """

    stints: int
    live: int
    false_recoveries: int
    false_recovery_rate: float
    revivals: int
    dead: int
    detected: int
    latency_median_s: float | None
    latency_p95_s: float | None
    latency_max_s: float | None
    undetected: int
    lost_agent_minutes: float
    outcomes: tuple[StintOutcome, ...] = field(default=(), compare=False, repr=False)
    refusals: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    log: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    KEYS = (
        "stints",
        "live",
        "false_recoveries",
        "false_recovery_rate",
        "revivals",
        "dead",
        "detected",
        "latency_median_s",
        "latency_p95_s",
        "latency_max_s",
        "undetected",
        "lost_agent_minutes",
    )

    def to_dict(self) -> dict[str, Any]:
        """The scores as one JSON-ready object, in the published key order."""
        return {key: getattr(self, key) for key in self.KEYS}


def score(
    outcomes: Iterable[StintOutcome],
    revivals: int = 0,
    refusals: dict[str, int] | None = None,
    log: dict[str, int] | None = None,
) -> Scores:
    """Fold stint outcomes into `Scores` (`revivals` counted by the caller)."""
    chosen = tuple(outcomes)
    live = [o for o in chosen if not o.dead]
    dead = [o for o in chosen if o.dead]
    false = [o for o in live if o.falsely_recovered]
    latencies = [o.latency_s for o in dead if o.latency_s is not None]
    return Scores(
        stints=len(chosen),
        live=len(live),
        false_recoveries=len(false),
        false_recovery_rate=round(len(false) / len(live), 4) if live else 0.0,
        revivals=revivals,
        dead=len(dead),
        detected=len(latencies),
        latency_median_s=_round(statistics.median(latencies) if latencies else None),
        latency_p95_s=_round(percentile(latencies, 95)),
        latency_max_s=_round(max(latencies) if latencies else None),
        undetected=len(dead) - len(latencies),
        lost_agent_minutes=round(sum(o.lost_s for o in false) / 60.0, 1),
        outcomes=chosen,
        refusals=dict(refusals or {}),
        log=dict(log or {}),
    )


#: Columns of the printed table: (heading, key of `Scores.to_dict`).
COLUMNS = (
    ("stints", "stints"),
    ("live", "live"),
    ("false", "false_recoveries"),
    ("false%", "false_recovery_rate"),
    ("revive", "revivals"),
    ("dead", "dead"),
    ("found", "detected"),
    ("lat50", "latency_median_s"),
    ("lat95", "latency_p95_s"),
    ("latmax", "latency_max_s"),
    ("missed", "undetected"),
    ("lost_min", "lost_agent_minutes"),
)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "false_recovery_rate":
        return f"{100 * value:.2f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def scores_table(rows: list[tuple[tuple[str, ...], Scores]], labels: tuple[str, ...]) -> str:
    """A plain-text table: one row per (label values, scores), headed by `labels`."""
    head = [*labels, *(heading for heading, _ in COLUMNS)]
    body = [
        [*names, *(_cell(key, scores.to_dict()[key]) for _, key in COLUMNS)]
        for names, scores in rows
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    lines = []
    for line in [head, *body]:
        cells = [
            cell.ljust(width) if i < len(labels) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
