"""The run report: per step timings, slack and the critical path; per run the totals.

Vocabulary (see DESIGN.md): **work** is the sum of step durations; **span** the
length of the longest dependency chain under the measured durations (the critical
path); **parallelism** = work / span; **efficiency** = span / makespan (1.0 means the
run took no longer than its dependencies forced). The **observed path** is what the
finish actually waited on (dependencies and slots freed by other steps, with the waits
on it), and the **breakdown** splits the makespan along it into path work, resource
wait and overhead (``critpath.orchestrator.observed``): it explains the efficiency.
A step's **sub-steps** (an agent's model turns and tool calls:
``critpath.orchestrator.substeps``) are listed under it with their own critical path;
on a critical step, that path is where the run's critical path runs through it
(``RunReport.critical_path_detail``). A report prints as text (``str(report)``),
saves as JSON and draws as a timeline (``critpath.orchestrator.timeline``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from critpath.orchestrator.analysis import analyse
from critpath.orchestrator.context import ModelChoice
from critpath.orchestrator.observed import (
    OTHER_RUN,
    Breakdown,
    PathStep,
    Release,
    observed_path,
)
from critpath.orchestrator.states import RunStatus, StepStatus
from critpath.orchestrator.substeps import SubStepKind, SubSteps

if TYPE_CHECKING:
    from critpath.orchestrator.runtime import Run

__all__ = [
    "RunReport", "StepRecord", "StepReport", "StepStatus", "SubStepReport", "build_report",
]  # fmt: skip


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


class SubStepReport(BaseModel):
    """One sub-step of a step (a model turn, a tool call). Times since the run started;
    ``slack`` and ``critical`` are among the step's sub-steps (``critical`` only when
    the step itself is on the critical path)."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: SubStepKind
    deps: list[str]
    status: StepStatus
    start: float
    end: float | None = None
    duration: float | None = None
    slack: float | None = None
    critical: bool = False
    speculative: bool = False
    error: str | None = None


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
    substeps: list[SubStepReport] = Field(default_factory=list)
    """What the step recorded of its own parts (an agent's turns and tool calls)."""


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
    observed_path: list[PathStep] = Field(default_factory=list)
    """What the finish waited on, first record first (see ``critpath.orchestrator.observed``)."""
    breakdown: Breakdown | None = None
    """The makespan along the observed path: path_work + resource_wait + overhead."""

    @model_validator(mode="before")
    @classmethod
    def _derive_observed_path(cls, data: Any) -> Any:
        """A report saved before the observed path existed gets it computed from its steps."""
        if not isinstance(data, dict) or "breakdown" in data or "steps" not in data:
            return data
        try:
            steps = [s if isinstance(s, StepReport) else StepReport.model_validate(s)
                     for s in data["steps"]]  # fmt: skip
            makespan, span = float(data["makespan"]), float(data["span"])
        except (ValidationError, KeyError, TypeError, ValueError):
            return data  # the model's own validation names what is wrong
        obs = observed_path(steps, makespan, span)
        return {**data, "observed_path": obs.path, "breakdown": obs.breakdown}

    def critical_path_detail(self) -> list[str]:
        """The critical path with each step that has sub-steps replaced by the critical
        path among them (``"agent/t1.model"``...)."""
        out: list[str] = []
        for name in self.critical_path:
            inner = [f"{name}/{sub.name}" for sub in self.step(name).substeps if sub.critical]
            out.extend(inner or [name])
        return out

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
            "critical path: "
            + (" -> ".join(self.critical_path) or "(none)")
            + f"  (dependencies only: span {self.span * ms:.1f} ms)",
            *self._observed_text(),
            "",
        ]
        subs = [len(sub.name) + 2 for s in self.steps for sub in s.substeps]
        width = max([len(s.name) for s in self.steps] + subs + [4]) + 2
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

        observed = {p.name for p in self.observed_path}
        for s in sorted(self.steps, key=lambda s: (s.start is None, s.start or 0.0, s.name)):
            mark = ("*" if s.critical else " ") + ("+" if s.name in observed else " ")
            lines.append(
                f"{mark}{s.name:<{width}}{s.status:<10}{f(s.start):>10}{f(s.end):>10}"
                f"{f(s.duration):>10}{f(s.slack):>10}{f(s.queued):>10}"
                f"{lst(s):>8}  {s.resource or ''}"
            )
            for sub in s.substeps:
                label = f"  {sub.name}"
                lines.append(
                    f"{'*' if sub.critical else ' '} {label:<{width}}{sub.status:<10}"
                    f"{f(sub.start):>10}{f(sub.end):>10}{f(sub.duration):>10}"
                    f"{f(sub.slack):>10}{'':>10}{'':>8}  {sub.kind}"
                    + ("  speculative" if sub.speculative else "")
                )
        lines.append(
            "(* on the critical path; + on the observed path; lst: the latest start time"
            " predicted when the step started, ms from the run's start: what orders its"
            " priority)"
        )
        for s in self.steps:
            for c in s.model_choices:
                lines.append(
                    f"model choice in {s.name}: {c.policy} -> {c.model} ({c.why}; predicted "
                    f"{f(None if c.predicted_ms is None else c.predicted_ms / ms)} ms, "
                    f"budget {f(None if c.budget_ms is None else c.budget_ms / ms)} ms)"
                )
        return "\n".join(lines)

    def _observed_text(self) -> list[str]:
        """The observed path, one record a line with what released it, and the breakdown."""
        ms = 1000.0
        b = self.breakdown
        if b is None or not self.observed_path:
            return []
        lines = [
            "observed path: "
            + " -> ".join(p.name for p in self.observed_path)
            + "  (what the finish waited on; ms)"
        ]
        width = max(len(p.name) for p in self.observed_path) + 2

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v * ms:.1f}"

        for p in self.observed_path:
            what = _released_text(p)
            if p.gap > 0.0005:
                what += f"; {p.gap * ms:.1f} ms overhead before it"
            lines.append(f"    {p.name:<{width}}{f(p.start):>9} -> {f(p.end):>9}  {what}")
        lines.append(
            f"breakdown: makespan {b.makespan * ms:.1f} = path work {b.path_work * ms:.1f}"
            f" + resource wait {b.resource_wait * ms:.1f} + overhead {b.overhead * ms:.1f} ms"
            f" (span {b.span * ms:.1f} ms)"
        )
        return lines

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


def _released_text(p: PathStep) -> str:
    ms = 1000.0
    slot = f"a slot of {p.resource}" if p.resource else "a concurrency slot"
    if p.released is Release.RUN_START:
        return "ready at the run's start"
    if p.released is Release.DEPENDENCY:
        return f"after {p.by}"
    if p.start is None:
        since = f" since {p.ready * ms:.1f}" if p.ready is not None else ""
        return f"still waiting for {slot}{since} when the run ended ({p.wait * ms:.1f} ms)"
    by = {None: "", OTHER_RUN: ", freed by another run"}.get(p.by, f", freed by {p.by}")
    return f"waited {p.wait * ms:.1f} ms for {slot}{by}"


def _substeps(rec: StepRecord, critical_step: bool) -> list[SubStepReport]:
    """The sub-steps a step recorded; one still open ends with its step, cancelled."""
    ctx = rec.ctx
    subs: SubSteps | None = getattr(ctx, "_substeps", None)
    if subs is None or not len(subs):
        return []
    pa = subs.analysis()
    on_path = set(pa.critical_path) if critical_step else set()
    out = []
    for sub in subs.records:
        end = sub.end if sub.end is not None else rec.end
        status = sub.status if sub.end is not None else StepStatus.CANCELLED
        out.append(
            SubStepReport(
                name=sub.name, kind=sub.kind, deps=list(sub.deps), status=status,
                start=sub.start, end=end, duration=None if end is None else end - sub.start,
                slack=pa.slack.get(sub.name), critical=sub.name in on_path,
                speculative=sub.speculative, error=sub.error,
            )
        )  # fmt: skip
    return out


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
                    substeps=_substeps(r, r.name in on_path),
                )
            )  # fmt: skip
    makespan = run.makespan if run.makespan is not None else run.now()
    observed = observed_path(steps, makespan, pa.span)
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
        observed_path=observed.path,
        breakdown=observed.breakdown,
    )
