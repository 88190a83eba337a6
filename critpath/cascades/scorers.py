"""Confidence scorers: how a cascade tier decides whether to accept its answer.

A scorer is anything with ``async score(candidate) -> Score``: it sees the request,
the tier's ``Completion`` and, when the tier is a ``Vote`` or a ``Cascade``, its result
(``candidate.result``). ``accept(score, threshold)`` in ``decisions`` then accepts or
escalates. Provided:

Every scorer takes the answer kind (``kind=``: an ``answers.AnswerKind`` or its name)
that says what an answer is: a reply with no answer of that kind, or an "I don't
know", abstains (score 0, escalated).

- ``AbstentionScorer``: confidence 1 unless the answer abstains.
- ``LogprobScorer``: the probability the model put on its answer's tokens
  (``answer_confidence`` over the kind's answer span); sets ``needs_logprobs`` so the
  cascade asks for logprobs.
- ``AgreementScorer``: a vote's agreement (or any result's ``confidence``).
- ``VerifierScorer``: asks another model whether the answer is right (prompt below).
- ``FunctionScorer``: any function, sync or async, returning a float, ``None`` or a
  ``Score``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from critpath.adapters.completion import Completion, complete
from critpath.adapters.protocol import Model, ModelRequest, make_request
from critpath.cascades.answers import AnswerKind, AnswerKindLike, as_kind
from critpath.cascades.decisions import Normaliser, Score, answer_confidence
from critpath.cascades.vote import VoteResult
from critpath.errors import ConfigError

__all__ = [
    "VERIFIER_PROMPT",
    "AbstentionScorer",
    "AgreementScorer",
    "Candidate",
    "FunctionScorer",
    "HasConfidence",
    "LogprobScorer",
    "Scorer",
    "VerifierScorer",
]


@runtime_checkable
class HasConfidence(Protocol):
    """A tier's own result that carries a confidence (``VoteResult``, ``CascadeResult``)."""

    @property
    def confidence(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a scorer judges: the request, the tier's answer, and the tier's own result
    when the tier is a ``Vote`` or ``Cascade`` (else ``None``)."""

    request: ModelRequest
    completion: Completion
    result: HasConfidence | None = None

    @property
    def text(self) -> str:
        return self.completion.text


class Scorer(Protocol):
    """Scores one answer; ``needs_logprobs`` (optional attribute) asks for logprobs."""

    async def score(self, candidate: Candidate) -> Score: ...


class AbstentionScorer:
    """Confidence 1.0 for an answer, 0.0 (and ``abstained``) for an abstention."""

    needs_logprobs = False

    def __init__(self, kind: AnswerKindLike = None, *, normalise: Normaliser | None = None) -> None:
        self.kind: AnswerKind = as_kind(kind, normalise)

    async def score(self, candidate: Candidate) -> Score:
        if self.kind.abstains(candidate.text):
            return Score(0.0, abstained=True, detail="abstained")
        return Score(1.0, detail="answered")


class LogprobScorer:
    """The probability the model put on its answer (``answer_confidence``, ``method``
    ``"answer"``: the answer span's tokens; ``"mean"``: geometric-mean token
    probability). The answer span is where the kind finds the final answer (``span``),
    else the last "(X)". Abstentions score 0 and escalate. No logprobs:
    ``confidence=None``."""

    needs_logprobs = True

    def __init__(
        self,
        kind: AnswerKindLike = None,
        *,
        method: str = "answer",
        normalise: Normaliser | None = None,
    ) -> None:
        if method not in ("answer", "mean"):
            raise ConfigError(f"method must be 'answer' or 'mean', got {method!r}")
        self.method = method
        self.kind: AnswerKind = as_kind(kind, normalise)

    async def score(self, candidate: Candidate) -> Score:
        if self.kind.abstains(candidate.text):
            return Score(0.0, abstained=True, detail="abstained")
        conf = answer_confidence(
            candidate.completion.logprobs, method=self.method, span=self.kind.span(candidate.text)
        )
        return Score(conf, detail=f"logprob ({self.method})" if conf is not None else "no logprobs")


class AgreementScorer:
    """A vote's agreement as the confidence: ``VoteResult.agreement`` (the winner's share
    of the voters that responded), or ``min_agreement`` (counting cancelled stragglers
    as dissent) with ``lower_bound=True``. Any other result: its ``confidence``. A vote
    nobody answered is an abstention."""

    needs_logprobs = False

    def __init__(self, *, lower_bound: bool = False) -> None:
        self.lower_bound = lower_bound

    async def score(self, candidate: Candidate) -> Score:
        result = candidate.result
        if result is None:
            return Score(None, detail="not a vote: no agreement")
        if not isinstance(result, VoteResult):
            return Score(result.confidence, detail="result confidence")
        if result.winner is None:
            return Score(0.0, abstained=True, detail="no voter answered")
        if self.lower_bound:
            return Score(result.min_agreement, detail="vote agreement (lower bound)")
        return Score(result.agreement, detail="vote agreement")


VERIFIER_PROMPT = (
    "Question:\n{question}\n\nProposed answer:\n{answer}\n\n"
    "Is the proposed answer correct? Reply with one word: yes or no."
)
"""The verifier's prompt; ``{question}`` is the request's last user message (or its
prompt), ``{answer}`` the tier's answer text."""


class VerifierScorer:
    """Asks ``verifier`` (another ``Model``) whether the answer is right.

    It sends ``prompt`` (``VERIFIER_PROMPT`` by default) as one user message with
    ``max_tokens`` (default 4), ``temperature=0`` and logprobs with 5 alternatives.
    Confidence: ``P(yes) / (P(yes) + P(no))`` from the first token's logprobs when the
    verifier returns them (tokens compared lowercased, without spaces or a final
    period), otherwise 1.0 if the reply starts with "yes", 0.0 otherwise. Answers that
    abstain (by ``kind``) score 0 without asking. ``{answer}`` in the prompt is the
    whole reply; ``{final}`` the final answer the kind reads in it.
    """

    needs_logprobs = False

    def __init__(
        self,
        verifier: Model,
        *,
        prompt: str = VERIFIER_PROMPT,
        max_tokens: int = 4,
        kind: AnswerKindLike = None,
        normalise: Normaliser | None = None,
    ) -> None:
        self.verifier = verifier
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.kind: AnswerKind = as_kind(kind, normalise)

    def question_of(self, request: ModelRequest) -> str:
        if request.messages is not None:
            users = [m.content for m in request.messages if m.role == "user"]
            return users[-1] if users else request.messages[-1].content
        return request.prompt or ""

    async def score(self, candidate: Candidate) -> Score:
        if self.kind.abstains(candidate.text):
            return Score(0.0, abstained=True, detail="abstained")
        ask = self.prompt.format(
            question=self.question_of(candidate.request),
            answer=candidate.text,
            final=self.kind.extract(candidate.text) or candidate.text,
        )
        reply = await complete(
            self.verifier,
            make_request(
                messages=ask, max_tokens=self.max_tokens, temperature=0.0,
                logprobs=True, top_logprobs=5,
            ),
        )  # fmt: skip
        return Score(_yes_probability(reply), detail=f"verifier {self.verifier.name}")


def _yes_probability(reply: Completion) -> float:
    if reply.logprobs:
        first = reply.logprobs[0]
        options = [(first.token, first.logprob), *first.top]
        p: dict[str, float] = {"yes": 0.0, "no": 0.0}
        seen: set[str] = set()
        for token, lp in options:
            key = token.strip().lower().strip(".!,")
            if key in p and token not in seen:
                seen.add(token)
                p[key] += math.exp(lp)
        if p["yes"] + p["no"] > 0:
            return p["yes"] / (p["yes"] + p["no"])
    return 1.0 if reply.text.strip().lower().startswith("yes") else 0.0


ScoreFunction = Callable[[Candidate], float | Score | Awaitable[float | Score | None] | None]


class FunctionScorer:
    """Any function of a ``Candidate`` (sync or async) returning a confidence, ``None``
    (cannot tell) or a ``Score``."""

    def __init__(self, fn: ScoreFunction, *, needs_logprobs: bool = False) -> None:
        self.fn = fn
        self.needs_logprobs = needs_logprobs

    async def score(self, candidate: Candidate) -> Score:
        out = self.fn(candidate)
        if inspect.isawaitable(out):
            out = await out
        if isinstance(out, Score):
            return out
        if out is None:
            return Score(None, detail="function")
        return Score(float(out), detail="function")
