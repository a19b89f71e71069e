"""`evolve`: `dataclasses.replace` for the core's frozen, slotted records, faster.

Every write of a lease is a copy of it with a few fields changed, and a
renewal makes two. `dataclasses.replace` rebuilds the keyword arguments of
every field and runs `__init__`, which sets each slot through a frozen
class's guard: about 15 us for a lease, a tenth of a renewal's Python. The
copier made here for each class sets the slots directly, then the changes:
about 3 us. Like the `__init__` that `dataclasses` writes, it is generated
source, since a loop over the fields costs twice as much.

Only classes `replace` would copy field for field qualify: frozen, slotted,
every field set by `__init__` and no `__post_init__`. Others go to
`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

_Copier = Callable[[Any, dict[str, Any]], Any]
_COPIERS: dict[type, _Copier] = {}


def evolve(record: R, /, **changes: Any) -> R:
    """`record` with `changes`, as `dataclasses.replace(record, **changes)`."""
    copier = _COPIERS.get(type(record))
    if copier is None:
        copier = _COPIERS[type(record)] = _copier_for(type(record))
    result: R = copier(record, changes)
    return result


def _copier_for(cls: type) -> _Copier:
    params = getattr(cls, "__dataclass_params__", None)
    fields = dataclasses.fields(cls)
    if (
        params is None
        or not params.frozen
        or "__slots__" not in cls.__dict__
        or hasattr(cls, "__post_init__")
        or not all(f.init for f in fields)
    ):
        return _replace
    names = [f.name for f in fields]
    lines = ["def copy(record, changes):"]
    lines.append("    if not NAMES.issuperset(changes):")
    lines.append("        unknown(changes)")
    lines.append("    new = new_(cls)")
    lines += [f"    set_{name}(new, record.{name})" for name in names]
    lines.append("    for name, value in changes.items():")
    lines.append("        set_(new, name, value)")
    lines.append("    return new")
    scope: dict[str, Any] = {
        "NAMES": frozenset(names),
        "new_": object.__new__,
        "cls": cls,
        "set_": object.__setattr__,
        "unknown": _unknown(cls, frozenset(names)),
        **{f"set_{name}": getattr(cls, name).__set__ for name in names},
    }
    exec("\n".join(lines), scope)
    copier: _Copier = scope["copy"]
    return copier


def _replace(record: Any, changes: dict[str, Any]) -> Any:
    return dataclasses.replace(record, **changes)


def _unknown(cls: type, names: frozenset[str]) -> Callable[[dict[str, Any]], None]:
    def raise_for(changes: dict[str, Any]) -> None:
        extra = ", ".join(sorted(set(changes) - names))
        raise TypeError(f"{cls.__name__} has no field(s) {extra}")

    return raise_for
