"""Other frameworks a benchmark measures critpath against (LangGraph, the ``openai``
client): optional, and reported as skipped when they are not installed.

>>> installed("json"), installed("no_such_peer_framework")
(True, False)
>>> skipped("not installed")
{'skipped': 'not installed'}
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

__all__ = ["NOT_INSTALLED", "installed", "skipped", "version"]

NOT_INSTALLED = "not installed"


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def skipped(reason: str) -> dict[str, str]:
    """How a result says a peer was not measured, and why."""
    return {"skipped": reason}
