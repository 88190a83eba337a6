"""The run report: per step timings, slack and the critical path; per run the totals.

Vocabulary (see DESIGN.md): **work** is the sum of step durations; **span** the
length of the longest dependency chain under the measured durations (the critical
path); **parallelism** = work / span; **efficiency** = span / makespan (1.0 means the
run took no longer than its dependencies forced). A report prints as text
(``str(report)``), saves as JSON and draws as a timeline (``critpath.orchestrator.timeline``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from critpath.orchestrator.analysis import analyse
from critpath.orchestrator.context import ModelChoice
from critpath.orchestrator.states import RunStatus, StepStatus

if TYPE_CHECKING:
    from critpath.orchestrator.runtime import Run

__all__ = ["RunReport", "StepRecord", "StepReport", "StepStatus", "build_report"]



@dataclass(slots=True)
class StepRecord:
    """What the runtime writes down about one step (or one item of a map step) as it runs."""

    name: str
    step: str
    item: int | None
    kind: str
    status: StepStatus = StepStatus.QUEUED
    ready: float | None = None
    released_by: str | None = None
    """The record whose end made this unit ready (its last dependency to finish; the
    stream producer's for an item that arrived; ``None`` if ready at the run's start)."""
    slot_from: str | None = None
    """When it queued for a concurrency slot: the record whose slot release started it
    (``"<other run>"`` when a step of another run sharing the limiter freed it)."""
    start: float | None = None
    end: float | None = None
    priority: int | None = None
    predicted_slack: float | None = None
    resource: str | None = None
    attempts: int = 1
    error: str | None = None
    span: Any = None
    ctx: Any = None
    speculative: bool = False


class StepReport(BaseModel):
    """One step (or map item) of a finished run. Times in seconds since the run started."""

    model_config = ConfigDict(frozen=True)

    name: str
    step: str
    item: int | None = None
    kind: str
    status: StepStatus
    deps: list[str]
    ready: float | None = None
    released_by: str | None = None
    slot_from: str | None = None
    start: float | None = None
    end: float | None = None
    duration: float | None = None
    queued: float | None = None
    slack: float | None = None
    critical: bool = False
    priority: int | None = None
    predicted_slack: float | None = None
    resource: str | None = None
    attempts: int = 1
    error: str | None = None
    speculative: bool = False
    model_choices: list[ModelChoice] = []
    """The models policies chose for the step's calls (``Adaptive``), in call order."""


class RunReport(BaseModel):
    """A finished run: totals, the critical path, and every step."""

    model_config = ConfigDict(frozen=True)

    graph: str
    run_id: str
    started_at: float
    status: RunStatus
    makespan: float
    work: float
    span: float
    critical_path: list[str]
    parallelism: float
    efficiency: float
    predicted_span: float
    steps: list[StepReport]
    speculation: dict[str, float | int] | None = None
    """Speculative branches: started, committed, cancelled, refused, waste_s,
    waste_tokens, saved_s (``None`` when the run speculated nothing)."""

    def step(self, name: str) -> StepReport:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_text(self) -> str:
        ms = 1000.0
        lines = [
            f"run {self.run_id} of graph {self.graph!r}: {self.status} "
            f"in {self.makespan * ms:.1f} ms",
            f"work {self.work * ms:.1f} ms  span {self.span * ms:.1f} ms  "
            f"parallelism {self.parallelism:.2f}  efficiency {self.efficiency:.3f}",
            "critical path: " + (" -> ".join(self.critical_path) or "(none)"),
            "",
        ]
        width = max([len(s.name) for s in self.steps] + [4]) + 2
        head = (
            f"  {'step':<{width}}{'status':<10}{'start ms':>10}{'end ms':>10}{'dur ms':>10}"
            f"{'slack ms':>10}{'queued ms':>10}{'lst ms':>8}  resource"
        )
        lines.append(head)

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v * ms:.1f}"

        def lst(s: StepReport) -> str:  # latest start time predicted at start, from run start
            if s.start is None or s.predicted_slack is None:
                return "-"
            return f"{(s.start + s.predicted_slack) * ms:.0f}"

        for s in sorted(self.steps, key=lambda s: (s.start is None, s.start or 0.0, s.name)):
            mark = "* " if s.critical else "  "
            lines.append(
                f"{mark}{s.name:<{width}}{s.status:<10}{f(s.start):>10}{f(s.end):>10}"
                f"{f(s.duration):>10}{f(s.slack):>10}{f(s.queued):>10}"
                f"{lst(s):>8}  {s.resource or ''}"
            )
        lines.append(
            "(* on the critical path; lst: the latest start time predicted when the step"
            " started, ms from the run's start: what orders its priority)"
        )
        for s in self.steps:
            for c in s.model_choices:
                lines.append(
                    f"model choice in {s.name}: {c.policy} -> {c.model} ({c.why}; predicted "
                    f"{f(None if c.predicted_ms is None else c.predicted_ms / ms)} ms, "
                    f"budget {f(None if c.budget_ms is None else c.budget_ms / ms)} ms)"
                )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def save_json(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        return p

    @classmethod
    def load_json(cls, path: str | Path) -> RunReport:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))

    def to_svg(self) -> str:
        from critpath.orchestrator.timeline import render_svg

        return render_svg(self)

    def save_html(self, path: str | Path) -> Path:
        """Write a self-contained HTML timeline (Gantt chart, critical path highlighted)."""
        from critpath.orchestrator.timeline import render_html

        p = Path(path)
        p.write_text(render_html(self), encoding="utf-8")
        return p


def build_report(run: Run) -> RunReport:
    """Compute the report of a finished run from its step records and its graph."""
    plan = run._plan
    nodes = run._nodes
    units: dict[str, list[StepRecord]] = {n: node.records for n, node in nodes.items()}
    preds: dict[str, list[str]] = {}
    durations: dict[str, float] = {}
    for n in plan.order:
        dep_units = [r.name for p in plan.preds[n] for r in units[p]]
        router = plan.router_of.get(n)
        tracker = run.streams.tracker_of(n)
        producer = nodes[n].step.over if nodes[n].step.kind == "each" else None
        for rec in units[n]:
            preds[rec.name] = dep_units
            if producer is not None and tracker is not None and rec.item is not None:
                # An item waits for its own arrival (counted as queueing) and for the
                # items it needs, not for the whole stream.
                others = [r.name for p in plan.preds[n] if p != producer for r in units[p]]
                needed = [f"{n}[{tracker.index_of(k)}]" for k in tracker.needs_of(rec.item)]
                preds[rec.name] = others + needed
            if rec.speculative and router is not None:  # it did not wait for its router
                preds[rec.name] = [u for p in plan.preds[n] if p != router for u in
                                   (r.name for r in units[p])]  # fmt: skip
            if rec.start is not None and rec.end is not None:
                durations[rec.name] = rec.end - rec.start
    pa = analyse(preds, durations)
    ran = {"ok", "fallback", "failed", "cancelled", "running"}
    status_of = {r.name: r.status for recs in units.values() for r in recs}
    critical = [n for n in pa.critical_path if status_of.get(n) in ran]
    on_path = set(critical)
    steps: list[StepReport] = []
    for n in plan.order:
        for r in units[n]:
            d = durations.get(r.name)
            steps.append(
                StepReport(
                    name=r.name, step=r.step, item=r.item, kind=r.kind, status=r.status,
                    deps=preds[r.name], ready=r.ready, released_by=r.released_by,
                    slot_from=r.slot_from, start=r.start, end=r.end, duration=d,
                    queued=(r.start - r.ready) if r.start is not None and r.ready is not None
                    else None,
                    slack=pa.slack.get(r.name) if r.status in ran else None,
                    critical=r.name in on_path, priority=r.priority,
                    predicted_slack=r.predicted_slack, resource=r.resource, attempts=r.attempts,
                    error=r.error, speculative=r.speculative,
                    model_choices=list(r.ctx.model_choices) if r.ctx is not None else [],
                )
            )  # fmt: skip
    makespan = run.makespan if run.makespan is not None else run.now()
    return RunReport(
        graph=run.graph.name,
        run_id=run.run_id,
        started_at=run.started_at,
        status=run.status,
        makespan=makespan,
        work=pa.work,
        span=pa.span,
        critical_path=critical,
        parallelism=pa.parallelism,
        efficiency=(pa.span / makespan) if makespan > 0 else 1.0,
        predicted_span=run.predicted_span,
        steps=steps,
        speculation=run.speculation.as_dict() if run.speculation.started else None,
    )
