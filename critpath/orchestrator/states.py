"""The states a run, a step and a speculation go through (enums, not strings).

``StepStatus`` and ``RunStatus`` are ``StrEnum``s: they compare equal to their string
values (``report.status == "ok"``) and serialise as them in saved reports, so JSON
written by older versions loads unchanged.
"""

from __future__ import annotations

from enum import Enum, StrEnum

__all__ = ["NodeState", "RunStatus", "SpeculationState", "StepKind", "StepStatus"]


class StepKind(StrEnum):
    """How a step runs (see ``Graph``'s decorators of the same names)."""

    STEP = "step"
    MAP = "map"
    """Once per item of another step's value, concurrently."""
    ROUTE = "route"
    """Chooses which of its branches run."""
    STREAM = "stream"
    """An async generator whose items are available as they come."""
    EACH = "each"
    """Once per item of a stream, as each arrives and the items it needs are done."""


class StepStatus(StrEnum):
    """What became of one step (or one item of a map/each step)."""

    QUEUED = "queued"
    """Ready, waiting for a concurrency slot."""
    RUNNING = "running"
    OK = "ok"
    FALLBACK = "fallback"
    """It failed and its ``fallback`` value was used."""
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    """Its branch was not chosen, or a required input was skipped."""
    NOT_RUN = "not_run"
    """The run ended before it started."""
    STUCK = "stuck"
    """It ignored its cancellation past the run's grace period (see ``Graph.start``)."""


class RunStatus(StrEnum):
    """How a run ended (``RUNNING`` until it has)."""

    RUNNING = "running"
    OK = "ok"
    PARTIAL = "partial"
    """The deadline passed but every output had a value or a partial result."""
    DEADLINE = "deadline"
    CANCELLED = "cancelled"
    FAILED = "failed"


class NodeState(Enum):
    """A step's place in the runtime's dependency bookkeeping."""

    WAITING = 0
    """Some dependency has not resolved yet."""
    ACTIVE = 1
    """Its units are queued, running, or (an ``each`` step) waiting for stream items."""
    DONE = 2
    SKIPPED = 3


class SpeculationState(Enum):
    """A branch started before its router decided (``None`` when not speculated)."""

    RUNNING = "running"
    """Started early; the router has not decided."""
    FINISHED = "finished"
    """Finished before the router decided; its value is held."""
    FAILED = "failed"
    """Failed before the router decided; runs again for real if chosen."""
    COMMITTED = "committed"
    """The router chose it while it was still running: it completes the step."""
