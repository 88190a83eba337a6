"""Asking one question of a strategy and measuring it: latency, TTFT, cost, calls.

``ask(model, request, answer, kind=...)`` asks one question and returns an
``Outcome``: the final answer read with the answer kind (as written, and normalised)
and whether it is equivalent to the right one, latency and time to first token on the
event loop's clock (real or virtual), the cost and number of model calls charged by
``Metered`` models under it (every streamed token counts, cancelled ones included),
and what the strategy did (``detail``: the tier that answered, whether a vote stopped
early, whether a refine changed the draft). A ``Refine`` is read through its events
(the first draft token is its TTFT), a ``Vote`` or ``Cascade`` through ``decide`` (its
result, returned by the call, says what it did), any other model through its stream.
``summarise`` turns outcomes into the figures the benchmark and the demo print.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from critpath.adapters.protocol import Chunk, Model, ModelRequest
from critpath.adapters.stats import EndpointStats
from critpath.adapters.wrapper import WrapperModel
from critpath.cascades.answers import AnswerKind, AnswerKindLike, as_kind
from critpath.cascades.cascade import CascadeResult
from critpath.cascades.decider import Decided, Decider
from critpath.cascades.refine import DraftDelta, Final, Refine
from critpath.cascades.vote import VoteResult
from critpath.errors import ModelError
from critpath.estimates import percentile

__all__ = ["ROW_KEYS", "Metered", "Outcome", "ask", "describe", "ms", "quantile", "summarise"]

ROW_KEYS = ("accuracy", "latency_ms", "ttft_ms", "cost", "calls_per_query", "errors")
"""The figures of a strategy's row (a subset of ``summarise``'s), as tables print them."""

# ---- metering -------------------------------------------------------------------------


@dataclass(slots=True)
class _Meter:
    calls: int = 0
    cost: float = 0.0
    tokens: int = 0


_METER: ContextVar[_Meter | None] = ContextVar("critpath_meter", default=None)


class Metered(WrapperModel):
    """A model whose calls and streamed tokens are charged to the current query."""

    def __init__(self, model: Model, price_in: float = 0.0, price_out: float = 0.0) -> None:
        super().__init__(model)
        self.price_in = price_in / 1e6
        self.price_out = price_out / 1e6

    @property
    def model(self) -> Model:
        return self.wrapped[0]

    @property
    def stats(self) -> EndpointStats | None:
        stats = getattr(self.model, "stats", None)
        return stats if isinstance(stats, EndpointStats) else None

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        meter = _METER.get()
        if meter is not None:
            meter.calls += 1
            chars = sum(len(m.content) for m in request.messages or ()) or len(request.prompt or "")
            meter.cost += max(1, chars // 4) * self.price_in
        async with aclosing(self.model.stream(request)) as chunks:
            async for chunk in chunks:
                if meter is not None and chunk.tokens:
                    meter.tokens += chunk.tokens
                    meter.cost += chunk.tokens * self.price_out
                yield chunk


# ---- outcomes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One question asked of one strategy."""

    question: str
    answer: str | None
    correct: bool
    latency: float
    ttft: float | None
    cost: float
    calls: int
    error: str | None = None
    detail: str = ""
    extracted: str | None = None


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (``critpath.estimates.percentile``)."""
    return percentile(values, q)


def ms(x: float) -> float:
    return round(x * 1000, 1) if math.isfinite(x) else math.nan


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Accuracy, latency (p50/p95/p99/mean, ms), TTFT p50, mean cost (USD) and calls."""
    n = len(outcomes)
    lat = [o.latency for o in outcomes]
    ttft = [o.ttft for o in outcomes if o.ttft is not None]
    return {
        "n": n,
        "accuracy": round(sum(o.correct for o in outcomes) / n, 4) if n else math.nan,
        "latency_ms": {
            "p50": ms(quantile(lat, 0.5)),
            "p95": ms(quantile(lat, 0.95)),
            "p99": ms(quantile(lat, 0.99)),
            "mean": ms(statistics.fmean(lat)) if lat else math.nan,
        },
        "ttft_ms": {"p50": ms(quantile(ttft, 0.5))},
        "cost": round(statistics.fmean(o.cost for o in outcomes), 7) if n else math.nan,
        "calls_per_query": round(statistics.fmean(o.calls for o in outcomes), 3) if n else 0,
        "errors": sum(o.error is not None for o in outcomes),
    }


def describe(result: Decided) -> str:
    """What a decision did, as an ``Outcome.detail``: ``tier<i>`` (the cascade tier
    that answered), ``early`` / ``all`` (a vote stopped early or heard every voter)."""
    if isinstance(result, CascadeResult):
        return f"tier{result.tier}"
    if isinstance(result, VoteResult):
        return "early" if result.stopped_early else "all"
    return ""


async def ask(
    runnable: Model,
    request: ModelRequest,
    answer: str | None,
    *,
    question: str = "",
    kind: AnswerKindLike = None,
) -> Outcome:
    """Ask ``request`` of ``runnable``; ``answer``: the right answer (``None``: unknown,
    never correct), compared by ``kind``'s equivalence (no kind: ``DEFAULT_KIND`` reads
    the reply and ``answer`` is the right normal form). Model errors become the
    outcome's ``error``."""
    reader: AnswerKind = as_kind(kind)
    loop = asyncio.get_running_loop()
    meter = _Meter()
    token = _METER.set(meter)
    t0 = loop.time()
    ttft: float | None = None
    text = ""
    error = None
    detail = ""
    try:
        if isinstance(runnable, Refine):
            async with aclosing(runnable.events(request)) as events:
                async for event in events:
                    if isinstance(event, DraftDelta) and ttft is None and event.text:
                        ttft = event.t
                    elif isinstance(event, Final):
                        text = event.text
                        detail = "changed" if event.stats.changed else "unchanged"
        elif isinstance(runnable, Decider):
            result = await runnable.decide(request)
            text = result.completion.text
            if text:  # the answer comes whole, once decided: its first token is now
                ttft = loop.time() - t0
            detail = describe(result)
        else:
            parts: list[str] = []
            async with aclosing(runnable.stream(request)) as chunks:
                async for chunk in chunks:
                    if chunk.text:
                        if ttft is None:
                            ttft = loop.time() - t0
                        parts.append(chunk.text)
            text = "".join(parts)
    except ModelError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        _METER.reset(token)
    latency = loop.time() - t0
    extracted = reader.extract(text) if text else None
    got = reader.normalise(extracted) if extracted is not None else None
    if kind is None:  # no kind: ``answer`` is the right normal form itself
        correct = answer is not None and got == answer
    else:
        correct = answer is not None and reader.correct(extracted, answer)
    return Outcome(
        question, got, correct, latency, ttft, meter.cost, meter.calls, error, detail, extracted
    )
