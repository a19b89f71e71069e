"""`evolve` copies a record exactly as `dataclasses.replace` would."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace

import pytest
from corekit import T0, make_task

from tenure.core import Policy, create
from tenure.core.decisions import Change, ChangeKind
from tenure.core.evolve import evolve
from tenure.core.model import Lease, LeaseFlag


def _lease() -> Lease:
    """A lease as the core makes one, with a stamp and a flag set."""
    lease = create(make_task(), "a1", T0, Policy()).lease
    assert lease is not None
    return replace(lease, progress_stamps=(T0,), flags=frozenset({LeaseFlag.STALLED}))


def test_a_copy_equals_what_replace_gives_and_shares_the_unchanged_fields() -> None:
    lease = _lease()
    for changes in ({}, {"version": 3, "progress": 40}, {"message": "x", "flags": frozenset()}):
        copy = evolve(lease, **changes)
        assert copy == replace(lease, **changes)
        assert copy is not lease
        assert copy.progress_stamps is lease.progress_stamps  # shallow, as replace
    task = make_task()
    assert evolve(task, title="t") == replace(task, title="t")
    change = Change(ChangeKind.RENEWED, lease=lease)
    assert evolve(change, expected_version=1) == replace(change, expected_version=1)


def test_a_copy_stays_frozen_and_an_unknown_field_is_refused() -> None:
    copy = evolve(_lease(), progress=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.progress = 6  # type: ignore[misc]
    with pytest.raises(TypeError, match="no field"):
        evolve(_lease(), progres=5)


@dataclass(frozen=True)
class _Checked:
    value: int

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("negative")


def test_a_class_that_checks_itself_is_copied_through_its_init() -> None:
    assert evolve(_Checked(1), value=2) == _Checked(2)
    with pytest.raises(ValueError):
        evolve(_Checked(1), value=-1)
