"""OpenTelemetry metrics: the GenAI client conventions and critpath's own, off unless on.

critpath records through the OpenTelemetry metrics API; with no meter provider
installed nothing is measured and the recording points cost one check. One line
turns export on::

    critpath.metrics.enable_metrics("prometheus")   # or "otlp" (the otlp extra), "console"

``"prometheus"`` (``pip install 'critpath[metrics]'``) registers the metrics with
``prometheus_client``'s default registry (through OpenTelemetry's Prometheus
exporter): serve them with
``prometheus_client.start_http_server(port)``, or mount ``prometheus_text()`` on a
route of your service. An application that installs its own ``MeterProvider`` gets
critpath's metrics in it with no call at all.

Instruments (names as OpenTelemetry writes them; Prometheus turns dots into
underscores and adds the unit, e.g. ``gen_ai_client_operation_duration_seconds``):

GenAI conventions (attributes ``gen_ai.operation.name``, ``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.response.model``, ``server.address``,
``server.port``, ``error.type`` on failure):

- ``gen_ai.client.operation.duration`` (s): a model call, end to end, as the caller saw it.
- ``gen_ai.client.token.usage`` ({token}): tokens per call, ``gen_ai.token.type``
  ``input`` or ``output``.
- ``gen_ai.client.operation.time_to_first_chunk`` (s): client-side time to first token.
- ``gen_ai.client.operation.time_per_output_chunk`` (s): client-side time per output
  token after the first (the stream's mean gap per token).

critpath's own (attributes in ``critpath.*``):

- ``critpath.step.duration`` and ``critpath.step.queue_wait`` (s): per step
  (``critpath.graph``, ``critpath.step``, ``critpath.status``, ``critpath.critical``).
- ``critpath.run.makespan`` (s) and ``critpath.run.efficiency`` (span / makespan):
  per run (``critpath.graph``, ``critpath.status``).
- ``critpath.speculation.started`` / ``committed`` / ``cancelled`` (counters) and
  ``critpath.speculation.waste`` (s of work thrown away), per graph.
- ``critpath.hedge.fired`` / ``critpath.hedge.won`` (counters, ``critpath.model``).
- ``critpath.cascade.escalations`` (counter, ``critpath.model``, ``critpath.reason``).
- ``critpath.vote.decided`` (counter, ``critpath.model``, ``critpath.stopped_early``).
- ``critpath.requests.shed`` (counter, ``critpath.reason``, ``critpath.model``):
  requests turned away by admission control (``Adaptive``'s ``LoadShedError``;
  an application records its own with ``record_shed``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from opentelemetry import metrics

from critpath.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider

    from critpath.orchestrator.report import RunReport

__all__ = [
    "DURATION_BUCKETS",
    "TOKEN_BUCKETS",
    "enable_metrics",
    "metrics_enabled",
    "prometheus_text",
    "record_cascade_escalation",
    "record_hedge",
    "record_model_call",
    "record_run",
    "record_shed",
    "record_vote",
]

AttrValue = str | bool | int | float

DURATION_BUCKETS = (
    0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
    81.92,
)  # fmt: skip
"""Seconds: the GenAI conventions' advice for durations, with 5 ms added below."""

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
"""Tokens per call: the GenAI conventions' advice (powers of 4)."""

_TOKEN_GAP_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
    0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip

_meter = metrics.get_meter("critpath")

_op_duration = _meter.create_histogram(
    "gen_ai.client.operation.duration",
    unit="s",
    description="GenAI operation duration",
    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
)
_token_usage = _meter.create_histogram(
    "gen_ai.client.token.usage",
    unit="{token}",
    description="Number of input and output tokens used",
    explicit_bucket_boundaries_advisory=[float(b) for b in TOKEN_BUCKETS],
)
_ttft = _meter.create_histogram(
    "gen_ai.client.operation.time_to_first_chunk",
    unit="s",
    description="Time from the call to the first token, as the caller saw it",
    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
)
_tpot = _meter.create_histogram(
    "gen_ai.client.operation.time_per_output_chunk",
    unit="s",
    description="Time per output token after the first, as the caller saw it",
    explicit_bucket_boundaries_advisory=list(_TOKEN_GAP_BUCKETS),
)
_step_duration = _meter.create_histogram(
    "critpath.step.duration",
    unit="s",
    description="A step's run time",
    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
)
_step_wait = _meter.create_histogram(
    "critpath.step.queue_wait",
    unit="s",
    description="Time a ready step waited for a slot",
    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
)
_makespan = _meter.create_histogram(
    "critpath.run.makespan",
    unit="s",
    description="A run's makespan",
    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
)
_efficiency = _meter.create_histogram(
    "critpath.run.efficiency",
    unit="1",
    description="A run's span over its makespan (1.0 is the limit)",
    explicit_bucket_boundaries_advisory=[0.1, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0],
)
_spec_started = _meter.create_counter(
    "critpath.speculation.started", unit="{branch}", description="Speculative branches started"
)
_spec_committed = _meter.create_counter(
    "critpath.speculation.committed", unit="{branch}", description="Speculations committed"
)
_spec_cancelled = _meter.create_counter(
    "critpath.speculation.cancelled", unit="{branch}", description="Speculations cancelled"
)
_spec_waste = _meter.create_counter(
    "critpath.speculation.waste", unit="s", description="Work of cancelled speculations"
)
_hedge_fired = _meter.create_counter(
    "critpath.hedge.fired", unit="{request}", description="Hedged copies sent"
)
_hedge_won = _meter.create_counter(
    "critpath.hedge.won", unit="{request}", description="Hedged copies that answered first"
)
_escalations = _meter.create_counter(
    "critpath.cascade.escalations", unit="{escalation}", description="Cascade escalations"
)
_votes = _meter.create_counter("critpath.vote.decided", unit="{vote}", description="Votes decided")
_shed = _meter.create_counter(
    "critpath.requests.shed", unit="{request}", description="Requests turned away"
)


def metrics_enabled() -> bool:
    """True once an SDK meter provider is installed (by us or by the application)."""
    provider = metrics.get_meter_provider()
    return type(provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")


def enable_metrics(
    exporter: Literal["prometheus", "otlp", "console"] = "prometheus",
    *,
    endpoint: str | None = None,
    interval_s: float = 10.0,
    service_name: str = "critpath",
) -> MeterProvider:
    """Install an SDK meter provider that exports critpath's metrics; returns it.

    ``"prometheus"``: readable as Prometheus text (``prometheus_text()``, or
    ``prometheus_client``'s own HTTP server / ASGI app); ``"otlp"``: pushed over
    OTLP/HTTP every ``interval_s`` (``pip install 'critpath[otlp]'``; ``endpoint``
    defaults to the OTLP environment variables); ``"console"``: printed every
    ``interval_s``. OpenTelemetry allows one global meter provider per process.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricReader,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource

    reader: MetricReader
    if exporter == "prometheus":
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError("Prometheus export needs: pip install 'critpath[metrics]'") from exc
        reader = PrometheusMetricReader()
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError("OTLP export needs: pip install 'critpath[otlp]'") from exc
        exp = OTLPMetricExporter(endpoint=endpoint) if endpoint else OTLPMetricExporter()
        reader = PeriodicExportingMetricReader(exp, export_interval_millis=interval_s * 1000)
    elif exporter == "console":
        reader = PeriodicExportingMetricReader(
            ConsoleMetricExporter(), export_interval_millis=interval_s * 1000
        )
    else:
        raise ConfigError(f"unknown exporter {exporter!r}; use 'prometheus', 'otlp' or 'console'")
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": service_name})
    )
    metrics.set_meter_provider(provider)
    return provider


def prometheus_text() -> tuple[bytes, str]:
    """The default ``prometheus_client`` registry in the Prometheus text format, and its
    content type (critpath's metrics are in it after ``enable_metrics("prometheus")``)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(), CONTENT_TYPE_LATEST


def record_model_call(
    attributes: Mapping[str, AttrValue],
    *,
    duration: float,
    input_tokens: int | None,
    output_tokens: int | None,
    ttft: float | None,
    tpot: float | None,
) -> None:
    """One model call (called by ``critpath.telemetry_genai``'s instrumented streams)."""
    _op_duration.record(duration, attributes)
    if input_tokens is not None:
        _token_usage.record(input_tokens, {**attributes, "gen_ai.token.type": "input"})
    if output_tokens is not None:
        _token_usage.record(output_tokens, {**attributes, "gen_ai.token.type": "output"})
    if ttft is not None:
        _ttft.record(ttft, attributes)
    if tpot is not None:
        _tpot.record(tpot, attributes)


def record_run(report: RunReport) -> None:
    """A finished run: its makespan and efficiency, each step's duration and wait, and
    its speculations (called by the runtime when metrics are on)."""
    graph = report.graph
    run_attrs: dict[str, AttrValue] = {"critpath.graph": graph, "critpath.status": report.status}
    _makespan.record(report.makespan, run_attrs)
    _efficiency.record(report.efficiency, run_attrs)
    for s in report.steps:
        attrs: dict[str, AttrValue] = {
            "critpath.graph": graph,
            "critpath.step": s.step,
            "critpath.status": s.status,
            "critpath.critical": s.critical,
        }
        if s.duration is not None:
            _step_duration.record(s.duration, attrs)
        if s.queued is not None:
            _step_wait.record(s.queued, attrs)
    spec = report.speculation
    if spec:
        g = {"critpath.graph": graph}
        _spec_started.add(int(spec.get("started", 0)), g)
        _spec_committed.add(int(spec.get("committed", 0)), g)
        _spec_cancelled.add(int(spec.get("cancelled", 0)), g)
        _spec_waste.add(float(spec.get("waste_s", 0.0)), g)


def record_hedge(model: str, *, won: bool) -> None:
    """A hedged copy was sent (``won=False``) or answered first (``won=True``)."""
    (_hedge_won if won else _hedge_fired).add(1, {"critpath.model": model})


def record_cascade_escalation(model: str, reason: str) -> None:
    """A cascade moved past a tier for ``reason``."""
    _escalations.add(1, {"critpath.model": model, "critpath.reason": reason})


def record_vote(model: str, *, stopped_early: bool) -> None:
    """A vote was decided (``stopped_early``: early quorum cancelled stragglers)."""
    _votes.add(1, {"critpath.model": model, "critpath.stopped_early": stopped_early})


def record_shed(reason: str, model: str | None = None) -> None:
    """A request was turned away before any work (overload, deadline out of reach...),
    by ``model`` when a model wrapper refused it (``Adaptive``)."""
    attrs: dict[str, AttrValue] = {"critpath.reason": reason}
    if model is not None:
        attrs["critpath.model"] = model
    _shed.add(1, attrs)
