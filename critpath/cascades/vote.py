"""``Vote``: ask N models (or N samples of one) at once; the most-voted answer wins.

Answers are read with an answer kind (``answers``: ``kind="math"``, ``"number"``,
``"python_literal"``, ``"choice"``, ``"text"`` or your own; by default the
multiple-choice letter, else the cleaned text) and **equivalent answers vote
together**: ``0.5``, ``1/2`` and ``\\frac{1}{2}`` are one answer under ``math``. Each
group's key is the normal form of its first answer, and the winner's text is the
answer of one of the group's own voters. Votes are counted with optional weights. **Early quorum**:
after every vote ``decisions.tally`` says whether the outcome can still change; once
it cannot (the leader can no longer be overtaken, or the required agreement is met or
out of reach), the stragglers are cancelled at once: their tasks cancelled and their
streams closed (over HTTP the server aborts them), and the vote waits until they have
ended. A voter that fails with a ``ModelError`` is reported and the vote goes on with
the rest; only when every voter fails does the vote raise ``VoteFailedError``.

``await vote.decide(request)`` returns that call's ``VoteResult`` (winner, agreement,
ballots, who was cancelled or failed, timings); nothing about a call is kept on the
``Vote``, so concurrent calls each get their own. ``vote.stream(request)`` is
``decide`` then the winning voter's answer as one chunk (``decider``). A ``Vote`` is a
``Model``, so it can be a cascade tier (its agreement is the tier's confidence:
``scorers.AgreementScorer``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal

from critpath import metrics
from critpath._clock import now as _now
from critpath._tasks import cancel_and_wait
from critpath.adapters.completion import Completion, complete
from critpath.adapters.logs import get_logger
from critpath.adapters.protocol import Chunk, Model, ModelRequest
from critpath.adapters.wrapper import WrapperModel
from critpath.cascades.answers import AnswerKind, AnswerKindLike, as_kind
from critpath.cascades.decider import Decider
from critpath.cascades.decisions import Normaliser, Tally, tally
from critpath.errors import ConfigError, ModelError
from critpath.telemetry_genai import DecisionKind, capture_content, decision_span

__all__ = ["Ballot", "Seeded", "Vote", "VoteFailedError", "VoteResult"]

_log = get_logger(__name__)


class VoteFailedError(ModelError):
    """Every voter failed; ``errors`` holds each voter's exception."""

    def __init__(self, name: str, errors: Sequence[BaseException]) -> None:
        super().__init__(f"vote {name!r}: all {len(errors)} voters failed", model=name)
        self.errors = tuple(errors)


@dataclass(frozen=True, slots=True)
class Ballot:
    """One voter's part in a vote.

    ``status``: ``answered``, ``abstained`` (no answer of the vote's kind, or "I don't
    know"), ``failed`` (``error`` holds why) or ``cancelled`` (a straggler stopped by
    early quorum); ``answer``: the key of the group of equivalent answers it joined
    (the normal form of that group's first answer); ``extracted``: its own answer as it
    wrote it; ``elapsed``: seconds from the start of the vote to its end.
    """

    index: int
    voter: str
    weight: float
    status: Literal["answered", "abstained", "failed", "cancelled"]
    answer: str | None = None
    completion: Completion | None = None
    error: BaseException | None = None
    elapsed: float = 0.0
    extracted: str | None = None


@dataclass(frozen=True, slots=True)
class VoteResult:
    """The outcome of one vote.

    ``winner``: the normalised winning answer (``None``: every voter abstained);
    ``completion``: the winning answer as its first voter gave it (the first abstainer's
    if nobody answered); ``agreement``: the winner's weight over the weight that
    responded (answered or abstained) — the vote's confidence; ``min_agreement``:
    counting cancelled voters as dissent; ``ballots`` in voter order; ``stopped_early``:
    early quorum cancelled stragglers; ``quorum_reached``: the required agreement was
    met (``None`` without one); ``elapsed``: seconds.
    """

    name: str
    winner: str | None
    completion: Completion
    agreement: float
    min_agreement: float
    ballots: tuple[Ballot, ...]
    stopped_early: bool
    quorum_reached: bool | None
    elapsed: float
    tally: Tally

    @property
    def confidence(self) -> float | None:
        return self.agreement

    @property
    def cancelled(self) -> tuple[int, ...]:
        return tuple(b.index for b in self.ballots if b.status == "cancelled")

    @property
    def failed(self) -> tuple[int, ...]:
        return tuple(b.index for b in self.ballots if b.status == "failed")

    @property
    def errors(self) -> tuple[BaseException, ...]:
        return tuple(b.error for b in self.ballots if b.error is not None)

    def votes(self) -> dict[str, float]:
        """Weight per normalised answer."""
        out: dict[str, float] = {}
        for b in self.ballots:
            if b.answer is not None:
                out[b.answer] = out.get(b.answer, 0.0) + b.weight
        return out


class Seeded(WrapperModel):
    """``model`` with every request's ``seed`` set to ``seed``: one sample of N."""

    def __init__(self, model: Model, seed: int) -> None:
        super().__init__(model, name=f"{model.name}#seed{seed}")
        self.seed = seed

    @property
    def model(self) -> Model:
        return self.wrapped[0]

    def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        return self.model.stream(request.model_copy(update={"seed": self.seed}))


class Vote(Decider[VoteResult]):
    """A ``Model`` that asks every voter at once and answers with the winner.

    ``kind``: how answers are read and which are equivalent (an ``AnswerKind`` or its
    name; default ``answers.DEFAULT_KIND``); ``normalise``: the older way, a function
    of the whole reply -> vote key (``None``: abstains), equal keys voting together.
    ``weights``: one per
    voter (default 1 each). ``quorum``: ``None`` for plurality (stop once the leader
    cannot be overtaken) or a fraction in (0, 1]: stop once the leader holds that
    share of all voters' weight, or can no longer reach it. ``early_stop=False`` waits
    for every voter instead (same winner, for comparison). ``Vote.samples(model, n)``
    votes over ``n`` seeded samples of one model.
    """

    def __init__(
        self,
        models: Sequence[Model],
        *,
        kind: AnswerKindLike = None,
        normalise: Normaliser | None = None,
        weights: Sequence[float] | None = None,
        quorum: float | None = None,
        early_stop: bool = True,
        name: str | None = None,
    ) -> None:
        if not models:
            raise ConfigError("a Vote needs at least one model")
        if weights is not None and len(weights) != len(models):
            raise ConfigError(f"{len(weights)} weights for {len(models)} voters")
        if weights is not None and any(not w >= 0 for w in weights):
            raise ConfigError("vote weights must be >= 0")
        if quorum is not None and not 0.0 < quorum <= 1.0:
            raise ConfigError(f"quorum must be in (0, 1], got {quorum!r}")
        super().__init__(models, name=name or "vote(" + ",".join(m.name for m in models) + ")")
        self.kind: AnswerKind = as_kind(kind, normalise)
        self.weights = tuple(float(w) for w in weights) if weights is not None else None
        self.quorum = quorum
        self.early_stop = early_stop

    @classmethod
    def samples(
        cls,
        model: Model,
        n: int,
        *,
        seed: int = 0,
        kind: AnswerKindLike = None,
        normalise: Normaliser | None = None,
        quorum: float | None = None,
        name: str | None = None,
    ) -> Vote:
        """A vote over ``n`` samples of ``model``, with seeds ``seed .. seed + n - 1``
        (ask for a temperature above 0 in the request, or they all agree)."""
        if n < 1:
            raise ConfigError("a Vote needs at least one sample")
        voters = [Seeded(model, seed + i) for i in range(n)]
        return cls(voters, kind=kind, normalise=normalise, quorum=quorum, name=name)

    @property
    def models(self) -> tuple[Model, ...]:
        """The voters, in order (``wrapped``)."""
        return self.wrapped

    def __repr__(self) -> str:
        return f"Vote({self._name!r}, voters={len(self.models)}, quorum={self.quorum})"

    def normalise(self, text: str) -> str | None:
        """A reply's vote key on its own (``kind.key``); ``None``: it abstains."""
        return self.kind.key(text)

    def weight(self, index: int) -> float:
        return 1.0 if self.weights is None else self.weights[index]

    async def decide(self, request: ModelRequest) -> VoteResult:
        """Run the vote; stragglers are cancelled as soon as the outcome is final. Traced
        as a span ``critpath.vote {name}`` over its voters' calls (``telemetry_genai``)."""
        with decision_span(DecisionKind.VOTE, self._name) as span:
            result = await self._decide(request)
            if span.recording:
                span.set(_span_attributes(result))
        metrics.record_vote(self._name, stopped_early=result.stopped_early)
        return result

    async def _decide(self, request: ModelRequest) -> VoteResult:
        start = _now()
        tasks = {
            asyncio.create_task(complete(m, request), name=f"critpath-vote:{self._name}:{i}"): i
            for i, m in enumerate(self.models)
        }
        ballots: dict[int, Ballot] = {}
        groups: list[tuple[str, str]] = []  # (key, first answer) per group, this call's
        arrivals: list[tuple[str | None, float]] = []
        pending = set(tasks)
        state = tally(
            [], sum(self.weight(i) for i in range(len(self.models))), required=self.quorum
        )
        try:
            while pending and (not state.final or not self.early_stop):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: tasks[t]):
                    i = tasks[task]
                    ballot = self._ballot(i, task, _now() - start, groups)
                    ballots[i] = ballot
                    if ballot.status != "failed":
                        arrivals.append((ballot.answer, ballot.weight))
                left = sum(self.weight(tasks[t]) for t in pending)
                state = tally(arrivals, left, required=self.quorum)
        finally:
            await cancel_and_wait(pending)
        now = _now() - start
        for task in pending:
            i = tasks[task]
            ballots[i] = Ballot(i, self.models[i].name, self.weight(i), "cancelled", elapsed=now)
        if pending:
            _log.debug(
                "vote %s: request %s: decided early for %r at %.3fs, %d straggler(s) cancelled",
                self._name, request.request_id, state.winner, now, len(pending),
            )  # fmt: skip
        ordered = tuple(ballots[i] for i in range(len(self.models)))
        responded = [b for b in ordered if b.completion is not None]
        if not responded:
            raise VoteFailedError(self._name, [b.error for b in ordered if b.error is not None])
        # The winner's text: its first voter in arrival order (ties: tally's order).
        by_arrival = sorted(responded, key=lambda b: b.elapsed)
        source = next((b for b in by_arrival if b.answer == state.winner), by_arrival[0])
        assert source.completion is not None
        cancelled_weight = sum(b.weight for b in ordered if b.status == "cancelled")
        total = state.responded_weight + cancelled_weight
        result = VoteResult(
            name=self._name,
            winner=state.winner,
            completion=source.completion,
            agreement=state.agreement,
            min_agreement=state.winner_weight / total if total > 0 else 0.0,
            ballots=ordered,
            stopped_early=bool(pending),
            quorum_reached=None if self.quorum is None else state.reached,
            elapsed=now,
            tally=state,
        )
        self.observe(now)
        return result

    def _ballot(
        self, i: int, task: asyncio.Task[Completion], elapsed: float, groups: list[tuple[str, str]]
    ) -> Ballot:
        name, weight = self.models[i].name, self.weight(i)
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, ModelError):
                raise exc  # a bug, not a model failure: never voted around
            return Ballot(i, name, weight, "failed", error=exc, elapsed=elapsed)
        completion = task.result()
        extracted = self.kind.extract(completion.text)
        key = None if extracted is None else self.kind.normalise(extracted)
        if key is None or extracted is None:
            return Ballot(i, name, weight, "abstained", None, completion, elapsed=elapsed,
                          extracted=extracted)  # fmt: skip
        group = next((k for k, first in groups if k == key), None)
        if group is None:
            group = next((k for k, first in groups if self.kind.equivalent(first, extracted)), None)
        if group is None:
            groups.append((key, extracted))
            group = key
        return Ballot(i, name, weight, "answered", group, completion, elapsed=elapsed,
                      extracted=extracted)  # fmt: skip


def _span_attributes(result: VoteResult) -> dict[str, str | bool | int | float | list[str]]:
    """A vote's outcome on its span: ballots as ``voter: status``; the answers counted
    only with content capture on."""
    attrs: dict[str, str | bool | int | float | list[str]] = {
        "critpath.vote.voters": len(result.ballots),
        "critpath.vote.ballots": [f"{b.voter}: {b.status}" for b in result.ballots],
        "critpath.vote.agreement": result.agreement,
        "critpath.vote.stopped_early": result.stopped_early,
        "critpath.confidence": result.agreement,
    }
    if result.quorum_reached is not None:
        attrs["critpath.vote.quorum_reached"] = result.quorum_reached
    if capture_content():
        attrs["critpath.vote.answers"] = [str(b.answer) for b in result.ballots]
        if result.winner is not None:
            attrs["critpath.vote.winner"] = result.winner
    return attrs
