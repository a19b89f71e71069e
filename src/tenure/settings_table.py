"""The settings table: every setting Tenure reads, its kind, default and bounds.

`tenure.settings` loads, validates and documents the values from this table;
this module holds the rows and how one raw value (text from the environment,
or TOML data) becomes a checked value. The lease engine's numbers default to
the core's own dataclass defaults (SPEC's numbers), so no number is restated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from tenure.core.policy import (
    DETECTOR_KINDS,
    DURATION_POLICIES,
    HOUR,
    ConservativePolicy,
    DetectorPolicy,
    Phase,
    Policy,
    ProgressivePolicy,
)

ENV_PREFIX = "TENURE_"


class Kind(StrEnum):
    """What a setting holds, and so how it is parsed from text and TOML."""

    SECONDS = "seconds"
    NUMBER = "number"
    INTEGER = "integer"
    TEXT = "text"
    CHOICE = "choice"
    LIST = "list"
    MULTIPLIERS = "multipliers"


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the settings table."""

    name: str
    kind: Kind
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    secret: bool = False
    #: Extra validation of a parsed value; returns a problem, or None when fine.
    check: Callable[[Any], str | None] | None = None

    @property
    def env(self) -> str:
        """The environment variable that sets this setting."""
        return ENV_PREFIX + self.name.upper().replace(".", "_")

    @property
    def group(self) -> str:
        """The first part of the name: the section of tenure.toml and of the docs."""
        return self.name.split(".", 1)[0]


_P = Policy()
_PROG = ProgressivePolicy()
_CONS = ConservativePolicy()
_DET = DetectorPolicy()


#: The least a duration that must be positive may be (durations accept fractions).
_POSITIVE = 0.001


def _s(name: str, default: float, help: str, minimum: float = 0.0) -> Setting:
    return Setting(name, Kind.SECONDS, default, help, minimum=minimum)


def _i(name: str, default: int, help: str, minimum: int = 0, maximum: int | None = None) -> Setting:
    return Setting(name, Kind.INTEGER, default, help, minimum=minimum, maximum=maximum)


def _url_list(value: Any) -> str | None:
    bad = [url for url in value if not re.match(r"https?://[^\s/]+", url)]
    return f"not http(s) URLs: {', '.join(bad)}" if bad else None


def _database_url(value: Any) -> str | None:
    if re.match(r"(sqlite|postgres|postgresql)://", value):
        return None
    return "must start with sqlite://, postgresql:// or postgres://"


def _template(*fields: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        try:
            value.format(**dict.fromkeys(fields, "x"))
        except (KeyError, IndexError, ValueError) as exc:
            return f"bad template (it may use {', '.join('{' + f + '}' for f in fields)}): {exc}"
        return None

    return check


def _phase(number: int, phase: Phase, label: str) -> list[Setting]:
    return [
        _s(
            f"lease.phase{number}_lease",
            phase.lease_s,
            f"Progressive policy, {label}: lease.",
            _POSITIVE,
        ),
        _s(f"lease.phase{number}_grace", phase.grace_s, f"Progressive policy, {label}: grace."),
    ]


# fmt: off
SETTINGS: tuple[Setting, ...] = (
    # The duration policy and its numbers.
    Setting(
        "lease.policy", Kind.CHOICE, _P.durations.name,
        "Duration policy: `progressive` (short while unproven, longest near the end) "
        "or `conservative` (from the task's estimate, priority and labels).",
        choices=tuple(DURATION_POLICIES),
    ),
    *_phase(1, _PROG.unproven, "phase 1 (unproven: no progress report yet)"),
    *_phase(2, _PROG.working, "phase 2 (working: exactly one report)"),
    *_phase(3, _PROG.proven, "phase 3 (proven: progress at least `lease.proven_at`)"),
    *_phase(4, _PROG.finishing, "phase 4 (finishing: progress at least `lease.finishing_at`)"),
    _s("lease.default_lease", _PROG.default.lease_s,
       "Progressive policy, no phase matched: lease.", _POSITIVE),
    _s("lease.default_grace", _PROG.default.grace_s,
       "Progressive policy, no phase matched: grace."),
    _i("lease.proven_at", _PROG.proven_at,
       "Progress % from which a lease is in phase 3.", 0, 100),
    _i("lease.finishing_at", _PROG.finishing_at,
       "Progress % from which a lease is in phase 4.", 0, 100),
    _s("lease.conservative.default_estimate", _CONS.default_estimate_h * HOUR,
       "Conservative policy: the estimate of a task that has none.", _POSITIVE),
    Setting("lease.conservative.priority_multipliers", Kind.MULTIPLIERS,
            MappingProxyType(dict(_CONS.priority_multipliers)),
            "Conservative policy: first lease multiplier by task priority.", minimum=0.0),
    Setting("lease.conservative.label_multipliers", Kind.MULTIPLIERS,
            MappingProxyType(dict(_CONS.label_multipliers)),
            "Conservative policy: first lease multiplier by the first matching label.",
            minimum=0.0),
    _s("lease.conservative.min_lease", _CONS.min_h * HOUR,
       "Conservative policy: shortest lease.", _POSITIVE),
    _s("lease.conservative.max_lease", _CONS.max_h * HOUR,
       "Conservative policy: longest lease.", _POSITIVE),
    _s("lease.conservative.renewal_base", _CONS.renewal_base_h * HOUR,
       "Conservative policy: a renewal's base duration, before progress, decay and clamp.",
       _POSITIVE),
    Setting("lease.conservative.decay", Kind.NUMBER, _CONS.decay,
            "Conservative policy: each renewal is multiplied by decay^(renewals before it).",
            minimum=0.0, maximum=1.0),
    _s("lease.conservative.grace", _CONS.grace_s, "Conservative policy: grace after expiry."),
    # Lease rules common to both policies.
    _s("lease.warning_threshold", _P.warning_threshold_s,
       "A lease with less than this left is shown as `expiring_soon`."),
    _s("lease.conflict_extension", _P.conflict_extension_s,
       "A merge conflict in the worktree extends the lease to now + this."),
    _i("lease.max_conflict_extensions", _P.max_conflict_extensions,
       "Merge-conflict extensions allowed per lease."),
    _s("lease.suspect_after_close", _P.suspect_after_close_s,
       "After the agent's last session closes, recover no later than this (`spec`, "
       "`fixed`: closes and dropped connections alike; `adaptive`: explicit closes)."),
    _s("lease.validation_window", _P.validation_window_s,
       "Completion awaiting validation keeps the lease until now + this."),
    # The detector.
    Setting(
        "detector.policy", Kind.CHOICE, _DET.kind,
        "When the monitor may recover: `adaptive` (phi accrual over each holder's own "
        "rhythm, aware of the task's phase; docs/detection.md), `spec` (evidence and "
        "cadence), `seed` (the seed's behaviour, as a baseline) or `fixed` (one TTL, "
        "as a plain queue).",
        choices=DETECTOR_KINDS,
    ),
    Setting("detector.silence_multiplier", Kind.NUMBER, _DET.silence_multiplier,
            "Recover when silence exceeds the median progress interval x this.", minimum=0.0),
    _i("detector.min_stamps_for_cadence", _DET.min_stamps_for_cadence,
       "Progress reports needed before the cadence check applies (fewer: recover).", 1),
    _s("detector.fixed_ttl", _DET.fixed_ttl_s, "The `fixed` detector's one TTL.", _POSITIVE),
    Setting("detector.phi_threshold", Kind.NUMBER, _DET.phi_threshold,
            "`adaptive`: recover when a silence this long had probability 10^-phi under the "
            "holder's rhythm (higher: fewer false recoveries, slower detection).",
            minimum=0.1),
    _i("detector.rhythm_window", _DET.rhythm_window,
       "`adaptive`: gaps between the holder's calls kept to learn its rhythm.", 1),
    _s("detector.min_gap", _DET.min_gap_s,
       "`adaptive`: gaps between calls shorter than this are one burst, not learned."),
    _s("detector.min_silence", _DET.min_silence_s,
       "`adaptive`: the least silence ever allowed before a recovery.", _POSITIVE),
    _s("detector.max_silence", _DET.max_silence_s,
       "`adaptive`: the most silence ever allowed before a recovery.", _POSITIVE),
    Setting("detector.finishing_factor", Kind.NUMBER, _DET.finishing_factor,
            "`adaptive`: the allowance is multiplied by this from `detector.finishing_at` % on "
            "(reports thin out near the end).", minimum=_POSITIVE),
    _i("detector.finishing_at", _DET.finishing_at,
       "`adaptive`: progress (%) from which `detector.finishing_factor` applies.", 0, 100),
    _s("detector.prior_median", _DET.prior_median_s,
       "`adaptive`: the gap between calls assumed before a holder's own are known.", _POSITIVE),
    Setting("detector.prior_sigma", Kind.NUMBER, _DET.prior_sigma,
            "`adaptive`: the spread (of log gaps) assumed before a holder's own are known.",
            minimum=0.0),
    Setting("detector.prior_weight", Kind.NUMBER, _DET.prior_weight,
            "`adaptive`: how many of the holder's own gaps the prior counts as.",
            minimum=_POSITIVE),
    _s("detector.adaptive_grace", _DET.adaptive_grace_s,
       "`adaptive`: the part of the allowance shown as grace after the lease's expiry."),
    _s("detector.validator_silence", _DET.validator_silence_s,
       "`adaptive`: the least silence allowed at 100 % (validators run silently)."),
    _s("detector.suspect_window", _DET.suspect_window_s,
       "`adaptive`: after the connection of the agent's last session drops (no DELETE), "
       "recover no later than this (explicit closes: `lease.suspect_after_close`).",
       _POSITIVE),
    _i("detector.cadence_window", _P.cadence_window,
       "Progress timestamps kept for the cadence median.", 2),
    # Escalation, recovery, handoff.
    _i("escalation.max_renewals", _P.max_renewals,
       "Renewals of one lease after which it is escalated (once).", 1),
    _i("escalation.stuck_threshold_renewals", _P.stuck_threshold_renewals,
       "Renewals without progress after which a lease is flagged `stalled`.", 1),
    _s("escalation.stall_after", _P.stall_after_s,
       "Time without progress after which a signalling lease is flagged `stalled`.",
       _POSITIVE),
    _i("recovery.max_recoveries", _P.max_recoveries,
       "The recovery that would be number N dead-letters the task instead.", 1),
    _s("recovery.false_recovery_window", _P.false_recovery_window_s,
       "A late report this soon after a recovery counts as `false_recovery.lost`."),
    _s("handoff.ttl", _P.handoff_ttl_s, "A handoff is shown to agents for this long.", _POSITIVE),
    Setting("handoff.branch_template", Kind.TEXT, _P.branch_template,
            "The previous holder's branch when it reported none.",
            check=_template("agent_id")),
    # The server.
    Setting("server.host", Kind.TEXT, "127.0.0.1", "Address the server listens on."),
    _i("server.port", 8321, "Port the server listens on (0: any free port).", 0, 65535),
    _i("server.keep_alive", 75,
       "Seconds an idle HTTP connection is kept open: longer than clients keep theirs "
       "(httpx: 5 s), so a client never reuses a connection the server is closing.", 1),
    Setting("store.database_url", Kind.TEXT, "sqlite:///./tenure.db",
            "The store: `sqlite:///path` (embedded) or `postgresql://...`.",
            check=_database_url),
    Setting("store.migrate", Kind.CHOICE, "embedded",
            "Migrations `tenure serve` applies at start: `embedded` (SQLite only; a "
            "PostgreSQL database that needs any is refused until `tenure db migrate`), "
            "`always`, or `never`.",
            choices=("embedded", "always", "never")),
    _s("monitor.interval", 10.0, "Time between two passes of the monitor.", _POSITIVE),
    _i("monitor.batch_size", 200, "Due leases the monitor handles per batch.", 1),
    _i("agents.max_tasks_per_agent", 1, "Tasks one agent may hold at once.", 1),
    Setting("agents.allowed_worktree_roots", Kind.LIST, (),
            "Directories under which an agent may name its own worktree (empty: an "
            "agent-named worktree is refused, and only the path the template derives "
            "under the parent of the board's `project_root` is probed)."),
    Setting("agents.worktree_template", Kind.TEXT, "{project_root}/../worktrees/{agent_id}",
            "An agent's worktree when it names none.",
            check=_template("project_root", "agent_id")),
    _s("evidence.git_timeout", 10.0, "Timeout of one git probe of a worktree.", _POSITIVE),
    _i("evidence.concurrency", 8, "Worktree probes run at once.", 1),
    Setting("hooks.webhook_urls", Kind.LIST, (),
            "URLs that receive each hook event as a POST (empty: none).", check=_url_list),
    Setting("hooks.secret", Kind.TEXT, "", "Key that signs webhook bodies (HMAC-SHA256).",
            secret=True),
    _i("hooks.max_attempts", 8, "Deliveries tried per hook event before it is dropped.", 1),
    _i("events.retention_days", 30,
       "Events and comments older than this are pruned, except those of tasks not yet "
       "done (0: never)."),
    _i("events.prune_batch_size", 500, "Rows the pruner deletes per transaction.", 1),
    _s("events.prune_interval", 3600.0, "Time between two pruning rounds of the server.",
       _POSITIVE),
    Setting("log.format", Kind.CHOICE, "text", "`text` for people, `json` for JSON lines.",
            choices=("text", "json")),
    Setting("log.level", Kind.CHOICE, "INFO", "Least severe log level written.",
            choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    _s("claim.retry_after", 5.0, "Retry delay suggested when no task is ready."),
)
# fmt: on

SETTINGS_BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": HOUR}
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h)?\s*")


class BadValue(Exception):
    """A value that does not fit its setting; `tenure.settings` reports it as a SettingsError."""


def _number(raw: Any, what: str) -> float:
    if isinstance(raw, bool):
        raise BadValue(f"expected {what}, got a boolean")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise BadValue(f"expected {what}, got {raw!r}") from None
    else:
        raise BadValue(f"expected {what}, got {type(raw).__name__}")
    if not math.isfinite(value):
        raise BadValue(f"expected a finite {what}, got {raw!r}")
    return value


def _seconds(raw: Any) -> float:
    if isinstance(raw, str):
        match = _DURATION.fullmatch(raw)
        if match is None:
            raise BadValue(f"expected seconds (e.g. 10, 0.5, 250ms, 5m, 1h), got {raw!r}")
        return float(match[1]) * _UNITS[match[2] or "s"]
    return _number(raw, "seconds")


def _integer(raw: Any) -> int:
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            raise BadValue(f"expected a whole number, got {raw!r}") from None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise BadValue(f"expected a whole number, got {raw!r}")
    return raw


def _text_list(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    raise BadValue(f"expected a list of strings, got {raw!r}")


def _multipliers(raw: Any) -> Mapping[str, float]:
    if isinstance(raw, str):
        pairs: list[tuple[str, Any]] = []
        for item in filter(None, (part.strip() for part in raw.split(","))):
            key, sep, number = item.partition("=")
            if not sep or not key.strip():
                raise BadValue(f"expected name=number pairs separated by commas, got {raw!r}")
            pairs.append((key.strip(), number))
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        raise BadValue(f"expected a table of name = number, got {raw!r}")
    return MappingProxyType(
        {key.lower(): _number(number, f"a number for {key!r}") for key, number in pairs}
    )


def parse_value(setting: Setting, raw: Any) -> Any:
    """The value of `setting` given as `raw` (text from the environment, or TOML data)."""
    kind = setting.kind
    value: Any
    if kind is Kind.SECONDS:
        value = _seconds(raw)
    elif kind is Kind.NUMBER:
        value = _number(raw, "a number")
    elif kind is Kind.INTEGER:
        value = _integer(raw)
    elif kind is Kind.LIST:
        value = _text_list(raw)
    elif kind is Kind.MULTIPLIERS:
        value = _multipliers(raw)
    elif not isinstance(raw, str):
        raise BadValue(f"expected a string, got {raw!r}")
    elif kind is Kind.CHOICE:
        value = _choose(setting, raw)
    else:
        value = raw
    _check_bounds(setting, value)
    return value


def _choose(setting: Setting, raw: str) -> str:
    for choice in setting.choices:
        if raw.strip().lower() == choice.lower():
            return choice
    raise BadValue(f"expected one of {', '.join(setting.choices)}, got {raw!r}")


def _check_bounds(setting: Setting, value: Any) -> None:
    numbers = value.values() if isinstance(value, Mapping) else [value]
    if setting.kind in (Kind.SECONDS, Kind.NUMBER, Kind.INTEGER, Kind.MULTIPLIERS):
        for number in numbers:
            if setting.minimum is not None and number < setting.minimum:
                raise BadValue(f"{number:g} is below the minimum {setting.minimum:g}")
            if setting.maximum is not None and number > setting.maximum:
                raise BadValue(f"{number:g} is above the maximum {setting.maximum:g}")
    if setting.check is not None and (problem := setting.check(value)) is not None:
        raise BadValue(problem)


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def mask_password(text: str) -> str:
    """A URL with its password replaced by `***` (database URLs carry one)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^:/@]*:)[^@/]*@", r"\1***@", text)


def display_value(setting: Setting, value: Any) -> str:
    if setting.secret and value:
        return "***"
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, tuple):
        return ",".join(value) if value else "[]"
    if isinstance(value, Mapping):
        return ",".join(f"{key}={_number_text(number)}" for key, number in value.items())
    return mask_password(str(value)) if value != "" else '""'
