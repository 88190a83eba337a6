"""``Hedge``: send a request again elsewhere when its first token is late; keep the first.

A hedged request (Dean & Barroso, "The Tail at Scale") goes to one replica; if no
token has come back after ``delay`` — by default the primary replica's learned TTFT
at ``quantile`` (p95), from its ``stats.ttft`` — a copy goes to another replica. The
first copy to produce a token wins; the other is cancelled at once (its stream closed:
over HTTP the server aborts the generation and frees its KV cache), and the caller
reads the winner's whole answer, nothing lost, nothing twice.

Failures before the first token: if one copy fails, the other is awaited; if the
primary fails (retryably) before the hedge was sent, the hedge goes out at once when
the budget allows. Otherwise the error propagates. After the first token errors
propagate as they are: the caller has seen part of that answer.

Extra load is budgeted by a token bucket (``HedgeBudget``): every request adds
``budget`` tokens (up to ``burst``), a hedge costs one, so hedges never exceed
``budget`` x requests.

Structured: the two copies race in tasks owned by the stream; closing or cancelling
the stream cancels both, closes their streams and waits for them. No task outlives
the call.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from critpath import metrics
from critpath._tasks import cancel_and_wait
from critpath.adapters.logs import get_logger
from critpath.adapters.pool import Lease, Pool
from critpath.adapters.protocol import Chunk, Model, ModelRequest
from critpath.adapters.stats import EndpointStats
from critpath.adapters.wrapper import WrapperModel
from critpath.errors import ConfigError, ModelError, is_retryable

__all__ = ["Hedge", "HedgeBudget", "HedgeStatistics", "hedge_delay", "is_first_token"]

_log = get_logger(__name__)


def is_first_token(chunk: Chunk) -> bool:
    """Whether ``chunk`` carries an answer (text, tokens, finish or usage), not just the
    "accepted" marker (an empty ``Chunk()``)."""
    return bool(chunk.text or chunk.tokens or chunk.finish_reason is not None or chunk.usage)


def hedge_delay(
    stats: EndpointStats | None,
    *,
    quantile: float,
    min_samples: int,
    initial: float,
    min_delay: float,
) -> float:
    """How long to wait for a first token before hedging: the learned TTFT ``quantile``
    once ``stats`` holds ``min_samples`` TTFTs, else ``initial``; never below
    ``min_delay``.

    >>> hedge_delay(None, quantile=0.95, min_samples=20, initial=0.5, min_delay=0.01)
    0.5
    """
    if stats is not None and stats.ttft.count >= min_samples:
        learned = stats.ttft.quantile(quantile)
        if not math.isnan(learned):
            return max(min_delay, learned)
    return max(min_delay, initial)


class HedgeBudget:
    """A token bucket for hedges: ``deposit()`` per request adds ``rate`` tokens, up to
    ``burst``; ``spend()`` takes one if there is one. Starts empty, so hedges never
    exceed ``rate`` x requests.

    >>> b = HedgeBudget(0.5, burst=2.0)
    >>> b.deposit(); b.spend(), b.deposit(), b.spend()
    (False, None, True)
    """

    __slots__ = ("burst", "rate", "tokens")

    def __init__(self, rate: float, *, burst: float = 5.0) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"hedge budget must be in [0, 1], got {rate!r}")
        if not burst >= 1.0:
            raise ConfigError(f"hedge burst must be >= 1 (one hedge), got {burst!r}")
        self.rate = rate
        self.burst = burst
        self.tokens = 0.0

    def deposit(self) -> None:
        self.tokens = min(self.burst, self.tokens + self.rate)

    def spend(self) -> bool:
        if self.tokens >= 1.0 - 1e-9:  # 20 x 0.05 must buy a hedge despite rounding
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False


@dataclass(frozen=True, slots=True)
class HedgeStatistics:
    """What a ``Hedge`` has done so far.

    ``hedges_fired``: copies sent (after the delay, or at once when the primary failed:
    ``failovers``); ``hedges_won``: of those, the ones that answered first;
    ``hedges_skipped_budget``: hedges the budget refused; ``last_delay``: the delay
    (seconds) the latest request used.
    """

    requests: int
    hedges_fired: int
    hedges_won: int
    hedges_skipped_budget: int
    failovers: int
    budget_tokens: float
    last_delay: float

    @property
    def extra_request_fraction(self) -> float:
        """Extra requests sent per request (``hedges_fired / requests``)."""
        return self.hedges_fired / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "hedges_fired": self.hedges_fired,
            "hedges_won": self.hedges_won,
            "hedges_skipped_budget": self.hedges_skipped_budget,
            "failovers": self.failovers,
            "extra_request_fraction": self.extra_request_fraction,
            "budget_tokens": self.budget_tokens,
            "last_delay": self.last_delay,
        }


@dataclass(eq=False, slots=True)
class _Copy:
    """One copy of the request in flight: where it went, its stream, the task reading
    it up to its first token."""

    lease: Lease
    chunks: AsyncGenerator[Chunk, None]
    task: asyncio.Task[list[Chunk]]
    hedge: bool


async def _close(copy: _Copy) -> None:
    """Close a copy's stream (over HTTP: abort it on the server) and release its replica.

    A model error raised while closing a copy nobody reads any more is dropped.
    """
    try:
        await copy.chunks.aclose()
    except ModelError:
        pass
    finally:
        copy.lease.release()


async def _until_first_token(chunks: AsyncGenerator[Chunk, None]) -> list[Chunk]:
    """Read ``chunks`` up to and including the first token (or to its end)."""
    first: list[Chunk] = []
    async for chunk in chunks:
        first.append(chunk)
        if is_first_token(chunk):
            break
    return first


class Hedge(WrapperModel):
    """A ``Model`` that hedges each request across a ``Pool``'s replicas.

    ``replicas``: a ``Pool`` (its strategy places both copies; the hedge avoids the
    primary's replica while another is left) or a list of ``Model``s (pooled by least
    outstanding). ``delay``: fixed seconds before hedging; ``None`` learns it: the
    primary replica's TTFT ``quantile`` from its ``stats`` once it has ``min_samples``,
    ``initial_delay`` before, never below ``min_delay``. ``budget``: hedges per
    request at most (token bucket of ``burst``). The default budget, 10%, matches the
    default delay: hedging at the p95 TTFT asks for a hedge on ~5% of requests plus the
    stragglers; a budget below that refuses the hedges that matter (measured in
    docs/BENCHMARKS.md, ``critpath bench hedge``).
    """

    def __init__(
        self,
        replicas: Pool | Sequence[Model],
        *,
        delay: float | None = None,
        quantile: float = 0.95,
        budget: float = 0.10,
        burst: float = 5.0,
        min_delay: float = 0.005,
        initial_delay: float = 1.0,
        min_samples: int = 20,
        name: str | None = None,
    ) -> None:
        pool = replicas if isinstance(replicas, Pool) else Pool(replicas)
        super().__init__(pool, name=name)
        self.pool = pool
        if delay is not None and not delay >= 0:
            raise ConfigError(f"hedge delay must be >= 0 seconds, got {delay!r}")
        if not 0.0 < quantile < 1.0:
            raise ConfigError(f"hedge quantile must be in (0, 1), got {quantile!r}")
        if not min_delay >= 0 or not initial_delay >= 0:
            raise ConfigError("hedge min_delay and initial_delay must be >= 0 seconds")
        if min_samples < 1:
            raise ConfigError("hedge min_samples must be >= 1")
        self.delay = delay
        self.quantile = quantile
        self.min_delay = min_delay
        self.initial_delay = initial_delay
        self.min_samples = min_samples
        self.budget = HedgeBudget(budget, burst=burst)
        self._requests = 0
        self._fired = 0
        self._won = 0
        self._skipped = 0
        self._failovers = 0
        self._last_delay = math.nan

    def __repr__(self) -> str:
        return f"Hedge({self._name!r}, replicas={len(self.pool)}, budget={self.budget.rate})"

    def delay_for(self, model: Model) -> float:
        """Seconds to wait for ``model``'s first token before hedging."""
        if self.delay is not None:
            return self.delay
        stats = getattr(model, "stats", None)
        return hedge_delay(
            stats if isinstance(stats, EndpointStats) else None,
            quantile=self.quantile,
            min_samples=self.min_samples,
            initial=self.initial_delay,
            min_delay=self.min_delay,
        )

    def statistics(self) -> HedgeStatistics:
        """Requests, hedges fired / won / skipped for budget, and the extra load."""
        return HedgeStatistics(
            requests=self._requests,
            hedges_fired=self._fired,
            hedges_won=self._won,
            hedges_skipped_budget=self._skipped,
            failovers=self._failovers,
            budget_tokens=self.budget.tokens,
            last_delay=self._last_delay,
        )

    # ---- the protocol -----------------------------------------------------------------

    def _launch(self, request: ModelRequest, *, hedge: bool, avoid: Sequence[int]) -> _Copy:
        lease = self.pool.acquire(exclude=avoid)
        if hedge and request.request_id is not None:
            # A distinct id: servers may refuse a duplicate, and the copy is another request.
            request = request.model_copy(update={"request_id": request.request_id[:248] + "-hedge"})
        chunks = lease.model.stream(request)
        role = "hedge" if hedge else "primary"
        task = asyncio.create_task(
            _until_first_token(chunks), name=f"critpath-hedge:{self._name}:{role}"
        )
        return _Copy(lease, chunks, task, hedge)

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        loop = asyncio.get_running_loop()
        self._requests += 1
        self.budget.deposit()
        copies: list[_Copy] = []
        try:
            primary = self._launch(request, hedge=False, avoid=())
            copies.append(primary)
            delay = self._last_delay = self.delay_for(primary.lease.model)
            hedge_at: float | None = loop.time() + delay
            errors: list[BaseException] = []
            winner: _Copy | None = None
            while winner is None:
                racing = [c.task for c in copies if not c.task.done()]
                timeout = None if hedge_at is None else max(0.0, hedge_at - loop.time())
                done, _ = await asyncio.wait(
                    racing, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:  # the delay ran out with no first token: hedge if we may
                    hedge_at = None
                    self._try_hedge(request, copies, f"no first token within {delay:.3f}s")
                    continue
                for copy in copies:  # in launch order: the primary wins a tie
                    if copy.task not in done:
                        continue
                    exc = copy.task.exception()
                    if exc is None:
                        winner = copy
                        break
                    if not isinstance(exc, ModelError):
                        raise exc  # a bug, not a model failure: never masked by the other copy
                    errors.append(exc)
                if winner is not None or any(not c.task.done() for c in copies):
                    continue  # a winner; or one copy failed and the other still runs
                # Every copy sent so far failed before its first token.
                if hedge_at is not None and is_retryable(errors[0]):
                    hedge_at = None
                    why = f"the primary failed: {type(errors[0]).__name__}: {errors[0]}"
                    if self._try_hedge(request, copies, why):
                        self._failovers += 1
                        continue
                raise errors[0]
            if winner.hedge:
                self._won += 1
                metrics.record_hedge(self._name, won=True)
            if len(copies) > 1:
                _log.debug(
                    "hedge %s: request %s: the %s copy on %s won",
                    self._name, request.request_id, "hedge" if winner.hedge else "primary",
                    winner.lease.model.name,
                )  # fmt: skip
            losers = [c for c in copies if c is not winner]
            try:
                await cancel_and_wait([c.task for c in losers])
            finally:
                for copy in losers:
                    await _close(copy)
            for chunk in winner.task.result():
                yield chunk
            async for chunk in winner.chunks:
                yield chunk
        finally:
            try:
                await cancel_and_wait([c.task for c in copies])
            finally:
                for copy in copies:
                    await _close(copy)

    def _try_hedge(self, request: ModelRequest, copies: list[_Copy], why: str) -> bool:
        """Send the hedge copy if the budget allows; count what happened."""
        if not self.budget.spend():
            self._skipped += 1
            _log.debug(
                "hedge %s: request %s: no hedge (budget spent) after %s",
                self._name, request.request_id, why,
            )  # fmt: skip
            return False
        self._fired += 1
        metrics.record_hedge(self._name, won=False)
        copy = self._launch(request, hedge=True, avoid=[c.lease.index for c in copies])
        copies.append(copy)
        _log.debug(
            "hedge %s: request %s: hedge fired on %s (primary on %s) after %s",
            self._name, request.request_id, copy.lease.model.name,
            copies[0].lease.model.name, why,
        )  # fmt: skip
        return True
