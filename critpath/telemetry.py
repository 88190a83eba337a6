"""OpenTelemetry: a span per run and per step, off unless you turn it on.

critpath only uses the OpenTelemetry API; with no tracer provider configured it
records nothing and costs nothing. One line turns on export::

    critpath.telemetry.enable_tracing("console")     # or "otlp" (needs the otlp extra)

Step spans start when the step starts (so spans opened inside a step, e.g. a model
call, nest under it) and end, with the step's real end time, when the run ends —
once slack and the critical path are known. Attributes: ``critpath.slack_ms``,
``critpath.critical``, ``critpath.priority``, ``critpath.status``,
``critpath.cancelled``, ``critpath.resource``, ``critpath.wait_ms`` (ready to start:
queued for a slot), ``critpath.on_observed_path`` and, on that path,
``critpath.released`` (dependency / resource / run start) and ``critpath.released_by``.
The run span carries makespan, span, work, efficiency, the critical path, the observed
path and its breakdown (``critpath.path_work_ms``, ``critpath.resource_wait_ms``,
``critpath.overhead_ms``: they add up to the makespan; see
``critpath.orchestrator.observed``). A step's sub-steps (an agent's model turns and
tool calls) are spans under it (``critpath.substep``, ``critpath.kind``), ended with
the run too, with ``critpath.critical`` and ``critpath.slack_ms`` among its sub-steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace

from critpath.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from critpath.orchestrator.report import RunReport, StepRecord, StepReport
    from critpath.orchestrator.runtime import Run

__all__ = ["enable_tracing", "end_model_span", "start_model_span", "tracer", "tracing_enabled"]

_tracer = trace.get_tracer("critpath")


def tracer() -> trace.Tracer:
    """critpath's tracer (for spans of your own inside steps)."""
    return _tracer


def tracing_enabled() -> bool:
    """True once an SDK tracer provider is installed (by us or by the application)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def enable_tracing(
    exporter: Literal["console", "otlp"] = "console",
    *,
    endpoint: str | None = None,
    service_name: str = "critpath",
) -> TracerProvider:
    """Install an SDK tracer provider that exports critpath's spans; returns it.

    ``"console"`` prints spans as JSON to stdout; ``"otlp"`` sends them over OTLP/HTTP
    (``pip install 'critpath[otlp]'``; endpoint defaults to the OTLP environment
    variables). OpenTelemetry allows one global provider per process.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
        SpanExporter,
    )

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exp: SpanExporter
    if exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError("OTLP export needs: pip install 'critpath[otlp]'") from exc
        exp = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exp))
    else:
        raise ConfigError(f"unknown exporter {exporter!r}; use 'console' or 'otlp'")
    trace.set_tracer_provider(provider)
    return provider


def _ns(run: Run, t: float) -> int:
    return int((run.started_at + t) * 1e9)


def start_run_span(run: Run) -> trace.Span:
    return _tracer.start_span(
        f"critpath.run {run.graph.name}",
        start_time=_ns(run, 0.0),
        attributes={"critpath.graph": run.graph.name, "critpath.run_id": run.run_id},
    )


def start_step_span(run: Run, rec: StepRecord) -> trace.Span:
    """Open the step's span under the run's and make it current in the step's task."""
    parent = trace.set_span_in_context(run._span) if run._span is not None else None
    span = _tracer.start_span(
        f"critpath.step {rec.name}",
        context=parent,
        attributes={"critpath.step": rec.step, "critpath.run_id": run.run_id},
    )
    otel_context.attach(trace.set_span_in_context(span))  # task-local: dies with the task
    return span


def end_run_span(run: Run, report: RunReport) -> None:
    by_name = {s.name: s for s in report.steps}
    on_path = {p.name: p for p in report.observed_path}
    for node in run._nodes.values():
        for rec in node.records:
            span = rec.span
            if span is None:
                continue
            s = by_name[rec.name]
            span.set_attribute("critpath.status", s.status)
            span.set_attribute("critpath.cancelled", s.status == "cancelled")
            span.set_attribute("critpath.critical", s.critical)
            if s.slack is not None:
                span.set_attribute("critpath.slack_ms", s.slack * 1000)
            if s.priority is not None:
                span.set_attribute("critpath.priority", s.priority)
            if s.resource:
                span.set_attribute("critpath.resource", s.resource)
            if s.queued is not None:
                span.set_attribute("critpath.wait_ms", s.queued * 1000)
            entry = on_path.get(rec.name)
            span.set_attribute("critpath.on_observed_path", entry is not None)
            if entry is not None:
                span.set_attribute("critpath.released", entry.released.value)
                if entry.by is not None:
                    span.set_attribute("critpath.released_by", entry.by)
            if s.status == "failed":
                span.set_status(trace.Status(trace.StatusCode.ERROR, s.error or ""))
            _end_substep_spans(run, rec, s)
            span.end(end_time=_ns(run, s.end if s.end is not None else report.makespan))
    rs = run._span
    assert rs is not None
    rs.set_attribute("critpath.status", report.status)
    rs.set_attribute("critpath.makespan_ms", report.makespan * 1000)
    rs.set_attribute("critpath.span_ms", report.span * 1000)
    rs.set_attribute("critpath.work_ms", report.work * 1000)
    rs.set_attribute("critpath.efficiency", report.efficiency)
    rs.set_attribute("critpath.critical_path", report.critical_path)
    rs.set_attribute("critpath.observed_path", [p.name for p in report.observed_path])
    if report.breakdown is not None:
        b = report.breakdown
        rs.set_attribute("critpath.path_work_ms", b.path_work * 1000)
        rs.set_attribute("critpath.resource_wait_ms", b.resource_wait * 1000)
        rs.set_attribute("critpath.overhead_ms", b.overhead * 1000)
    if report.status not in ("ok", "partial"):
        rs.set_status(trace.Status(trace.StatusCode.ERROR, report.status))
    rs.end(end_time=_ns(run, report.makespan))


def _end_substep_spans(run: Run, rec: StepRecord, s: StepReport) -> None:
    subs = getattr(rec.ctx, "_substeps", None)
    if subs is None:
        return
    reports = {sub.name: sub for sub in s.substeps}
    for sub in subs.records:
        span, sub.span = sub.span, None
        entry = reports.get(sub.name)
        if span is None or entry is None:
            continue
        span.set_attribute("critpath.status", entry.status)
        span.set_attribute("critpath.critical", entry.critical)
        if entry.slack is not None:
            span.set_attribute("critpath.slack_ms", entry.slack * 1000)
        if entry.error:
            span.set_status(trace.Status(trace.StatusCode.ERROR, entry.error))
        end = entry.end if entry.end is not None else s.end
        span.end(end_time=_ns(run, end if end is not None else entry.start))


def start_model_span(model: str, attributes: dict[str, Any]) -> trace.Span | None:
    """A span for one model call, under the current span (e.g. the step's), or ``None``
    when tracing is off. Never pass credentials in ``attributes``."""
    if not tracing_enabled():
        return None
    return _tracer.start_span(f"critpath.model {model}", attributes=attributes)


def end_model_span(
    span: trace.Span | None,
    *,
    ttft: float | None = None,
    e2e: float | None = None,
    tokens: int | None = None,
    error: BaseException | None = None,
) -> None:
    if span is None:
        return
    if ttft is not None:
        span.set_attribute("critpath.ttft_ms", ttft * 1000)
    if e2e is not None:
        span.set_attribute("critpath.e2e_ms", e2e * 1000)
    if tokens is not None:
        span.set_attribute("critpath.completion_tokens", tokens)
    if error is not None:
        span.set_attribute("critpath.error", type(error).__name__)
        span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)[:200]))
    span.end()
