"""Policies by name, for the lab's `--policy` and the detection bench.

One registry maps a name to a factory of `tenure.core.policy.Policy`. It
starts with every detector kind the core knows (`spec`, `seed`, `fixed`,
and any kind later added to `tenure.core.policy.DETECTOR_KINDS`), each with
SPEC's other numbers. `register_policy` adds another (a new detector, or a
tuned variant). A name may carry overrides after a colon, for trade-off
curves: `spec:silence_multiplier=3` or `fixed:fixed_ttl_s=120`; a key is a
field of `DetectorPolicy` first, else of `Policy`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from tenure.core.errors import InvalidInput
from tenure.core.policy import DETECTOR_KINDS, Policy, detector_policy

__all__ = ["lab_policy", "policy_names", "register_policy"]

PolicyFactory = Callable[[], Policy]

_REGISTERED: dict[str, PolicyFactory] = {}


def register_policy(name: str, factory: PolicyFactory, *, replace: bool = False) -> None:
    """Make `factory()` available as `name` (refused if taken, unless `replace`)."""
    if not name or ":" in name or "," in name:
        raise InvalidInput(f"bad policy name {name!r}", details={"field": "policy"})
    if name in _REGISTERED and not replace:
        raise InvalidInput(f"policy {name!r} is already registered", details={"field": "policy"})
    _REGISTERED[name] = factory


def _detector_factory(kind: str) -> PolicyFactory:
    return lambda: Policy(detector=detector_policy(kind))


def _factories() -> dict[str, PolicyFactory]:
    # The core's kinds are read at each call so a kind added later shows up.
    found: dict[str, PolicyFactory] = {kind: _detector_factory(kind) for kind in DETECTOR_KINDS}
    found.update(_REGISTERED)
    return found


def policy_names() -> list[str]:
    """Every name `lab_policy` accepts (without overrides), core kinds first."""
    return list(_factories())


def _convert(raw: str, current: Any, key: str) -> Any:
    try:
        if isinstance(current, bool):
            if raw.lower() not in {"true", "false", "1", "0"}:
                raise ValueError(raw)
            return raw.lower() in {"true", "1"}
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
    except ValueError:
        raise InvalidInput(
            f"policy override {key}={raw!r} is not a {type(current).__name__}",
            details={"field": "policy", "key": key},
        ) from None
    if isinstance(current, str):
        return raw
    raise InvalidInput(f"policy field {key!r} cannot be set from the command line")


def lab_policy(spec: str) -> Policy:
    """The policy named `spec`, with its `:key=value,...` overrides applied."""
    name, _, overrides = spec.partition(":")
    factories = _factories()
    if name not in factories:
        raise InvalidInput(
            f"unknown policy {name!r}; choose one of {', '.join(factories)}",
            details={"field": "policy", "value": name},
        )
    policy = factories[name]()
    for item in filter(None, (part.strip() for part in overrides.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise InvalidInput(f"policy override {item!r} is not key=value")
        detector_fields = {f.name for f in dataclasses.fields(policy.detector)}
        if key in detector_fields and key != "kind":
            value = _convert(raw.strip(), getattr(policy.detector, key), key)
            policy = dataclasses.replace(
                policy, detector=dataclasses.replace(policy.detector, **{key: value})
            )
        elif key in {f.name for f in dataclasses.fields(policy)} and key != "detector":
            value = _convert(raw.strip(), getattr(policy, key), key)
            policy = dataclasses.replace(policy, **{key: value})
        else:
            raise InvalidInput(
                f"policy {name!r} has no field {key!r}",
                details={"field": "policy", "key": key},
            )
    return policy
