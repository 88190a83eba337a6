"""The chat service's Prometheus metrics (the official ``prometheus_client``).

``ChatMetrics`` owns a registry and the service's instruments; the app wraps each
answer's stream in ``watch_refine`` (``/chat``) or ``watch_stream``
(``/v1/chat/completions``) and serves ``render()`` at ``GET /metrics``:

- ``chatbot_requests_total{endpoint}`` and ``chatbot_requests_in_flight{endpoint}``;
- ``chatbot_time_to_first_token_seconds{endpoint}``: to the first piece of text the
  client receives (the draft's first token on ``/chat``);
- ``chatbot_draft_seconds``: to the end of the draft; ``chatbot_final_seconds{source}``:
  to the final answer (``draft`` or ``revision``);
- ``chatbot_errors_total{type}``: answers that failed, by exception class (a client
  that goes away is ``client_disconnected``);
- ``chatbot_shed_total{reason}``: requests refused: ``admission`` (the service's
  admission control answered 503), or the policy of an ``Adaptive`` that found no
  model predicted to answer in time.

``render()`` appends ``prometheus_client``'s default registry, so critpath's own
metrics (``critpath.metrics.enable_metrics("prometheus")``) come out of the same
endpoint.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from critpath.adapters import Chunk, record_decisions
from critpath.cascades import DraftDelta, Final, RefineEvent
from critpath.errors import ModelError

__all__ = ["LATENCY_BUCKETS", "ChatMetrics"]

T = TypeVar("T")

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
"""Seconds: from a fast draft's first token to a slow model's whole answer."""


class ChatMetrics:
    """The service's instruments in their own registry (several apps in one process,
    as in the tests, each count their own)."""

    def __init__(self, *, include_default: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.include_default = include_default
        r = self.registry
        self.requests = Counter("chatbot_requests", "Answers started", ["endpoint"], registry=r)
        self.in_flight = Gauge(
            "chatbot_requests_in_flight", "Answers in progress", ["endpoint"], registry=r
        )
        self.ttft = Histogram(
            "chatbot_time_to_first_token_seconds",
            "Time to the first text the client receives",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.draft = Histogram(
            "chatbot_draft_seconds", "Time to the end of the draft",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.final = Histogram(
            "chatbot_final_seconds", "Time to the final answer", ["source"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.errors = Counter("chatbot_errors", "Answers that failed", ["type"], registry=r)
        self.shed = Counter(
            "chatbot_shed", "Requests refused under load", ["reason"], registry=r
        )

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text of this registry (and the default one) and its type."""
        text = generate_latest(self.registry)
        if self.include_default:
            text += generate_latest(REGISTRY)
        return text, CONTENT_TYPE_LATEST

    async def watch_refine(
        self, events: AsyncGenerator[RefineEvent, None]
    ) -> AsyncGenerator[RefineEvent, None]:
        """``events`` of a Refine call, passed through, timed and counted."""
        start = time.perf_counter()
        first = draft_end = None
        async for ev in self._watch("chat", events):
            now = time.perf_counter() - start
            if isinstance(ev, DraftDelta):
                if first is None and ev.text:
                    first = now
                    self.ttft.labels("chat").observe(now)
                draft_end = now
            elif draft_end is not None:
                self.draft.observe(draft_end)
                draft_end = None
            if isinstance(ev, Final):
                self.final.labels(ev.source).observe(now)
            yield ev

    async def watch_stream(
        self, chunks: AsyncGenerator[Chunk, None]
    ) -> AsyncGenerator[Chunk, None]:
        """An answer's chunks (``/v1/chat/completions``), passed through and timed."""
        start = time.perf_counter()
        first = True
        async for chunk in self._watch("completions", chunks):
            if first and chunk.text:
                first = False
                self.ttft.labels("completions").observe(time.perf_counter() - start)
            yield chunk

    async def _watch(
        self, endpoint: str, inner: AsyncGenerator[T, None]
    ) -> AsyncGenerator[T, None]:
        self.requests.labels(endpoint).inc()
        gauge = self.in_flight.labels(endpoint)
        gauge.inc()
        ended = False
        with record_decisions() as decisions:
            try:
                async with aclosing(inner):
                    async for item in inner:
                        yield item
                ended = True
            except ModelError as exc:
                ended = True
                self.errors.labels(type(exc).__name__).inc()
                raise
            finally:
                gauge.dec()
                if not ended:
                    self.errors.labels("client_disconnected").inc()
                for d in decisions:
                    if d.index is None:
                        self.shed.labels(d.policy).inc()
