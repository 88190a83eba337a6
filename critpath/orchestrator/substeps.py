"""Sub-steps: the parts of one running step (an agent's model turns and tool calls).

A step that does several timed things of its own — an agent loop calling a model,
then tools, then the model again — records them as sub-steps, with the dependencies
among them, so the run's report, its timeline and its OpenTelemetry trace show them
and the critical path runs through them::

    @graph.step
    async def agent(question: str, ctx: StepContext) -> str:
        with ctx.substeps.record("plan", SubStepKind.MODEL):
            ...
        with ctx.substeps.record("search", SubStepKind.TOOL, after=["plan"]):
            ...

``SubSteps`` owns one step's records; ``begin``/``end`` bracket a sub-step whose end
comes from elsewhere (another task), ``record`` is the context manager. Times are
seconds since the run's start (or, standalone, since the ``SubSteps`` was made).
Outside a run, ``SubSteps.standalone()`` records the same way (the agent loop returns
it), and ``analysis()`` gives the span and critical path among the sub-steps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from critpath import telemetry
from critpath.errors import ConfigError
from critpath.orchestrator.analysis import PathAnalysis, analyse
from critpath.orchestrator.states import StepStatus

__all__ = ["SubStepKind", "SubStepRecord", "SubSteps"]


class SubStepKind(StrEnum):
    """What a sub-step is."""

    MODEL = "model"
    """A model call (a turn of an agent, or a part of one)."""
    TOOL = "tool"
    """A tool call."""
    OTHER = "other"


@dataclass(slots=True)
class SubStepRecord:
    """One sub-step: its name (unique within its step), what it is, what it waited for."""

    name: str
    kind: SubStepKind
    deps: tuple[str, ...]
    start: float
    end: float | None = None
    status: StepStatus = StepStatus.RUNNING
    error: str | None = None
    speculative: bool = False
    """Started before it was certain to be needed (e.g. a tool started while the
    model was still streaming its message)."""
    span: Any = None

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


class SubSteps:
    """The sub-steps of one step (see the module docstring).

    ``origin``: the event-loop time that times count from; ``defer_spans``: leave each
    sub-step's span open until the run ends (the runtime then marks it critical or
    not); otherwise a span ends with its sub-step.
    """

    def __init__(self, origin: float, *, defer_spans: bool = False) -> None:
        self.origin = origin
        self.defer_spans = defer_spans
        self._records: dict[str, SubStepRecord] = {}

    @classmethod
    def standalone(cls) -> SubSteps:
        """Sub-steps outside a run: times from now."""
        return cls(asyncio.get_running_loop().time())

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self.origin

    @property
    def records(self) -> list[SubStepRecord]:
        """Every sub-step, in the order they began."""
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    def get(self, name: str) -> SubStepRecord | None:
        return self._records.get(name)

    def begin(
        self,
        name: str,
        kind: SubStepKind,
        *,
        after: Sequence[str] = (),
        speculative: bool = False,
        at: float | None = None,
    ) -> SubStepRecord:
        """Start a sub-step now (or ``at``, an earlier time of this record's clock);
        ``after`` names the sub-steps it depended on."""
        if name in self._records:
            raise ConfigError(f"a sub-step named {name!r} was already recorded in this step")
        unknown = [d for d in after if d not in self._records]
        if unknown:
            raise ConfigError(f"sub-step {name!r} depends on unknown sub-steps {unknown}")
        start = self.now() if at is None else at
        rec = SubStepRecord(name, SubStepKind(kind), tuple(after), start, speculative=speculative)
        if telemetry.tracing_enabled():
            rec.span = telemetry.tracer().start_span(
                f"critpath.substep {name}",
                attributes={"critpath.substep": name, "critpath.kind": rec.kind.value,
                            "critpath.speculative": speculative},
            )  # fmt: skip
        self._records[name] = rec
        return rec

    def end(
        self, rec: SubStepRecord, status: StepStatus = StepStatus.OK, error: str | None = None
    ) -> None:
        """End ``rec`` now (once: a second end is ignored)."""
        if rec.end is not None:
            return
        rec.end = self.now()
        rec.status = status
        rec.error = error
        if rec.span is not None and not self.defer_spans:
            rec.span.set_attribute("critpath.status", status.value)
            if error:
                rec.span.set_attribute("critpath.error", error)
            rec.span.end()
            rec.span = None

    @contextmanager
    def record(
        self, name: str, kind: SubStepKind, *, after: Sequence[str] = ()
    ) -> Iterator[SubStepRecord]:
        """A sub-step for the ``with`` block: failed if it raises, cancelled if cancelled."""
        rec = self.begin(name, kind, after=after)
        try:
            yield rec
        except asyncio.CancelledError:
            self.end(rec, StepStatus.CANCELLED)
            raise
        except BaseException as exc:
            self.end(rec, StepStatus.FAILED, f"{type(exc).__name__}: {exc}")
            raise
        self.end(rec)

    def close_open(self, status: StepStatus = StepStatus.CANCELLED) -> None:
        """End every sub-step still open (its step ended under it)."""
        for rec in self._records.values():
            if rec.end is None:
                self.end(rec, status)

    def analysis(self) -> PathAnalysis:
        """Span, critical path and slack among the sub-steps that ran."""
        ran = {n: r for n, r in self._records.items() if r.end is not None}
        preds = {n: [d for d in r.deps if d in ran] for n, r in ran.items()}
        durations = {n: r.end - r.start for n, r in ran.items() if r.end is not None}
        return analyse(preds, durations)
