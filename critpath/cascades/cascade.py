"""``Cascade``: cheapest tier first; escalate when its answer is not good enough or late.

Each ``Tier`` is a model, a scorer and a threshold: the tier's answer is scored
(``scorers``) and accepted or escalated (``decisions.accept``). **Hedged escalation**:
a tier that has not answered within its budget — the explicit ``budget``, else its
learned end-to-end latency quantile (``model.stats.e2e``), and under a deadline no
later than the next tier needs to finish (``decisions.escalation_delay``) — starts
the next tier early, without stopping itself. Whichever *accepted* answer comes first
wins; every other tier still running is cancelled (streams closed) and awaited. When
no tier's answer is accepted, the highest tier that answered gives the answer
(``accepted=False``); only when every tier fails does it raise ``CascadeFailedError``.

``await cascade.decide(request)`` returns that call's ``CascadeResult``: which tier
answered, its acceptance, every escalation and why (abstained, low confidence
``x < t``, timeout, error), and each tier's report; nothing about a call is kept on
the ``Cascade``, so concurrent calls each get their own. ``stream()`` is ``decide``
then the answer as one chunk (acceptance needs the whole answer first; ``decider``).
A tier's model can be a ``Vote`` or another ``Cascade`` (any ``Decider``): the scorer
then sees its result (``AgreementScorer`` reads a vote's agreement).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from critpath import metrics
from critpath._tasks import cancel_and_wait
from critpath.adapters.completion import Completion, complete
from critpath.adapters.logs import get_logger
from critpath.adapters.protocol import Model, ModelRequest
from critpath.adapters.stats import EndpointStats
from critpath.cascades.decider import Decider
from critpath.cascades.decisions import Acceptance, Reason, Score, accept, escalation_delay
from critpath.cascades.scorers import Candidate, HasConfidence, Scorer
from critpath.deadlines import remaining
from critpath.errors import ConfigError, ModelError
from critpath.telemetry_genai import DecisionKind, decision_span

__all__ = [
    "Cascade",
    "CascadeFailedError",
    "CascadeResult",
    "Escalation",
    "Tier",
    "TierReport",
]

_log = get_logger(__name__)


class CascadeFailedError(ModelError):
    """Every tier failed; ``errors`` holds each tier's exception."""

    def __init__(self, name: str, errors: Sequence[BaseException]) -> None:
        super().__init__(f"cascade {name!r}: every tier failed", model=name)
        self.errors = tuple(errors)


@dataclass(frozen=True, slots=True)
class Tier:
    """One step of a cascade: ``model``, its ``scorer`` (``None``: accept any answer)
    and ``threshold`` (accept when confidence >= it). ``budget``: seconds before the
    next tier starts early; ``None`` learns it: the model's end-to-end latency at
    ``quantile`` from ``model.stats`` once it has ``min_samples`` (else no early start
    unless a deadline is in force). ``hedge=False``: never start the next tier early;
    it starts only when this tier's answer is escalated."""

    model: Model
    scorer: Scorer | None = None
    threshold: float = 0.0
    budget: float | None = None
    quantile: float = 0.95
    min_samples: int = 20
    hedge: bool = True

    def __post_init__(self) -> None:
        if self.budget is not None and not self.budget >= 0:
            raise ConfigError(f"tier budget must be >= 0 seconds, got {self.budget!r}")
        if not 0.0 < self.quantile < 1.0:
            raise ConfigError(f"tier quantile must be in (0, 1), got {self.quantile!r}")

    @property
    def name(self) -> str:
        return self.model.name

    def learned_latency(self) -> float | None:
        """The model's end-to-end latency at ``quantile``, once learned; else ``None``."""
        stats = getattr(self.model, "stats", None)
        if isinstance(stats, EndpointStats) and stats.e2e.count >= self.min_samples:
            value = stats.e2e.quantile(self.quantile)
            return None if math.isnan(value) else value
        return None


@dataclass(frozen=True, slots=True)
class Escalation:
    """The cascade moved past ``from_tier`` because of ``reason`` (``detail`` says more)
    at ``at`` seconds; ``started``: this escalation started tier ``to_tier`` (``False``
    when it was already running, e.g. after a timeout, or there is no next tier)."""

    from_tier: int
    to_tier: int | None
    reason: Reason
    detail: str
    at: float
    started: bool


@dataclass(frozen=True, slots=True)
class TierReport:
    """What became of one tier: ``status`` and its times (seconds from the start);
    ``early``: started by a timeout (hedged escalation) before the tier below ended."""

    index: int
    name: str
    status: Literal["accepted", "rejected", "failed", "cancelled", "not_started"]
    started_at: float | None = None
    ended_at: float | None = None
    early: bool = False
    acceptance: Acceptance | None = None
    completion: Completion | None = None
    error: BaseException | None = None
    result: HasConfidence | None = None


@dataclass(frozen=True, slots=True)
class CascadeResult:
    """The outcome of one cascade call: the answer, the ``tier`` that gave it, whether
    it was ``accepted`` (``False``: no tier's answer was; the highest that answered
    gave it), every ``escalation``, each tier's report, ``elapsed`` seconds."""

    name: str
    completion: Completion
    tier: int
    tier_name: str
    accepted: bool
    acceptance: Acceptance
    escalations: tuple[Escalation, ...]
    tiers: tuple[TierReport, ...]
    elapsed: float

    @property
    def confidence(self) -> float | None:
        return self.acceptance.confidence


@dataclass(frozen=True, slots=True)
class _Outcome:
    completion: Completion
    result: HasConfidence | None
    score: Score | None
    acceptance: Acceptance
    ended_at: float


class Cascade(Decider[CascadeResult]):
    """A ``Model`` that asks its tiers cheapest first and answers with the first
    accepted answer (see the module docstring)."""

    def __init__(self, tiers: Sequence[Tier], *, name: str | None = None) -> None:
        if not tiers:
            raise ConfigError("a Cascade needs at least one tier")
        self.tiers = tuple(tiers)
        super().__init__(
            [t.model for t in self.tiers],
            name=name or "cascade(" + ">".join(t.name for t in self.tiers) + ")",
        )

    def __repr__(self) -> str:
        return f"Cascade({self._name!r}, tiers={len(self.tiers)})"

    def budget_for(self, index: int) -> tuple[float | None, str]:
        """Seconds tier ``index`` may run before the next starts, and where that came from."""
        if index + 1 >= len(self.tiers):
            return None, "last tier"
        tier = self.tiers[index]
        if not tier.hedge:
            return None, "hedging off"
        return escalation_delay(
            budget=tier.budget,
            learned=tier.learned_latency(),
            remaining=remaining(),
            next_expected=self.tiers[index + 1].learned_latency(),
        )

    async def decide(self, request: ModelRequest) -> CascadeResult:
        """Run the cascade for ``request``; tiers still running at the end are cancelled.
        Traced as a span ``critpath.cascade {name}`` over its tiers' calls."""
        run = _CascadeRun(self, request)
        with decision_span(DecisionKind.CASCADE, self._name) as span:
            try:
                result = await run.go()
            finally:
                await cancel_and_wait(run.tasks)
                for e in run.escalations:
                    metrics.record_cascade_escalation(self._name, e.reason.value)
            if span.recording:
                span.set(_span_attributes(result))
        _log.debug(
            "cascade %s: request %s: answered by tier %d (%s), %s, at %.3fs",
            self.name, request.request_id, result.tier, result.tier_name,
            "accepted" if result.accepted else "none accepted: the highest that answered",
            result.elapsed,
        )  # fmt: skip
        self.observe(result.elapsed)
        return result

    async def run_tier(self, index: int, request: ModelRequest) -> _Outcome:
        """Ask tier ``index`` and score its answer."""
        tier = self.tiers[index]
        if getattr(tier.scorer, "needs_logprobs", False) and not request.logprobs:
            request = request.model_copy(update={"logprobs": True})
        result: HasConfidence | None = None
        if isinstance(tier.model, Decider):
            decided = await tier.model.decide(request)
            completion, result = decided.completion, decided
        else:
            completion = await complete(tier.model, request)
        score = None
        if tier.scorer is not None:
            score = await tier.scorer.score(Candidate(request, completion, result))
        ended = asyncio.get_running_loop().time()
        return _Outcome(completion, result, score, accept(score, tier.threshold), ended)


class _CascadeRun:
    """The state of one ``Cascade.decide`` call."""

    def __init__(self, cascade: Cascade, request: ModelRequest) -> None:
        self.cascade = cascade
        self.request = request
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.tasks: dict[asyncio.Task[_Outcome], int] = {}
        self.started: dict[int, float] = {}
        self.early: set[int] = set()
        self.ended: dict[int, _Outcome | BaseException] = {}
        self.escalations: list[Escalation] = []
        self.timer_at: float | None = None
        self.timer_why = ""

    def now(self) -> float:
        return self.loop.time() - self.t0

    def start(self, index: int) -> None:
        task = asyncio.create_task(
            self.cascade.run_tier(index, self.request),
            name=f"critpath-cascade:{self.cascade.name}:{index}",
        )
        self.tasks[task] = index
        self.started[index] = self.now()
        delay, source = self.cascade.budget_for(index)
        self.timer_at = None if delay is None else self.loop.time() + delay
        self.timer_why = f"no answer within {delay:.3f}s ({source})" if delay is not None else ""

    def escalate(self, index: int, reason: Reason, detail: str) -> None:
        nxt = index + 1 if index + 1 < len(self.cascade.tiers) else None
        starts = nxt is not None and nxt not in self.started and index == max(self.started)
        self.escalations.append(Escalation(index, nxt, reason, detail, self.now(), starts))
        _log.debug(
            "cascade %s: request %s: escalated past tier %d (%s) at %.3fs: %s: %s%s",
            self.cascade.name, self.request.request_id, index, self.cascade.tiers[index].name,
            self.now(), reason.value, detail, f"; tier {nxt} starts" if starts else "",
        )  # fmt: skip
        if starts:
            assert nxt is not None
            if reason is Reason.TIMEOUT:
                self.early.add(nxt)
            self.start(nxt)
        elif index == max(self.started):
            self.timer_at = None

    async def go(self) -> CascadeResult:
        self.start(0)
        while True:
            pending = [t for t in self.tasks if not t.done()]
            if not pending:
                return self.finish(None)
            timeout = None if self.timer_at is None else max(0.0, self.timer_at - self.loop.time())
            done, _ = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                self.escalate(max(self.started), Reason.TIMEOUT, self.timer_why)
                continue
            for task in sorted(done, key=lambda t: self.tasks[t]):
                index = self.tasks[task]
                exc = task.exception()
                if exc is not None:
                    if not isinstance(exc, ModelError):
                        raise exc  # a bug, not a model failure: never escalated around
                    self.ended[index] = exc
                    self.escalate(index, Reason.ERROR, f"{type(exc).__name__}: {exc}")
                    continue
                outcome = task.result()
                self.ended[index] = outcome
                if outcome.acceptance.accepted:
                    return self.finish(index)
                self.escalate(index, outcome.acceptance.reason, str(outcome.acceptance))

    def finish(self, winner: int | None) -> CascadeResult:
        answered = [i for i, o in self.ended.items() if isinstance(o, _Outcome)]
        if winner is None:
            if not answered:
                errors = [e for e in self.ended.values() if isinstance(e, BaseException)]
                raise CascadeFailedError(self.cascade.name, errors)
            winner = max(answered)
        chosen = self.ended[winner]
        assert isinstance(chosen, _Outcome)
        return CascadeResult(
            name=self.cascade.name,
            completion=chosen.completion,
            tier=winner,
            tier_name=self.cascade.tiers[winner].name,
            accepted=chosen.acceptance.accepted,
            acceptance=chosen.acceptance,
            escalations=tuple(self.escalations),
            tiers=tuple(self.report(i) for i in range(len(self.cascade.tiers))),
            elapsed=self.now(),
        )

    def report(self, index: int) -> TierReport:
        name = self.cascade.tiers[index].name
        if index not in self.started:
            return TierReport(index, name, "not_started")
        start, early = self.started[index], index in self.early
        o = self.ended.get(index)
        if o is None:
            return TierReport(index, name, "cancelled", start, self.now(), early)
        if isinstance(o, BaseException):
            return TierReport(index, name, "failed", start, None, early, error=o)
        status: Literal["accepted", "rejected"] = (
            "accepted" if o.acceptance.accepted else "rejected"
        )
        return TierReport(
            index, name, status, start, o.ended_at - self.t0, early,
            o.acceptance, o.completion, result=o.result,
        )  # fmt: skip


def _span_attributes(result: CascadeResult) -> dict[str, str | bool | int | float | list[str]]:
    """A cascade's outcome on its span: the tier that answered, whether it was
    accepted, each escalation (``tier: reason``) and each tier's status."""
    attrs: dict[str, str | bool | int | float | list[str]] = {
        "critpath.cascade.tier": result.tier,
        "critpath.cascade.tier_name": result.tier_name,
        "critpath.cascade.accepted": result.accepted,
        "critpath.cascade.escalations": [
            f"{e.from_tier}: {e.reason.value}" for e in result.escalations
        ],
        "critpath.cascade.tiers": [f"{t.name}: {t.status}" for t in result.tiers],
    }
    if result.confidence is not None:
        attrs["critpath.confidence"] = result.confidence
    return attrs
