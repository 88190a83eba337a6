"""OpenTelemetry for tests: the process's one SDK tracer and meter provider.

OpenTelemetry allows one global tracer provider and one global meter provider per
process. ``tracer_provider()`` returns the SDK tracer provider, installing one when
nobody has (``test_telemetry`` may have); exporters are added to it. ``metric_reader()``
installs, once, an SDK meter provider with an in-memory reader and a Prometheus reader
(so ``prometheus_client``'s default registry carries critpath's metrics), and returns
the in-memory reader.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["Switch", "in_memory_spans", "metric_points", "metric_reader", "tracer_provider"]

_SPANS: InMemorySpanExporter | None = None
_READER: InMemoryMetricReader | None = None


def tracer_provider() -> TracerProvider:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    return provider


def in_memory_spans() -> InMemorySpanExporter:
    """An in-memory exporter on the global provider (one per process)."""
    global _SPANS
    if _SPANS is None:
        _SPANS = InMemorySpanExporter()
        tracer_provider().add_span_processor(SimpleSpanProcessor(_SPANS))
    return _SPANS


def metric_reader() -> InMemoryMetricReader:
    global _READER
    if _READER is None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        _READER = InMemoryMetricReader()
        provider = metrics.get_meter_provider()
        if isinstance(provider, MeterProvider):  # pragma: no cover - someone else's
            raise RuntimeError("a meter provider without our reader is installed")
        metrics.set_meter_provider(
            MeterProvider(metric_readers=[_READER, PrometheusMetricReader()])
        )
    return _READER


def metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """The data points of metric ``name`` in the reader's latest collection."""
    data = reader.get_metrics_data()
    out: list[Any] = []
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    out.extend(m.data.data_points)
    return out


class Switch(SpanProcessor):
    """Forwards spans to ``inner`` only while ``on`` (a processor cannot be removed
    from a provider: a test turns its exporter off instead)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner
        self.on = True

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.on:
            self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
