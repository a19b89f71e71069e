"""docs/security.md names, for each threat, the tests that cover it: every
test it names must exist, so the table cannot drift from the suite."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
#: `tests/x.py::test_name`, or `::test_name` continuing the last file named.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`")


def test_every_test_the_security_table_names_exists() -> None:
    named: list[tuple[str, str | None]] = []
    for line in DOC.read_text().splitlines():
        if not line.startswith("| "):
            continue
        current: str | None = None
        for path, name in REFERENCE.findall(line):
            current = path or current
            if current and (path or name):
                named.append((current, name or None))
    assert len(named) > 40
    for path, name in named:
        source = ROOT / path
        assert source.exists(), f"docs/security.md names a missing file: {path}"
        if name:
            assert re.search(rf"def {name}\(", source.read_text()), f"no {path}::{name}"
