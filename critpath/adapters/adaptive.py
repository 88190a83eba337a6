"""``Adaptive``: send each request to the best model predicted to answer in time.

``Adaptive([strong, medium, small])`` is a ``Model`` over candidates ordered by
quality, best first. For each request it predicts every candidate's end-to-end
latency and sends the request to the best one predicted to finish within the time
left — the fastest when none is (or, with ``on_miss=OnMiss.SHED``, it refuses the
request with ``LoadShedError``: admission control with the same predictions).

**The time left** is the tightest of: the request's ``timeout`` (an SLO per request),
the deadline scope in force (``critpath.deadlines``), the running step's latest
finish and its run's deadline (``StepContext``), and ``slo`` given to the wrapper.
With none of these, the best candidate answers.

**The prediction** (``brownout.predict``): the queue in front of the candidate, plus
its time to first token, plus its time per output token times the output tokens
expected of it (the ``quantile`` of the lengths it answered, capped by
``max_tokens``). Everything is learned: the wrapper times every call it routes (TTFT
less the time the request queued before the server accepted it, TPOT, tokens), and
until it has its own figures it reads the candidate's ``stats`` (``EndpointStats``).
A candidate with nothing learned is predicted to fit (it is tried, so it is learned).
The queue: requests outstanding on the candidate beyond its ``capacity``, each
holding a slot for its mean service time. Outstanding: the wrapper's own requests in
flight; a ``Pool``'s own count of outstanding requests; and for candidates that
report their server's load (``load()``: vLLM's ``/metrics`` through
``OpenAICompatible``, the simulator's scheduler) the requests running and waiting
there at the last ``refresh_load()`` (or inside ``async with adaptive.watch(s):``)
plus what was sent and finished since. Capacity: given per candidate
(``Candidate(model, capacity=8)``), else learned from that load (the requests running
while others wait; running / KV-cache use). Without a capacity no queue is
predicted, and the learned TTFT includes queueing instead.

**Brownout with hysteresis** (``brownout.Brownout``): a candidate predicted to miss is
*tripped* and comes back only when it fits with a margin (``recover``), so the
choice degrades smoothly under load and recovers when it passes, without flapping.

**Deadlines reach the request**: with ``cap_tokens=True``, when the time left cannot
cover ``max_tokens`` at the chosen candidate's learned TPOT, ``max_tokens`` is cut to
what fits; an answer that then stops for length ends with ``finish_reason ==
"deadline"`` (``FINISH_DEADLINE``): cut by the deadline, not by the caller's limit.

**Every decision is recorded** (``Decision``: candidate, predicted and budget ms, why,
every candidate's prediction, the token cap) — never on the wrapper, which concurrent
requests share: in the running step's ``StepContext.model_choices`` (the run report
shows them), on the call's model span (attributes ``critpath.adaptive.*``), and for
callers outside a run in ``with record_decisions() as log:``. ``await
adaptive.call(request)`` returns one call's answer with its decision.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import aclosing, asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace

from critpath import metrics, telemetry
from critpath._tasks import polling
from critpath.adapters.brownout import Brownout, OnMiss, Outlook, Why, choose, predict
from critpath.adapters.completion import Completion, complete
from critpath.adapters.pool import LoadReporter, Pool
from critpath.adapters.prometheus import ServerLoad
from critpath.adapters.protocol import Chunk, Model, ModelRequest
from critpath.adapters.stats import EndpointStats, StreamClock
from critpath.adapters.wrapper import WrapperModel
from critpath.deadlines import remaining
from critpath.errors import ConfigError, LoadShedError, ModelError
from critpath.estimates import LatencyEstimate
from critpath.orchestrator.context import ModelChoice, current_step

__all__ = [
    "FINISH_DEADLINE",
    "Adaptive",
    "AdaptiveStatistics",
    "Candidate",
    "CandidateStatistics",
    "Decision",
    "LoadShedError",
    "OnMiss",
    "Prediction",
    "Routed",
    "Why",
    "record_decisions",
]

FINISH_DEADLINE = "deadline"
"""The finish reason of an answer cut short because ``max_tokens`` was capped to fit
the time left."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A model to choose from; ``capacity``: the requests it serves at once (``None``:
    learn it from the load its server reports)."""

    model: Model
    capacity: int | None = None

    def __post_init__(self) -> None:
        if self.capacity is not None and self.capacity < 1:
            raise ConfigError(f"capacity must be >= 1, got {self.capacity!r}")


@dataclass(frozen=True, slots=True)
class Prediction:
    """One candidate as predicted for one request: seconds to the end of its answer
    (``None``: not learned), of which queueing, and whether it was predicted to fit."""

    model: str
    predicted_s: float | None
    queue_s: float
    fits: bool | None


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one request went and why (``index``/``model``: ``None`` when shed)."""

    policy: str
    index: int | None
    model: str | None
    predicted_s: float | None
    budget_s: float | None
    why: Why
    predictions: tuple[Prediction, ...]
    max_tokens: int | None = None
    """The cap put on ``max_tokens`` to fit the time left (``None``: not capped)."""

    def as_choice(self) -> ModelChoice:
        return ModelChoice(
            policy=self.policy,
            model=self.model or "-",
            predicted_ms=None if self.predicted_s is None else self.predicted_s * 1000,
            budget_ms=None if self.budget_s is None else self.budget_s * 1000,
            why=str(self.why),
        )


@dataclass(frozen=True, slots=True)
class Routed:
    """One call's answer and the decision that placed it."""

    completion: Completion
    decision: Decision

    @property
    def cut_by_deadline(self) -> bool:
        return self.completion.finish_reason == FINISH_DEADLINE


@dataclass(frozen=True, slots=True)
class CandidateStatistics:
    name: str
    picks: int
    in_flight: int
    outstanding: float
    capacity: float | None
    tripped: bool
    ttft_p50_ms: float
    tpot_ms: float
    tokens_p50: float


@dataclass(frozen=True, slots=True)
class AdaptiveStatistics:
    name: str
    decisions: dict[str, int]
    trips: int
    recoveries: int
    shed: int
    capped: int
    candidates: tuple[CandidateStatistics, ...]


_LOGS: ContextVar[tuple[list[Decision], ...]] = ContextVar("critpath_adaptive_logs", default=())


@contextmanager
def record_decisions() -> Iterator[list[Decision]]:
    """Collect the decisions of the ``Adaptive`` calls made inside the block (in this
    task and the tasks it starts), in order: for callers outside a run. Blocks nest:
    an inner block's decisions are also the outer's."""
    log: list[Decision] = []
    token = _LOGS.set((*_LOGS.get(), log))
    try:
        yield log
    finally:
        _LOGS.reset(token)


@dataclass(slots=True)
class _State:
    """What the wrapper knows about one candidate (its own counters and estimates)."""

    model: Model
    capacity: int | None
    ttft: LatencyEstimate = field(default_factory=LatencyEstimate)  # queueing included
    service_ttft: LatencyEstimate = field(default_factory=LatencyEstimate)  # excluded
    tpot: LatencyEstimate = field(default_factory=LatencyEstimate)
    tokens: LatencyEstimate = field(default_factory=LatencyEstimate)
    in_flight: int = 0
    picks: int = 0
    server: float | None = None  # outstanding on the server at the last refresh
    learned_capacity: float | None = None
    sent_since: int = 0
    done_since: int = 0

    def stats(self) -> EndpointStats | None:
        s = getattr(self.model, "stats", None)
        return s if isinstance(s, EndpointStats) else None

    def outstanding(self) -> float:
        n = float(self.in_flight)
        if isinstance(self.model, Pool):
            n = max(n, float(self.model.statistics().outstanding))
        if self.server is not None:
            n = max(n, self.server + self.sent_since - self.done_since)
        return n

    def observe_load(self, load: ServerLoad | None) -> None:
        self.sent_since = self.done_since = 0
        if load is None:
            self.server = None
            return
        self.server = load.outstanding
        if load.waiting > 0 and load.running >= 1:
            self.learned_capacity = load.running
        elif load.kv_cache_usage is not None and load.kv_cache_usage > 0.05 and load.running:
            self.learned_capacity = max(load.running, round(load.running / load.kv_cache_usage))


class Adaptive(WrapperModel):
    """A ``Model`` choosing among ``candidates`` (best first) per request; see the
    module docstring. ``quantile``: of TTFT and output length, for the prediction;
    ``recover``: the margin a tripped candidate must fit with; ``expected_tokens``: the
    output length assumed before one is learned."""

    def __init__(
        self,
        candidates: Sequence[Model | Candidate],
        *,
        slo: float | None = None,
        quantile: float = 0.9,
        recover: float = 0.8,
        cap_tokens: bool = False,
        on_miss: OnMiss = OnMiss.FASTEST,
        expected_tokens: int | None = None,
        name: str | None = None,
    ) -> None:
        if not candidates:
            raise ConfigError("Adaptive needs at least one candidate")
        if slo is not None and not slo > 0:
            raise ConfigError(f"slo must be > 0 seconds, got {slo!r}")
        if not 0.0 < quantile < 1.0:
            raise ConfigError(f"quantile must be in (0, 1), got {quantile!r}")
        if expected_tokens is not None and expected_tokens < 1:
            raise ConfigError("expected_tokens must be >= 1")
        cands = [c if isinstance(c, Candidate) else Candidate(c) for c in candidates]
        models = [c.model for c in cands]
        super().__init__(models, name=name or f"adaptive({','.join(m.name for m in models)})")
        self.slo = slo
        self.quantile = quantile
        self.cap_tokens = cap_tokens
        self.on_miss = OnMiss(on_miss)
        self.expected_tokens = expected_tokens
        self.brownout = Brownout(len(cands), recover=recover)
        self.stats = EndpointStats()
        """This wrapper's own latency, learned like an endpoint's (a cascade tier's budget)."""
        self._states = [_State(c.model, c.capacity) for c in cands]
        self._why: dict[str, int] = {}
        self._shed = 0
        self._capped = 0
        self._probe_bug: Exception | None = None

    # ---- deciding ---------------------------------------------------------------------

    def budget(self, request: ModelRequest) -> float | None:
        """Seconds left for ``request`` (see the module docstring), or ``None``."""
        limits = [request.timeout, remaining(), self.slo]
        step = current_step()
        if step is not None:
            limits.append(step.remaining())
            if step.latest_finish is not None:
                limits.append(step.latest_finish - asyncio.get_running_loop().time())
        known = [x for x in limits if x is not None]
        return min(known) if known else None

    def outlook(self, index: int) -> Outlook:
        """What is known now about candidate ``index``."""
        st = self._states[index]
        q = self.quantile
        capacity = st.capacity if st.capacity is not None else st.learned_capacity
        own = st.service_ttft if capacity is not None else st.ttft
        ttft: float | None = None
        if own.count:
            ttft = own.quantile(q)
        else:
            stats = st.stats()
            if stats is not None and stats.ttft.count:
                ttft = stats.ttft.quantile(q)
        tpot: float | None = None
        if st.tpot.count:
            tpot = st.tpot.ewma
        else:
            stats = st.stats()
            if stats is not None and stats.tpot.count:
                tpot = stats.tpot.ewma
        tokens: float | None = float(self.expected_tokens) if self.expected_tokens else None
        mean_tokens = tokens
        if st.tokens.count:
            tokens, mean_tokens = st.tokens.quantile(q), st.tokens.mean
        service = None
        if ttft is not None and mean_tokens is not None:
            mean_ttft = own.mean if own.count else ttft
            service = mean_ttft + (tpot or 0.0) * max(0.0, mean_tokens - 1.0)
        return Outlook(st.model.name, ttft, tpot, tokens, service, st.outstanding(), capacity)

    def choose(self, request: ModelRequest) -> Decision:
        """Decide where ``request`` goes now (and update the brownout state)."""
        budget = self.budget(request)
        outlooks = [self.outlook(i) for i in range(len(self._states))]
        predicted = [predict(o, request.max_tokens) for o in outlooks]
        choice = choose(predicted, budget, self.brownout, self.on_miss)
        preds = tuple(
            Prediction(o.name, p, o.queue(), f)
            for o, p, f in zip(outlooks, predicted, choice.fits, strict=True)
        )
        self._why[choice.why] = self._why.get(choice.why, 0) + 1
        index = choice.index
        if index is None:
            self._shed += 1
            known = [p for p in predicted if p is not None]
            return Decision(self._name, None, None, min(known) if known else None, budget,
                            choice.why, preds)  # fmt: skip
        cap = None
        if self.cap_tokens and budget is not None:
            cap = _token_cap(outlooks[index], budget, request.max_tokens)
            if cap is not None:
                self._capped += 1
        return Decision(self._name, index, outlooks[index].name, predicted[index], budget,
                        choice.why, preds, cap)  # fmt: skip

    # ---- the protocol -----------------------------------------------------------------

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        decision = self.choose(request)
        _record(decision)
        index = decision.index
        if index is None:
            assert decision.budget_s is not None
            metrics.record_shed("predicted_late", self._name)
            raise LoadShedError(self._name, decision.predicted_s, decision.budget_s)
        st = self._states[index]
        sent = request
        if decision.max_tokens is not None:
            sent = request.model_copy(update={"max_tokens": decision.max_tokens})
        span = telemetry.start_model_span(self._name, _span_attributes(decision))
        st.in_flight += 1
        st.picks += 1
        st.sent_since += 1
        self.stats.requests += 1
        self.stats.in_flight += 1
        clock = StreamClock(self.stats.ttft.observe)
        finished = False
        error: BaseException | None = None
        try:
            async with aclosing(st.model.stream(sent)) as chunks:
                async for chunk in chunks:
                    if chunk.text or chunk.tokens:
                        clock.token(chunk.tokens or 1)
                    else:
                        clock.accepted()
                    if chunk.finish_reason == "length" and decision.max_tokens is not None:
                        chunk = replace(chunk, finish_reason=FINISH_DEADLINE)
                    yield chunk
            finished = True
        except BaseException as exc:
            error = exc
            if isinstance(exc, ModelError):
                self.stats.record_error(exc)
            raise
        finally:
            st.in_flight -= 1
            st.done_since += 1
            self.stats.in_flight -= 1
            timings = clock.finish()
            if finished:
                self.stats.record(timings)
                _learn(st, timings.ttft, timings.queued, timings.tpot, timings.tokens,
                       capped=decision.max_tokens is not None)  # fmt: skip
            telemetry.end_model_span(span, ttft=timings.ttft, e2e=timings.e2e,
                                     tokens=timings.tokens, error=error)  # fmt: skip

    async def call(self, request: ModelRequest) -> Routed:
        """Stream ``request`` to its end: the answer and this call's decision."""
        with record_decisions() as log:
            completion = await complete(self, request)
        return Routed(completion, log[0])

    # ---- live load --------------------------------------------------------------------

    async def refresh_load(self) -> None:
        """Ask every candidate that reports its server's load for it, concurrently."""
        probes = [(st, st.model) for st in self._states if isinstance(st.model, LoadReporter)]
        if not probes:
            return
        async with asyncio.TaskGroup() as tg:
            tasks = [(st, tg.create_task(self._probe(m))) for st, m in probes]
        for st, task in tasks:
            st.observe_load(task.result())

    async def _probe(self, reporter: LoadReporter) -> ServerLoad | None:
        try:
            return await reporter.load()
        except ModelError:
            return None
        except Exception as exc:  # a bug in a probe: keep polling, raise it at the end
            if self._probe_bug is None:
                self._probe_bug = exc
            return None

    @asynccontextmanager
    async def watch(self, interval: float = 1.0) -> AsyncIterator[Adaptive]:
        """Refresh the candidates' load every ``interval`` seconds while the block runs
        (the polling task is cancelled and awaited on exit)."""
        if not interval > 0:
            raise ConfigError("watch interval must be > 0 seconds")

        self._probe_bug = None
        name = f"critpath-adaptive-watch:{self._name}"
        async with polling(self.refresh_load, interval, name=name, bug=lambda: self._probe_bug):
            yield self

    # ---- reporting --------------------------------------------------------------------

    def statistics(self) -> AdaptiveStatistics:
        """Decisions by reason, trips and recoveries, and each candidate as seen now."""
        tripped = self.brownout.tripped
        cands = []
        for i, st in enumerate(self._states):
            o = self.outlook(i)
            cands.append(CandidateStatistics(
                name=st.model.name, picks=st.picks, in_flight=st.in_flight,
                outstanding=o.outstanding, capacity=o.capacity, tripped=tripped[i],
                ttft_p50_ms=_ms(st.service_ttft.p50 if o.capacity else st.ttft.p50),
                tpot_ms=_ms(st.tpot.ewma), tokens_p50=st.tokens.p50,
            ))  # fmt: skip
        return AdaptiveStatistics(
            name=self._name,
            decisions=dict(self._why),
            trips=self.brownout.trips,
            recoveries=self.brownout.recoveries,
            shed=self._shed,
            capped=self._capped,
            candidates=tuple(cands),
        )


def _token_cap(outlook: Outlook, budget: float, max_tokens: int) -> int | None:
    """The ``max_tokens`` that fits ``budget`` at the candidate's TPOT, if lower."""
    if outlook.ttft is None or not outlook.tpot:
        return None
    left = budget - outlook.queue() - outlook.ttft
    fit = 1 + math.floor(left / outlook.tpot) if left > 0 else 1
    return max(1, fit) if fit < max_tokens else None


def _learn(
    st: _State,
    ttft: float | None,
    queued: float | None,
    tpot: float | None,
    tokens: int,
    *,
    capped: bool,
) -> None:
    if ttft is not None:
        st.ttft.observe(ttft)
        st.service_ttft.observe(max(0.0, ttft - (queued or 0.0)))
    if tpot is not None:
        st.tpot.observe(max(0.0, tpot))
    if tokens and not capped:
        st.tokens.observe(float(tokens))


def _record(decision: Decision) -> None:
    for log in _LOGS.get():
        log.append(decision)
    step = current_step()
    if step is not None:
        step.model_choices.append(decision.as_choice())


def _span_attributes(d: Decision) -> dict[str, str | float | int]:
    attrs: dict[str, str | float | int] = {
        "critpath.adaptive.model": d.model or "-",
        "critpath.adaptive.why": str(d.why),
    }
    if d.predicted_s is not None:
        attrs["critpath.adaptive.predicted_ms"] = d.predicted_s * 1000
    if d.budget_s is not None:
        attrs["critpath.adaptive.budget_ms"] = d.budget_s * 1000
    if d.max_tokens is not None:
        attrs["critpath.adaptive.max_tokens"] = d.max_tokens
    return attrs


def _ms(seconds: float) -> float:
    return seconds * 1000 if math.isfinite(seconds) else math.nan
