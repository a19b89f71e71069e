"""Tenure's settings: one table, read once at start-up, passed down.

Every setting is a row of `SETTINGS`: a dotted name (`monitor.interval`), its
environment variable (`TENURE_MONITOR_INTERVAL`), a kind, a default, help text
and bounds. The same table validates the values, documents them
(`render_settings_markdown`, which writes docs/settings.md) and builds the
core's `Policy` (`Settings.policy`), so a setting cannot exist in one of those
places and be missing from another.

Precedence: an environment variable `TENURE_*` beats `tenure.toml` (the file
named by `TENURE_CONFIG`, else `./tenure.toml`), which beats the default.
Durations are seconds and accept fractions (`0.5`) or a unit (`250ms`, `90s`,
`5m`, `1h`). A wrong value raises `SettingsError`, naming the setting, its
environment variable and where the value came from; every wrong value is
reported at once.

The table itself (rows, kinds, parsing of one value) is in
`tenure.settings_table`; this module loads, validates and documents.
"""

from __future__ import annotations

import difflib
import os
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from logging import Logger
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tenure.core.errors import InvalidInput
from tenure.core.policy import (
    HOUR,
    ConservativePolicy,
    DetectorPolicy,
    DurationPolicy,
    Phase,
    Policy,
    ProgressivePolicy,
)
from tenure.settings_table import (
    SETTINGS,
    SETTINGS_BY_NAME,
    BadValue,
    Kind,
    Setting,
    display_value,
    mask_password,
    parse_value,
)

__all__ = [
    "SETTINGS",
    "SETTINGS_BY_NAME",
    "Kind",
    "Setting",
    "Settings",
    "SettingsError",
    "default_settings",
    "load_settings",
    "render_settings_markdown",
]

CONFIG_ENV = "TENURE_CONFIG"
DEFAULT_CONFIG = Path("tenure.toml")
#: Where a value came from when neither the environment nor the file set it.
DEFAULT_SOURCE = "default"


class SettingsError(InvalidInput):
    """One or more settings have a wrong value, or tenure.toml cannot be used.

    `details["errors"]` lists each problem as `{"setting", "env", "source",
    "value", "problem"}`.
    """


@dataclass(frozen=True)
class Settings:
    """The effective settings: each value and where it came from. Read-only.

    Read a value with `settings["monitor.interval"]` or one of the typed
    properties; `source(name)` says whether it came from the environment, the
    file, or the default.
    """

    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Read-only views, so a Settings passed down cannot be changed by a callee.
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))

    def __getitem__(self, name: str) -> Any:
        if name not in SETTINGS_BY_NAME:
            raise KeyError(f"no setting called {name!r}")
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(SETTINGS_BY_NAME)

    def source(self, name: str) -> str:
        """Where the value of `name` came from: `env TENURE_...`, a file path, or `default`."""
        if name not in SETTINGS_BY_NAME:
            raise KeyError(f"no setting called {name!r}")
        return self.sources.get(name, DEFAULT_SOURCE)

    def display(self, name: str) -> str:
        """The value of `name` as text for people (secrets masked)."""
        return display_value(SETTINGS_BY_NAME[name], self[name])

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Every setting as `{name: {"value", "source", "env"}}` (secrets masked)."""
        result = {}
        for name, setting in SETTINGS_BY_NAME.items():
            value = self[name]
            if setting.secret and value:
                value = "***"
            elif isinstance(value, str):
                value = mask_password(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            result[name] = {"value": value, "source": self.source(name), "env": setting.env}
        return result

    def log_effective(self, logger: Logger) -> None:
        """Log the effective values once, in one line; non-defaults say their source."""
        parts = []
        for name in SETTINGS_BY_NAME:
            source = self.source(name)
            marker = "" if source == DEFAULT_SOURCE else f" [{source}]"
            parts.append(f"{name}={self.display(name)}{marker}")
        logger.info("effective settings: %s", " ".join(parts))

    # Typed access to the server's settings.
    @property
    def host(self) -> str:
        return str(self["server.host"])

    @property
    def port(self) -> int:
        return int(self["server.port"])

    @property
    def keep_alive(self) -> int:
        return int(self["server.keep_alive"])

    @property
    def database_url(self) -> str:
        return str(self["store.database_url"])

    @property
    def monitor_interval(self) -> float:
        return float(self["monitor.interval"])

    @property
    def monitor_batch_size(self) -> int:
        return int(self["monitor.batch_size"])

    @property
    def max_tasks_per_agent(self) -> int:
        return int(self["agents.max_tasks_per_agent"])

    @property
    def allowed_worktree_roots(self) -> tuple[str, ...]:
        return tuple(self["agents.allowed_worktree_roots"])

    @property
    def worktree_template(self) -> str:
        return str(self["agents.worktree_template"])

    @property
    def git_timeout(self) -> float:
        return float(self["evidence.git_timeout"])

    @property
    def evidence_concurrency(self) -> int:
        return int(self["evidence.concurrency"])

    @property
    def webhook_urls(self) -> tuple[str, ...]:
        return tuple(self["hooks.webhook_urls"])

    @property
    def hooks_secret(self) -> str:
        return str(self["hooks.secret"])

    @property
    def hooks_max_attempts(self) -> int:
        return int(self["hooks.max_attempts"])

    @property
    def retention_days(self) -> int:
        return int(self["events.retention_days"])

    @property
    def log_format(self) -> str:
        return str(self["log.format"])

    @property
    def log_level(self) -> str:
        return str(self["log.level"])

    @property
    def claim_retry_after(self) -> float:
        return float(self["claim.retry_after"])

    def policy(self) -> Policy:
        """The core's `Policy`, every number taken from these settings."""
        return Policy(
            durations=self._durations(),
            detector=DetectorPolicy(
                kind=self["detector.policy"],
                silence_multiplier=self["detector.silence_multiplier"],
                min_stamps_for_cadence=self["detector.min_stamps_for_cadence"],
                fixed_ttl_s=self["detector.fixed_ttl"],
                phi_threshold=self["detector.phi_threshold"],
                rhythm_window=self["detector.rhythm_window"],
                min_gap_s=self["detector.min_gap"],
                min_silence_s=self["detector.min_silence"],
                max_silence_s=self["detector.max_silence"],
                finishing_factor=self["detector.finishing_factor"],
                validator_silence_s=self["detector.validator_silence"],
                suspect_window_s=self["detector.suspect_window"],
                finishing_at=self["detector.finishing_at"],
                prior_median_s=self["detector.prior_median"],
                prior_sigma=self["detector.prior_sigma"],
                prior_weight=self["detector.prior_weight"],
                adaptive_grace_s=self["detector.adaptive_grace"],
            ),
            warning_threshold_s=self["lease.warning_threshold"],
            conflict_extension_s=self["lease.conflict_extension"],
            max_conflict_extensions=self["lease.max_conflict_extensions"],
            suspect_after_close_s=self["lease.suspect_after_close"],
            validation_window_s=self["lease.validation_window"],
            max_renewals=self["escalation.max_renewals"],
            stuck_threshold_renewals=self["escalation.stuck_threshold_renewals"],
            stall_after_s=self["escalation.stall_after"],
            max_recoveries=self["recovery.max_recoveries"],
            handoff_ttl_s=self["handoff.ttl"],
            false_recovery_window_s=self["recovery.false_recovery_window"],
            branch_template=self["handoff.branch_template"],
            cadence_window=self["detector.cadence_window"],
        )

    def _durations(self) -> DurationPolicy:
        if self["lease.policy"] == "conservative":
            return ConservativePolicy(
                default_estimate_h=self["lease.conservative.default_estimate"] / HOUR,
                priority_multipliers=tuple(self["lease.conservative.priority_multipliers"].items()),
                label_multipliers=tuple(self["lease.conservative.label_multipliers"].items()),
                min_h=self["lease.conservative.min_lease"] / HOUR,
                max_h=self["lease.conservative.max_lease"] / HOUR,
                renewal_base_h=self["lease.conservative.renewal_base"] / HOUR,
                decay=self["lease.conservative.decay"],
                grace_s=self["lease.conservative.grace"],
            )

        def phase(number: int, key: str) -> Phase:
            return Phase(number, self[f"lease.{key}_lease"], self[f"lease.{key}_grace"])

        return ProgressivePolicy(
            unproven=phase(1, "phase1"),
            working=phase(2, "phase2"),
            proven=phase(3, "phase3"),
            finishing=phase(4, "phase4"),
            default=phase(0, "default"),
            proven_at=self["lease.proven_at"],
            finishing_at=self["lease.finishing_at"],
        )


def _flatten(table: Mapping[str, Any], path: Path, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        name = f"{prefix}{key}"
        if name in SETTINGS_BY_NAME:
            yield name, value
        elif isinstance(value, dict):
            yield from _flatten(value, path, f"{name}.")
        else:
            close = difflib.get_close_matches(name, SETTINGS_BY_NAME, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise SettingsError(
                f"{path}: unknown setting {name!r}{hint} (see docs/settings.md)",
                details={"errors": [{"setting": name, "source": str(path), "problem": "unknown"}]},
            )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise SettingsError(
            f"cannot read the settings file {path}: {exc.strerror or exc}",
            details={"errors": [{"source": str(path), "problem": "unreadable"}]},
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(
            f"the settings file {path} is not valid TOML: {exc}",
            details={"errors": [{"source": str(path), "problem": "invalid TOML"}]},
        ) from None


def load_settings(
    env: Mapping[str, str] | None = None, toml_path: Path | str | None = None
) -> Settings:
    """Read and validate every setting: env `TENURE_*` > tenure.toml > default.

    `env` defaults to the process environment; `toml_path` to `TENURE_CONFIG`
    or `./tenure.toml` (a missing `./tenure.toml` is fine; a missing file named
    explicitly is an error). Raises `SettingsError` listing every wrong value.
    """
    env = os.environ if env is None else env
    raw: dict[str, tuple[Any, str]] = {}
    if toml_path is None and env.get(CONFIG_ENV):
        toml_path = env[CONFIG_ENV]
    if toml_path is not None or DEFAULT_CONFIG.is_file():
        path = Path(toml_path) if toml_path is not None else DEFAULT_CONFIG
        for name, value in _flatten(_read_toml(path), path):
            raw[name] = (value, str(path))
    for setting in SETTINGS:
        if setting.env in env:
            raw[setting.name] = (env[setting.env], f"env {setting.env}")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    errors: list[dict[str, Any]] = []
    for setting in SETTINGS:
        if setting.name not in raw:
            values[setting.name] = setting.default
            continue
        given, source = raw[setting.name]
        try:
            values[setting.name] = parse_value(setting, given)
        except BadValue as problem:
            shown = "***" if setting.secret else given
            if isinstance(shown, str):
                shown = mask_password(shown)
            errors.append(
                {"setting": setting.name, "env": setting.env, "source": source,
                 "value": shown, "problem": str(problem)}
            )  # fmt: skip
        sources[setting.name] = source
    if not errors:
        errors += _cross_check(values, sources)
    if errors:
        lines = [
            f"setting {e['setting']} (env var {e['env']}), from {e['source']}: {e['problem']}"
            for e in errors
        ]
        raise SettingsError("; ".join(lines), details={"errors": errors})
    return Settings(values, sources)


# Pairs of settings where the first must not exceed the second.
_ORDERED = (
    ("lease.proven_at", "lease.finishing_at"),
    ("lease.conservative.min_lease", "lease.conservative.max_lease"),
)


def _cross_check(values: Mapping[str, Any], sources: Mapping[str, str]) -> list[dict[str, Any]]:
    errors = []
    for low, high in _ORDERED:
        if values[low] > values[high]:
            errors.append(
                {
                    "setting": low,
                    "env": SETTINGS_BY_NAME[low].env,
                    "source": sources.get(low, sources.get(high, DEFAULT_SOURCE)),
                    "value": values[low],
                    "problem": f"must not exceed {high} ({values[high]})",
                }
            )
    return errors


def default_settings() -> Settings:
    """Every setting at its default, ignoring the environment and any tenure.toml."""
    return Settings({setting.name: setting.default for setting in SETTINGS})


def render_settings_markdown() -> str:
    """The settings reference (docs/settings.md), generated from `SETTINGS`."""
    out = [
        "# Settings",
        "",
        "<!-- Generated from the table in src/tenure/settings_table.py by",
        "     `tenure config docs > docs/settings.md`; edit the table, not this page. -->",
        "",
        "Each setting comes from, in order of precedence: its environment variable;",
        "`tenure.toml` (the file named by `TENURE_CONFIG`, else `./tenure.toml` in the",
        "working directory); its default. Wrong values stop Tenure at start-up with a",
        "message naming the setting, its variable and where the value came from;",
        "unknown keys in `tenure.toml` are refused. `tenure config show` prints the",
        "effective values and the source of each.",
        "",
        "Durations are in seconds and accept fractions (`0.5`) or a unit: `250ms`,",
        "`90s`, `5m`, `1h`. Lists are TOML arrays, or comma-separated in the",
        "environment. Multipliers are TOML tables (`{ urgent = 0.5 }`), or",
        "`urgent=0.5,high=0.75` in the environment.",
        "",
        "```toml",
        "# tenure.toml",
        "[monitor]",
        "interval = 5",
        "",
        "[lease]",
        'policy = "progressive"',
        "phase1_lease = 240",
        "```",
    ]
    groups: dict[str, list[Setting]] = {}
    for setting in SETTINGS:
        groups.setdefault(setting.group, []).append(setting)
    for group, settings in groups.items():
        out += [
            "",
            f"## {group}",
            "",
            "| setting | env var | default | meaning |",
            "|---|---|---|---|",
        ]
        for setting in settings:
            out.append(
                f"| `{setting.name}` | `{setting.env}` | {_doc_default(setting)} "
                f"| {_doc_meaning(setting)} |"
            )
    return "\n".join(out) + "\n"


def _doc_default(setting: Setting) -> str:
    shown = "(empty)" if setting.secret else f"`{display_value(setting, setting.default)}`"
    if setting.kind is not Kind.SECONDS:
        return shown
    seconds = setting.default
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= 600 and seconds % size == 0:
            return f"{shown} s ({seconds / size:g} {unit})"
    return f"{shown} s"


def _doc_meaning(setting: Setting) -> str:
    notes = [setting.help]
    if setting.choices:
        notes.append("One of " + ", ".join(f"`{choice}`" for choice in setting.choices) + ".")
    if setting.minimum is not None and setting.minimum > 0:
        notes.append(f"At least {setting.minimum:g}.")
    if setting.maximum is not None:
        notes.append(f"At most {setting.maximum:g}.")
    return " ".join(notes)


if __name__ == "__main__":  # pragma: no cover - `python -m tenure.settings > docs/settings.md`
    sys.stdout.write(render_settings_markdown())
