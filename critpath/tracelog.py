"""Trace and span ids in log records, so a log line leads to its trace.

``TraceContextFilter`` is a ``logging.Filter`` that stamps every record with the ids of
the span current where it was logged (a step's, a model call's), under the names
OpenTelemetry's logging instrumentation uses: ``otelTraceID``, ``otelSpanID`` (hex,
``"0"`` outside any span) and ``otelTraceSampled``. Put it on a handler (a filter on a
logger does not see its children's records)::

    handler = logging.StreamHandler()
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(logging.Formatter(TRACE_FORMAT))
    logging.getLogger("critpath").addHandler(handler)

or call ``add_trace_ids(handler)``, which does both. Tracing must be on (an SDK tracer
provider installed) for the ids to be real; otherwise they read ``"0"``.
"""

from __future__ import annotations

import logging

from opentelemetry import trace

__all__ = ["TRACE_FORMAT", "TraceContextFilter", "add_trace_ids"]

TRACE_FORMAT = (
    "%(asctime)s %(levelname)s [trace_id=%(otelTraceID)s span_id=%(otelSpanID)s] "
    "%(name)s: %(message)s"
)
"""A log format that shows the ids (Grafana's and Datadog's log-to-trace links parse
``trace_id=``)."""


class TraceContextFilter(logging.Filter):
    """Adds ``otelTraceID``, ``otelSpanID`` and ``otelTraceSampled`` to each record;
    lets every record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.otelTraceID = format(ctx.trace_id, "032x")
            record.otelSpanID = format(ctx.span_id, "016x")
            record.otelTraceSampled = ctx.trace_flags.sampled
        else:
            record.otelTraceID = "0"
            record.otelSpanID = "0"
            record.otelTraceSampled = False
        return True


def add_trace_ids(handler: logging.Handler, fmt: str = TRACE_FORMAT) -> logging.Handler:
    """Put a ``TraceContextFilter`` on ``handler`` and format its records with ``fmt``."""
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(logging.Formatter(fmt))
    return handler
