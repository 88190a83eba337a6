"""What a running step can see and say: ``StepContext``.

A step receives its context by declaring a parameter annotated ``StepContext`` (its
name does not matter); code deeper down (a model adapter) finds the same object with
``current_step()``, so the critical-path priority and the deadline reach the model
server without being threaded through every call.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from critpath.orchestrator.substeps import SubSteps

__all__ = [
    "PRIORITY_EPOCH",
    "ModelChoice",
    "StepContext",
    "count_tokens",
    "current_step",
    "priority_of",
    "step_priority",
]

PRIORITY_EPOCH = 1_767_225_600.0
"""2026-01-01T00:00:00Z: priorities count milliseconds from here (small, positive ints)."""


def priority_of(due: float, offset: float) -> int:
    """The model-server priority of a step: lower is served first.

    ``due`` is the run's due time (its deadline, or its predicted finish; wall clock,
    epoch seconds) and ``offset`` the step's latest start after the run's start (the
    predicted span minus the longest path from the step to the end: 0 on the critical
    path). The priority is ``due`` in milliseconds since ``PRIORITY_EPOCH``, times
    1000, plus ``offset`` in 10 ms units (capped at 999): earliest-due-first across
    runs, least slack first within a run. Requests of one run keep the run's due time
    while they queue, so a run's later stages are not pushed behind newer runs' work,
    and nothing starves.

    Ordering by the steps' latest start times alone (plain least slack first) starves
    the short steps of a run behind newer runs' critical steps on a busy server; by due
    time first it does not (``critpath bench priority``; figures in docs/BENCHMARKS.md).
    """
    return step_priority(int((due - PRIORITY_EPOCH) * 1000) * 1000, offset)


def step_priority(due_priority: int, offset: float) -> int:
    """``priority_of`` for a run whose due-time part (``priority_of(due, 0)``) is known:
    add the step's latest start ``offset`` (seconds) in 10 ms units, capped at 999."""
    units = int(offset * 100)
    return due_priority + (0 if units < 0 else 999 if units > 999 else units)


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """A policy's choice of model for one call of a step (e.g. ``Adaptive``'s): the
    model, its predicted latency and the budget it had (ms, ``None``: unknown / none),
    and why (e.g. ``"fits"``, ``"none_fit"``)."""

    policy: str
    model: str
    predicted_ms: float | None
    budget_ms: float | None
    why: str


_CURRENT: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "critpath_step", default=None
)


class StepContext:
    """The running step's view of its run.

    - ``name``: the step's name (``"read[3]"`` for item 3 of a map step);
    - ``priority``: an integer for the model server, lower runs first (vLLM's
      ``priority``); see ``priority_of``: runs due first go first, and within a run the
      steps with least slack (the critical path) go first;
    - ``slack``: predicted seconds the step could be late without delaying the run;
    - ``deadline``: the run's deadline as an event-loop time, or ``None``;
    - ``attempt``: 1 for the first try, 2 for the first retry...;
    - ``speculative``: the step runs before it is known to be needed (a predicted
      branch); it may be cancelled;
    - ``needed``: for an item of an ``each`` step, the results of the items it needs,
      by key;
    - ``tokens``: model tokens generated for this step so far (backends count them);
    - ``latest_finish``: the latest event-loop time the step can finish and the run still
      meet its deadline (by the predicted durations of the steps after it), or ``None``;
    - ``model_choices``: the models policies chose for this step's calls (in the report).
    - ``substeps``: the step's own parts (model turns, tool calls) as it records them
      (``critpath.orchestrator.substeps``); they appear in the run's report, timeline
      and trace.
    """

    __slots__ = (
        "_defer_spans",
        "_emit",
        "_origin",
        "_partial",
        "_substeps",
        "attempt",
        "deadline",
        "item",
        "latest_finish",
        "model_choices",
        "name",
        "needed",
        "priority",
        "resource",
        "run_id",
        "slack",
        "speculative",
        "step",
        "tokens",
    )

    def __init__(
        self,
        step: str,
        name: str,
        item: int | None,
        run_id: str,
        priority: int,
        slack: float,
        deadline: float | None,
        resource: str | None,
        emit: Callable[[str, Any, bool], None],
        *,
        origin: float = 0.0,
        defer_spans: bool = False,
    ) -> None:
        self.step = step
        self.name = name
        self.item = item
        self.run_id = run_id
        self.priority = priority
        self.slack = slack
        self.deadline = deadline
        self.resource = resource
        self.attempt = 1
        self.speculative = False
        self.needed: dict[Any, Any] = {}
        self.tokens = 0
        self.latest_finish: float | None = None
        self.model_choices: list[ModelChoice] = []
        self._emit = emit
        self._partial: Any = _NONE
        self._origin = origin
        self._defer_spans = defer_spans
        self._substeps: SubSteps | None = None

    @property
    def substeps(self) -> SubSteps:
        """This step's sub-steps (made on first use), timed from the run's start."""
        if self._substeps is None:
            self._substeps = SubSteps(self._origin, defer_spans=self._defer_spans)
        return self._substeps

    @property
    def has_substeps(self) -> bool:
        return self._substeps is not None and len(self._substeps) > 0

    def remaining(self) -> float | None:
        """Seconds left before the run's deadline (may be negative), or ``None``."""
        if self.deadline is None:
            return None
        return self.deadline - asyncio.get_running_loop().time()

    def emit(self, value: Any) -> None:
        """Stream a partial output (e.g. a token) to the run's event listeners."""
        self._emit(self.name, value, False)

    def set_partial(self, value: Any) -> None:
        """Offer ``value`` as this step's best result so far.

        If the run hits its deadline before the step finishes, the run can still end
        with this value (status ``"partial"``) instead of an error. Also emitted.
        """
        self._partial = value
        self._emit(self.name, value, True)

    @property
    def has_partial(self) -> bool:
        return self._partial is not _NONE

    @property
    def partial(self) -> Any:
        return None if self._partial is _NONE else self._partial

    def __repr__(self) -> str:
        return f"StepContext({self.name!r}, priority={self.priority}, slack={self.slack:.4f})"


def count_tokens(n: int) -> None:
    """Charge ``n`` generated model tokens to the running step (backends call this for
    every chunk they produce, so a cancelled step's waste is known)."""
    step = _CURRENT.get()
    if step is not None:
        step.tokens += n


class _None:
    __slots__ = ()


_NONE = _None()


def current_step() -> StepContext | None:
    """The context of the step running in this task, or ``None`` outside a step."""
    return _CURRENT.get()


def _set_current(ctx: StepContext) -> None:
    _CURRENT.set(ctx)
