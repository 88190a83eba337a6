"""What an endpoint has learned about itself: online TTFT, TPOT and end-to-end latency.

Every adapter times the chunks it receives with a ``StreamClock`` and records the
result into its ``EndpointStats`` when the stream ends. The runtime, hedging and
deadlines read these estimates (``stats.ttft.p95``...) instead of constants.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from critpath._clock import now as _now
from critpath.estimates import LatencyEstimate
from critpath.orchestrator.context import count_tokens

__all__ = ["EndpointStats", "StreamClock", "Timings"]


@dataclass(frozen=True, slots=True)
class Timings:
    """Seconds from the start of the call.

    ``queued``: until the server accepted the request and began answering (HTTP
    headers), ``None`` when the backend cannot tell; ``ttft``: until the first token;
    ``e2e``: until the stream ended; ``gaps``: between successive token chunks.
    """

    queued: float | None
    ttft: float | None
    e2e: float
    gaps: tuple[float, ...]
    tokens: int

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first (``None`` with fewer than two tokens)."""
        if self.ttft is None or self.tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.tokens - 1)


class StreamClock:
    """Times one streamed call; cheap enough to tick on every chunk.

    ``on_first_token`` is called with the TTFT the moment the first token arrives, so an
    endpoint learns its TTFT even from streams that are closed or cancelled later
    (e.g. a hedge's loser that had started to answer). ``charge_step``: count each
    token to the running step (``context.count_tokens``); backends' clocks do
    (``EndpointStats.clock``), callers' clocks do not, so nothing counts twice.
    """

    __slots__ = ("_charge", "_last", "_on_first", "gaps", "queued", "start", "tokens", "ttft")

    def __init__(
        self, on_first_token: Callable[[float], None] | None = None, *, charge_step: bool = False
    ) -> None:
        self._on_first = on_first_token
        self._charge = charge_step
        self.start = _now()
        self.queued: float | None = None
        self.ttft: float | None = None
        self._last = 0.0
        self.gaps: list[float] = []
        self.tokens = 0

    def accepted(self) -> None:
        if self.queued is None:
            self.queued = _now() - self.start

    def token(self, n: int = 1) -> None:
        now = _now() - self.start
        if self.ttft is None:
            self.ttft = now
            if self._on_first is not None:
                self._on_first(now)
        else:
            self.gaps.append(now - self._last)
        self._last = now
        self.tokens += n
        if self._charge:
            count_tokens(n)

    def finish(self, tokens: int | None = None) -> Timings:
        """The timings so far; ``tokens`` overrides the count (e.g. from reported usage)."""
        return Timings(
            queued=self.queued,
            ttft=self.ttft,
            e2e=_now() - self.start,
            gaps=tuple(self.gaps),
            tokens=self.tokens if tokens is None else tokens,
        )


@dataclass(slots=True)
class EndpointStats:
    """Online latency estimates and counters of one endpoint."""

    ttft: LatencyEstimate = field(default_factory=LatencyEstimate)
    tpot: LatencyEstimate = field(default_factory=LatencyEstimate)
    e2e: LatencyEstimate = field(default_factory=LatencyEstimate)
    requests: int = 0
    in_flight: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def clock(self) -> StreamClock:
        """A clock for one call that records its TTFT here at the first token."""
        return StreamClock(self.ttft.observe, charge_step=True)

    def record(self, timings: Timings) -> None:
        """Record a completed call's TPOT and end-to-end time (its TTFT was recorded at
        the first token by the call's ``clock()``)."""
        tpot = timings.tpot
        if tpot is not None:
            self.tpot.observe(max(tpot, 0.0))
        self.e2e.observe(timings.e2e)

    def estimates(self) -> dict[str, LatencyEstimate]:
        """The learned estimates by name (``ttft``, ``tpot``, ``e2e``), e.g. to share them."""
        return {"ttft": self.ttft, "tpot": self.tpot, "e2e": self.e2e}

    def record_error(self, exc: BaseException) -> None:
        self.errors[type(exc).__name__] += 1

    def statistics(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "errors": dict(self.errors),
            "ttft": self.ttft.statistics(),
            "tpot": self.tpot.statistics(),
            "e2e": self.e2e.statistics(),
        }
