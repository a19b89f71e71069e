"""Settings: precedence, parsing, validation, the core's Policy, and the docs page."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

from tenure.core.errors import InvalidInput
from tenure.core.policy import ConservativePolicy, Policy, ProgressivePolicy
from tenure.settings import (
    SETTINGS,
    SETTINGS_BY_NAME,
    Kind,
    SettingsError,
    default_settings,
    load_settings,
    render_settings_markdown,
)

ROOT = Path(__file__).resolve().parent.parent


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenure.toml"
    path.write_text(text)
    return path


def _error(env: dict[str, str] | None = None, toml: Path | None = None) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        load_settings(env=env or {}, toml_path=toml)
    return caught.value


# Precedence


def test_env_beats_toml_beats_default(tmp_path: Path) -> None:
    toml = _toml(tmp_path, "[monitor]\ninterval = 3\nbatch_size = 50\n")
    settings = load_settings(env={"TENURE_MONITOR_INTERVAL": "7"}, toml_path=toml)
    assert settings["monitor.interval"] == 7.0
    assert settings.source("monitor.interval") == "env TENURE_MONITOR_INTERVAL"
    assert settings["monitor.batch_size"] == 50
    assert settings.source("monitor.batch_size") == str(toml)
    assert settings["server.port"] == 8321
    assert settings.source("server.port") == "default"


def test_the_file_comes_from_tenure_config(tmp_path: Path) -> None:
    toml = _toml(tmp_path, '[server]\nhost = "0.0.0.0"\n')
    settings = load_settings(env={"TENURE_CONFIG": str(toml)})
    assert settings.host == "0.0.0.0"


def test_a_tenure_toml_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _toml(tmp_path, "[server]\nport = 9000\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(env={}).port == 9000


def test_without_any_file_every_value_is_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings == default_settings()
    assert all(settings.source(name) == "default" for name in settings)


def test_a_missing_file_named_explicitly_is_an_error(tmp_path: Path) -> None:
    error = _error(toml=tmp_path / "nope.toml")
    assert "nope.toml" in error.message


def test_a_file_that_is_not_toml_is_an_error(tmp_path: Path) -> None:
    error = _error(toml=_toml(tmp_path, "monitor = [\n"))
    assert "not valid TOML" in error.message


def test_unknown_keys_in_the_file_are_refused_by_name(tmp_path: Path) -> None:
    error = _error(toml=_toml(tmp_path, "[monitor]\nintervall = 3\n"))
    assert "monitor.intervall" in error.message
    assert "did you mean monitor.interval" in error.message


def test_unknown_top_level_keys_are_refused(tmp_path: Path) -> None:
    error = _error(toml=_toml(tmp_path, "colour = 'blue'\n"))
    assert "'colour'" in error.message


def test_dotted_keys_in_the_file_work(tmp_path: Path) -> None:
    toml = _toml(tmp_path, "monitor.interval = 2\n[lease.conservative]\ndecay = 0.5\n")
    settings = load_settings(env={}, toml_path=toml)
    assert settings["monitor.interval"] == 2.0
    assert settings["lease.conservative.decay"] == 0.5


# Values


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0.5", 0.5), ("10", 10.0), (" 2.25 ", 2.25), ("250ms", 0.25), ("90s", 90.0),
     ("5m", 300.0), ("1.5h", 5400.0), ("1e1", 10.0)],
)  # fmt: skip
def test_durations_accept_fractions_and_units(text: str, seconds: float) -> None:
    settings = load_settings(env={"TENURE_MONITOR_INTERVAL": text}, toml_path=None)
    assert settings.monitor_interval == pytest.approx(seconds)


def test_durations_in_the_file_accept_fractions(tmp_path: Path) -> None:
    toml = _toml(tmp_path, "[lease]\nphase1_lease = 0.75\nphase1_grace = '1m'\n")
    policy = load_settings(env={}, toml_path=toml).policy()
    assert isinstance(policy.durations, ProgressivePolicy)
    assert policy.durations.unproven.lease_s == 0.75
    assert policy.durations.unproven.grace_s == 60.0


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"TENURE_MONITOR_INTERVAL": "soon"}, "expected seconds"),
        ({"TENURE_MONITOR_INTERVAL": "0"}, "below the minimum"),
        ({"TENURE_MONITOR_INTERVAL": "nan"}, "expected seconds"),
        ({"TENURE_SERVER_PORT": "80.5"}, "whole number"),
        ({"TENURE_SERVER_PORT": "70000"}, "above the maximum"),
        ({"TENURE_DETECTOR_SILENCE_MULTIPLIER": "inf"}, "finite"),
        ({"TENURE_DETECTOR_SILENCE_MULTIPLIER": "x"}, "expected a number"),
        ({"TENURE_LOG_FORMAT": "xml"}, "one of text, json"),
        ({"TENURE_STORE_DATABASE_URL": "mysql://x"}, "sqlite://"),
        ({"TENURE_HOOKS_WEBHOOK_URLS": "ftp://x"}, "not http(s) URLs"),
        ({"TENURE_HANDOFF_BRANCH_TEMPLATE": "t/{agent}"}, "bad template"),
        ({"TENURE_HANDOFF_BRANCH_TEMPLATE": "t/{"}, "bad template"),
        ({"TENURE_LEASE_CONSERVATIVE_PRIORITY_MULTIPLIERS": "urgent"}, "name=number"),
        ({"TENURE_LEASE_CONSERVATIVE_PRIORITY_MULTIPLIERS": "urgent=-1"}, "below the minimum"),
        ({"TENURE_LEASE_PROVEN_AT": "80"}, "must not exceed lease.finishing_at"),
    ],
)
def test_a_wrong_value_names_the_setting_its_env_var_and_source(
    env: dict[str, str], problem: str
) -> None:
    error = _error(env=env)
    (variable,) = env
    name = next(s.name for s in SETTINGS if s.env == variable)
    assert isinstance(error, InvalidInput)
    assert error.code == "invalid_input"
    assert f"setting {name} (env var {variable})" in error.message
    assert f"from env {variable}" in error.message
    assert problem in error.message
    assert error.details["errors"][0]["setting"] == name


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("[monitor]\ninterval = true\n", "got a boolean"),
        ("[monitor]\ninterval = [1]\n", "got list"),
        ("[server]\nport = 1.5\n", "whole number"),
        ("[server]\nport = '80'\n", None),
        ("[server]\nhost = 1\n", "expected a string"),
        ("[agents]\nallowed_worktree_roots = [1]\n", "list of strings"),
        ("[lease.conservative]\nlabel_multipliers = 3\n", "table of name = number"),
        ("[lease.conservative]\nlabel_multipliers = { epic = 'big' }\n", "for 'epic'"),
    ],
)
def test_wrong_values_in_the_file_name_the_file(
    tmp_path: Path, toml: str, problem: str | None
) -> None:
    path = _toml(tmp_path, toml)
    if problem is None:  # text that parses as the right kind is accepted from the file too
        assert load_settings(env={}, toml_path=path).port == 80
        return
    error = _error(toml=path)
    assert f"from {path}" in error.message
    assert "(env var TENURE_" in error.message
    assert problem in error.message


def test_every_wrong_value_is_reported_at_once() -> None:
    error = _error(env={"TENURE_MONITOR_INTERVAL": "x", "TENURE_SERVER_PORT": "y"})
    assert [e["setting"] for e in error.details["errors"]] == ["server.port", "monitor.interval"]


def test_a_secret_never_appears_in_an_error_or_the_output() -> None:
    settings = load_settings(env={"TENURE_HOOKS_SECRET": "hunter2"})
    assert settings.hooks_secret == "hunter2"
    assert settings.display("hooks.secret") == "***"
    assert settings.as_dict()["hooks.secret"]["value"] == "***"


def test_a_database_password_is_masked_for_display() -> None:
    url = "postgresql://tenure:s3cret@db:5432/tenure"
    settings = load_settings(env={"TENURE_STORE_DATABASE_URL": url})
    assert settings.database_url == url
    assert settings.display("store.database_url") == "postgresql://tenure:***@db:5432/tenure"
    assert "s3cret" not in str(settings.as_dict())
    error = _error(env={"TENURE_STORE_DATABASE_URL": "mysql://u:s3cret@h/db"})
    assert "s3cret" not in str(error.details)


def test_lists_choices_and_multipliers_from_the_environment() -> None:
    settings = load_settings(
        env={
            "TENURE_AGENTS_ALLOWED_WORKTREE_ROOTS": "/srv/a, /srv/b,",
            "TENURE_LOG_LEVEL": "debug",
            "TENURE_LEASE_CONSERVATIVE_LABEL_MULTIPLIERS": "Simple=0.25, epic=4",
            "TENURE_HOOKS_WEBHOOK_URLS": "",
        }
    )
    assert settings.allowed_worktree_roots == ("/srv/a", "/srv/b")
    assert settings.log_level == "DEBUG"
    assert dict(settings["lease.conservative.label_multipliers"]) == {"simple": 0.25, "epic": 4.0}
    assert settings.webhook_urls == ()


def test_lists_from_the_file(tmp_path: Path) -> None:
    toml = _toml(tmp_path, '[hooks]\nwebhook_urls = ["https://hooks.example/tenure"]\n')
    assert load_settings(env={}, toml_path=toml).webhook_urls == ("https://hooks.example/tenure",)


def test_settings_are_read_only() -> None:
    settings = default_settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.values = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.values["monitor.interval"] = 1  # type: ignore[index]


def test_unknown_names_are_a_key_error() -> None:
    settings = default_settings()
    with pytest.raises(KeyError):
        settings["monitor.intervall"]
    with pytest.raises(KeyError):
        settings.source("monitor.intervall")


def test_the_typed_properties_read_the_table() -> None:
    settings = default_settings()
    expected: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 8321,
        "database_url": "sqlite:///./tenure.db",
        "monitor_interval": 10.0,
        "monitor_batch_size": 200,
        "max_tasks_per_agent": 1,
        "allowed_worktree_roots": (),
        "worktree_template": "{project_root}/../worktrees/{agent_id}",
        "git_timeout": 10.0,
        "evidence_concurrency": 8,
        "webhook_urls": (),
        "hooks_secret": "",
        "hooks_max_attempts": 8,
        "retention_days": 30,
        "log_format": "text",
        "log_level": "INFO",
        "claim_retry_after": 5.0,
    }
    assert {name: getattr(settings, name) for name in expected} == expected


# The core's Policy


def test_defaults_build_the_cores_default_policy() -> None:
    assert default_settings().policy() == Policy()


def test_conservative_defaults_build_the_cores_conservative_policy() -> None:
    policy = load_settings(env={"TENURE_LEASE_POLICY": "conservative"}).policy()
    assert policy == Policy(durations=ConservativePolicy())


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """Every number, string and table of a (nested) dataclass, by path."""
    if not dataclasses.is_dataclass(value):
        return {prefix: value}
    result: dict[str, Any] = {}
    for item in dataclasses.fields(value):
        if item.name in ("name", "number"):  # fixed by the policy's kind, not settable
            continue
        result |= _leaves(getattr(value, item.name), f"{prefix}.{item.name}")
    return result


def _changed_value(kind: Kind, default: Any) -> str:
    """A valid value different from `default`, as environment text."""
    if kind is Kind.MULTIPLIERS:
        return ",".join(f"{key}={value / 2}" for key, value in default.items())
    if kind is Kind.TEXT:
        return "other/{agent_id}"
    if kind is Kind.CHOICE:
        return "seed"
    if kind is Kind.NUMBER:
        return str(default / 2)
    return str(default - 1) if default > 2 else str(default + 1)


@pytest.mark.parametrize("duration_policy", ["progressive", "conservative"])
def test_every_policy_number_is_a_setting(duration_policy: str) -> None:
    """Changing every policy setting changes every field of the core's Policy."""
    defaults = load_settings(env={"TENURE_LEASE_POLICY": duration_policy}).policy()
    env = {"TENURE_LEASE_POLICY": duration_policy}
    policy_groups = {"lease", "detector", "escalation", "recovery", "handoff"}
    for setting in SETTINGS:
        if setting.group in policy_groups and setting.name != "lease.policy":
            env[setting.env] = _changed_value(setting.kind, setting.default)
    changed = load_settings(env=env).policy()
    before, after = _leaves(defaults), _leaves(changed)
    assert before.keys() == after.keys()
    unchanged = [path for path in before if before[path] == after[path]]
    assert unchanged == []


def test_the_policy_uses_fractions_and_converts_hours() -> None:
    settings = load_settings(
        env={
            "TENURE_LEASE_POLICY": "conservative",
            "TENURE_LEASE_CONSERVATIVE_MIN_LEASE": "15m",
            "TENURE_DETECTOR_SILENCE_MULTIPLIER": "2.5",
            "TENURE_LEASE_WARNING_THRESHOLD": "0.5",
        }
    )
    policy = settings.policy()
    assert isinstance(policy.durations, ConservativePolicy)
    assert policy.durations.min_h == 0.25
    assert policy.detector.silence_multiplier == 2.5
    assert policy.warning_threshold_s == 0.5


# Logging and the docs page


def test_effective_values_are_logged_once_with_their_sources(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = load_settings(env={"TENURE_MONITOR_INTERVAL": "0.5", "TENURE_HOOKS_SECRET": "k"})
    logger = logging.getLogger("tenure.test_settings")
    with caplog.at_level(logging.INFO, logger=logger.name):
        settings.log_effective(logger)
    (record,) = caplog.records
    line = record.getMessage()
    assert "monitor.interval=0.5 [env TENURE_MONITOR_INTERVAL]" in line
    assert "server.port=8321 " in line
    assert "hooks.secret=*** [env TENURE_HOOKS_SECRET]" in line
    assert all(f"{name}=" in line for name in SETTINGS_BY_NAME)


def test_every_setting_is_documented_with_its_env_var_and_default() -> None:
    page = render_settings_markdown()
    for setting in SETTINGS:
        row = next(line for line in page.splitlines() if line.startswith(f"| `{setting.name}` |"))
        assert f"`{setting.env}`" in row
        assert setting.help in row


def test_docs_settings_md_is_up_to_date() -> None:
    page = ROOT / "docs" / "settings.md"
    assert page.exists() and page.read_text() == render_settings_markdown(), (
        "docs/settings.md is stale: regenerate it with `tenure config docs > docs/settings.md`"
        " (or `python -m tenure.settings > docs/settings.md`)"
    )


def test_every_setting_has_help_and_a_valid_default() -> None:
    for setting in SETTINGS:
        assert setting.help.strip(), setting.name
        assert setting.env == "TENURE_" + setting.name.upper().replace(".", "_")
    # The defaults themselves pass validation: loading them back changes nothing.
    env = {s.env: default_settings().display(s.name) for s in SETTINGS if not s.secret}
    env = {key: ("" if value in ("[]", '""') else value) for key, value in env.items()}
    assert load_settings(env=env).policy() == Policy()
