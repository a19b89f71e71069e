"""Tenure: hands tasks to agents under leases and recovers the work of dead ones.

The public API is what `__all__` names; everything else may change between
releases.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tenure")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0+unknown"

__all__ = ["__version__"]
