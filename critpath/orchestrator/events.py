"""Events a run streams while it goes (``Run.events()``).

Times ``t`` are seconds since the run started. Every event names its ``step``
(``"*"`` for the run's own events).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "RouteChosen",
    "SpeculationCancelled",
    "SpeculationCommitted",
    "SpeculationStarted",
    "StepItem",
    "RunEvent",
    "RunFinished",
    "StepCancelled",
    "StepFailed",
    "StepFinished",
    "StepPartial",
    "StepQueued",
    "StepSkipped",
    "StepStarted",
]


@dataclass(frozen=True, slots=True)
class RunEvent:
    step: str
    t: float


@dataclass(frozen=True, slots=True)
class StepQueued(RunEvent):
    """Ready, but waiting for a concurrency slot (least slack goes first)."""

    slack: float


@dataclass(frozen=True, slots=True)
class StepStarted(RunEvent):
    priority: int
    slack: float


@dataclass(frozen=True, slots=True)
class StepFinished(RunEvent):
    value: Any
    duration: float
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class StepFailed(RunEvent):
    error: BaseException


@dataclass(frozen=True, slots=True)
class StepCancelled(RunEvent):
    reason: str


@dataclass(frozen=True, slots=True)
class StepSkipped(RunEvent):
    reason: str


@dataclass(frozen=True, slots=True)
class StepPartial(RunEvent):
    """A partial output (``StepContext.emit``) or a best-so-far result (``set_partial``)."""

    value: Any
    best: bool


@dataclass(frozen=True, slots=True)
class RouteChosen(RunEvent):
    branches: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RunFinished(RunEvent):
    status: str


@dataclass(frozen=True, slots=True)
class StepItem(RunEvent):
    """A ``stream`` step yielded its ``index``-th item."""

    index: int
    item: Any


@dataclass(frozen=True, slots=True)
class SpeculationStarted(RunEvent):
    """A predicted branch started before its router decided (``probability``: the
    predictor's)."""

    router: str
    probability: float


@dataclass(frozen=True, slots=True)
class SpeculationCommitted(RunEvent):
    """The router chose the speculated branch: its work counts (``saved``: seconds it
    started before the router finished)."""

    saved: float


@dataclass(frozen=True, slots=True)
class SpeculationCancelled(RunEvent):
    """The router did not choose the speculated branch: it was cancelled (or its
    finished result dropped and undone)."""
