"""Cascade and vote decisions as pure functions: no event loop, no I/O.

- **Normalisation**: ``normalise_answer`` maps an answer's text to the key votes are
  counted on: the multiple-choice letter (``parse_choice``: "The answer is (X)"), else
  the text stripped, lowercased, whitespace collapsed; ``None`` for an abstention.
  Pass any ``Normaliser`` (``str -> str | None``) instead.
- **Abstention**: ``is_abstention``: empty text, "I don't know"-like text, or text the
  normaliser finds no answer in.
- **Logprob confidence**: ``answer_confidence``: the probability the model put on its
  answer, ``exp`` of the summed logprobs of the tokens that overlap the answer span
  "(X)" (one token in most tokenisers, so ``exp(logprob)`` of that token); without an
  answer span, the geometric mean token probability ``exp(mean logprob)``.
- **Acceptance**: ``accept(score, threshold)`` gives an ``Acceptance`` saying accepted
  or escalated, and why (``Reason``).
- **Quorum**: ``tally(votes, pending_weight, required=...)`` says who leads, the
  agreement, and whether the outcome can still change (early quorum).
- **Escalation timing**: ``escalation_delay`` picks how long a tier may run before
  the next one starts (explicit budget, learned latency quantile, or the deadline).
- **Threshold fitting**: ``fit_threshold`` on calibration ``(confidence, correct)``
  pairs, maximising the cascade's accuracy or reaching a target precision.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from critpath.adapters.protocol import TokenLogprob
from critpath.adapters.sim.answers import parse_choice
from critpath.cascades.answers import (
    ABSTENTION_PATTERNS,
    default_normalise,
    says_it_does_not_know,
)
from critpath.errors import ConfigError

__all__ = [
    "ABSTENTION_PATTERNS",
    "Acceptance",
    "Normaliser",
    "Reason",
    "Score",
    "Tally",
    "ThresholdFit",
    "accept",
    "answer_confidence",
    "escalation_delay",
    "fit_threshold",
    "is_abstention",
    "normalise_answer",
    "normalise_choice",
    "tally",
]

Normaliser = Callable[[str], str | None]
"""Maps an answer's text to the key votes are counted on; ``None``: no answer."""

_says_it_does_not_know = says_it_does_not_know


def normalise_choice(text: str) -> str | None:
    """The multiple-choice letter only ("The answer is (C)" -> ``"C"``), else ``None``.

    >>> normalise_choice("so the answer is (b)"), normalise_choice("Paris")
    (None, None)
    >>> normalise_choice("The answer is (B).")
    'B'
    """
    return parse_choice(text)


def normalise_answer(text: str) -> str | None:
    """The default normaliser: the letter, else the text stripped, lowercased,
    whitespace collapsed and a final period dropped; ``None`` for an abstention.

    >>> normalise_answer("Let us think. The answer is (C)."), normalise_answer(" Paris. ")
    ('C', 'paris')
    >>> normalise_answer("I don't know.") is None
    True
    """
    return default_normalise(text)


def is_abstention(text: str, normalise: Normaliser = normalise_answer) -> bool:
    """Whether ``text`` declines to answer: empty, "I don't know"-like, or no answer
    ``normalise`` can find (with ``normalise_choice``: no letter).

    >>> is_abstention("I do not know."), is_abstention("The answer is (A).")
    (True, False)
    >>> is_abstention("Paris", normalise_choice)
    True
    """
    return not text.strip() or _says_it_does_not_know(text) or normalise(text) is None


def answer_confidence(
    logprobs: Sequence[TokenLogprob] | None,
    *,
    method: str = "answer",
    span: tuple[int, int] | None = None,
) -> float | None:
    """The model's confidence in its answer, from token logprobs; ``None`` without any.

    ``method="answer"``: ``exp`` of the summed logprobs of the tokens overlapping the
    answer ``span`` (characters of the text, e.g. ``AnswerKind.span``: a free-form
    answer), else the last "(X)" span of the text (the probability of the answer
    letter, however the tokeniser split it); with no such span it falls back to ``"mean"``:
    ``exp(mean logprob)`` over all tokens, the geometric-mean token probability.

    >>> lps = [TokenLogprob("The answer is", -0.1), TokenLogprob(" (B).", math.log(0.8))]
    >>> round(answer_confidence(lps) or 0, 3)
    0.8
    """
    if not logprobs:
        return None
    if method not in ("answer", "mean"):
        raise ConfigError(f"method must be 'answer' or 'mean', got {method!r}")
    if method == "answer":
        text = "".join(t.token for t in logprobs)
        spans = [span] if span is not None else [m.span() for m in re.finditer(r"\([A-J]\)", text)]
        if spans:
            start, end = spans[-1]
            total, pos = 0.0, 0
            for tok in logprobs:
                lo, pos = pos, pos + len(tok.token)
                if lo < end and pos > start:
                    total += tok.logprob
            return math.exp(total)
    return math.exp(sum(t.logprob for t in logprobs) / len(logprobs))


# ---- acceptance -----------------------------------------------------------------------


class Reason(StrEnum):
    """Why a tier's answer was accepted, or why the cascade escalated past it."""

    ACCEPTED = "accepted"
    ABSTAINED = "abstained"
    LOW_CONFIDENCE = "low_confidence"
    NO_CONFIDENCE = "no_confidence"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Score:
    """What a scorer says about one answer: ``confidence`` in [0, 1] (``None``: it
    cannot tell), whether the answer is an abstention, and a short ``detail``."""

    confidence: float | None
    abstained: bool = False
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Acceptance:
    """An answer accepted or escalated, and why.

    >>> str(accept(Score(0.42), 0.7))
    'escalated: low confidence 0.420 < 0.700'
    """

    accepted: bool
    reason: Reason
    confidence: float | None
    threshold: float
    detail: str = ""

    def __str__(self) -> str:
        verdict = "accepted" if self.accepted else "escalated"
        if self.reason is Reason.LOW_CONFIDENCE:
            why = f"low confidence {self.confidence:.3f} < {self.threshold:.3f}"
        elif self.reason is Reason.ACCEPTED and self.confidence is not None:
            why = f"confidence {self.confidence:.3f} >= {self.threshold:.3f}"
        else:
            why = self.reason.value.replace("_", " ")
        return f"{verdict}: {why}" + (f" ({self.detail})" if self.detail else "")


def accept(score: Score | None, threshold: float) -> Acceptance:
    """Accept when the answer is not an abstention and ``confidence >= threshold``.

    ``score=None`` (no scorer) accepts. An abstention escalates whatever its
    confidence; no confidence escalates unless ``threshold <= 0``.

    >>> accept(Score(0.9), 0.8).accepted, accept(Score(0.9, abstained=True), 0.0).reason.value
    (True, 'abstained')
    >>> accept(Score(None), 0.5).reason.value, accept(None, 0.5).accepted
    ('no_confidence', True)
    """
    if score is None:
        return Acceptance(True, Reason.ACCEPTED, None, threshold, "no scorer")
    c, detail = score.confidence, score.detail
    if score.abstained:
        return Acceptance(False, Reason.ABSTAINED, c, threshold, detail)
    if c is None:
        if threshold <= 0:
            return Acceptance(True, Reason.ACCEPTED, None, threshold, detail)
        return Acceptance(False, Reason.NO_CONFIDENCE, None, threshold, detail)
    if c >= threshold:
        return Acceptance(True, Reason.ACCEPTED, c, threshold, detail)
    return Acceptance(False, Reason.LOW_CONFIDENCE, c, threshold, detail)


# ---- quorum ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tally:
    """Where a vote stands.

    ``winner``: the answer with the most weight (ties: the one voted first), ``None``
    when nobody answered; ``agreement``: its weight over the weight of the voters that
    responded (answered or abstained); ``min_agreement``: over those plus the pending
    ones, as if every pending voter dissented (a lower bound on the final agreement);
    ``settled``: no pending votes can change the winner; ``reached`` / ``unreachable``:
    the required agreement is (or can no longer be) met whatever the pending votes say;
    ``final``: the outcome can no longer change, so stop (see ``tally``).
    """

    winner: str | None
    winner_weight: float
    runner_up_weight: float
    responded_weight: float
    pending_weight: float
    agreement: float
    min_agreement: float
    settled: bool
    reached: bool
    unreachable: bool
    final: bool


def tally(
    votes: Sequence[tuple[str | None, float]],
    pending_weight: float = 0.0,
    *,
    required: float | None = None,
) -> Tally:
    """Count ``votes`` (``(answer or None for an abstention, weight)``, in arrival order)
    with ``pending_weight`` still to come.

    Without ``required`` (plurality) the vote is final when the leader cannot be
    overtaken or tied: ``leader > runner_up + pending`` (a new answer counts as a
    runner-up of weight 0), or nothing is pending. With ``required`` (a fraction in
    (0, 1]), it is final when the leader's weight is at least ``required`` of all
    responded and pending weight (``reached``), when no answer can get there any more
    (``unreachable``), or when nothing is pending.

    >>> t = tally([("A", 1), ("A", 1)], pending_weight=1)
    >>> t.winner, t.settled, t.final, t.agreement, round(t.min_agreement, 3)
    ('A', True, True, 1.0, 0.667)
    >>> tally([("A", 1), ("B", 1)], pending_weight=1).final
    False
    >>> t = tally([("A", 1), ("A", 1)], pending_weight=2, required=0.75)
    >>> t.final, t.reached, t.unreachable
    (False, False, False)
    """
    if pending_weight < 0 or any(w < 0 for _, w in votes):
        raise ConfigError("vote weights must be >= 0")
    if required is not None and not 0.0 < required <= 1.0:
        raise ConfigError(f"required agreement must be in (0, 1], got {required!r}")
    weight: dict[str, float] = {}
    responded = 0.0
    for answer, w in votes:
        responded += w
        if answer is not None:
            weight[answer] = weight.get(answer, 0.0) + w  # dicts keep first-vote order
    ranked = sorted(weight.items(), key=lambda kv: -kv[1])  # stable: ties keep vote order
    winner, top = ranked[0] if ranked else (None, 0.0)
    second = ranked[1][1] if len(ranked) > 1 else 0.0
    everyone = responded + pending_weight
    agreement = top / responded if responded > 0 else 0.0
    min_agreement = top / everyone if everyone > 0 else 0.0
    done = pending_weight <= 0
    settled = done or top > second + pending_weight
    eps = 1e-9
    reached = required is not None and everyone > 0 and top >= required * everyone - eps
    best_possible = max(top, second) + pending_weight
    unreachable = (
        required is not None
        and not reached
        and (everyone <= 0 or best_possible < required * everyone - eps)
    )
    final = done or (settled if required is None else reached or unreachable)
    return Tally(
        winner, top, second, responded, pending_weight, agreement, min_agreement,
        settled, reached, unreachable, final,
    )  # fmt: skip


# ---- escalation timing ----------------------------------------------------------------


def escalation_delay(
    *,
    budget: float | None = None,
    learned: float | None = None,
    remaining: float | None = None,
    next_expected: float | None = None,
) -> tuple[float | None, str]:
    """How long a tier may run before the next tier starts (hedged escalation), and why.

    The earliest of: the explicit ``budget``; else the tier's ``learned`` latency
    quantile; and, under a deadline (``remaining`` seconds left), the latest start that
    still lets the next tier finish: ``remaining - next_expected``, or half of what is
    left when the next tier's latency is unknown. ``(None, "none")``: wait for the tier.

    >>> escalation_delay(budget=0.5, learned=0.2)
    (0.5, 'budget')
    >>> escalation_delay(learned=0.8, remaining=1.0, next_expected=0.6)
    (0.4, 'deadline')
    >>> escalation_delay()
    (None, 'none')
    """
    options: list[tuple[float, str]] = []
    if budget is not None:
        options.append((budget, "budget"))
    elif learned is not None and not math.isnan(learned):
        options.append((learned, "learned"))
    if remaining is not None:
        left = remaining - next_expected if next_expected is not None else remaining / 2
        options.append((round(max(0.0, left), 9), "deadline"))
    if not options:
        return None, "none"
    delay, source = min(options, key=lambda o: o[0])
    return max(0.0, delay), source


# ---- threshold fitting ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThresholdFit:
    """A fitted threshold (accept when ``confidence >= threshold``; ``inf``: never)
    and how it was fit: the ``method``, the ``objective`` it reached, the fraction of
    calibration answers it accepts and their accuracy, ``n`` pairs, a ``description``."""

    threshold: float
    method: str
    objective: float
    accept_rate: float
    accepted_accuracy: float
    n: int
    description: str


def fit_threshold(
    pairs: Sequence[tuple[float, bool]],
    *,
    next_accuracy: float | None = None,
    target_precision: float | None = None,
    next_correct: Sequence[bool] | None = None,
) -> ThresholdFit:
    """Fit a tier's threshold on calibration ``(confidence, correct)`` pairs.

    Candidates are "accept all", "accept none" and a cut between every two adjacent
    distinct confidences (at their midpoint). Give exactly one target:

    - ``next_correct``: for each pair, whether what an escalated answer gets (the rest
      of the cascade) is right on that question: pick the cut maximising the cascade's
      accuracy on these questions; ties go to the lowest threshold. This is the exact
      objective when the calibration questions were also asked of the next tiers (hard
      questions are hard for every tier, so it escalates less than ``next_accuracy``).

    - ``next_accuracy``: the accuracy of what an escalated answer gets (the next
      tier's): pick the cut maximising the two-tier accuracy
      ``(correct accepted + next_accuracy x escalated) / n``; ties go to the lowest
      threshold (more accepted: cheaper and faster).
    - ``target_precision``: the lowest cut whose accepted answers are at least this
      accurate (most accepted at that precision); ``inf`` (escalate all) if none is.

    >>> fit = fit_threshold([(0.9, True), (0.8, True), (0.3, False), (0.2, False)],
    ...                     next_accuracy=0.5)
    >>> fit.threshold, fit.objective
    (0.55, 0.75)
    """
    if sum(x is not None for x in (next_accuracy, target_precision, next_correct)) != 1:
        raise ConfigError("give exactly one of next_accuracy=, target_precision= or next_correct=")
    target = next_accuracy if next_accuracy is not None else target_precision
    if target is not None and not 0.0 <= target <= 1.0:
        raise ConfigError(f"target must be in [0, 1], got {target!r}")
    if not pairs:
        raise ConfigError("fit_threshold needs calibration pairs")
    if next_correct is not None and len(next_correct) != len(pairs):
        raise ConfigError(f"{len(next_correct)} next_correct for {len(pairs)} pairs")
    order = sorted(range(len(pairs)), key=lambda i: -pairs[i][0])
    ranked = [pairs[i] for i in order]
    n = len(ranked)
    # Cut k accepts the k most confident; only cut between distinct confidences.
    cuts = [0] + [k for k in range(1, n) if ranked[k][0] < ranked[k - 1][0]] + [n]
    right = [0]
    for _, ok in ranked:
        right.append(right[-1] + int(ok))

    def threshold_at(k: int) -> float:
        if k == 0:
            return math.inf
        if k == n:
            return ranked[-1][0]
        return (ranked[k - 1][0] + ranked[k][0]) / 2

    if next_correct is not None:
        # rest[k]: escalated answers right when the k most confident are accepted.
        rest = [0] * (n + 1)
        for k in range(n - 1, -1, -1):
            rest[k] = rest[k + 1] + int(next_correct[order[k]])
        best = max(cuts, key=lambda k: ((right[k] + rest[k]) / n, k))
        objective = (right[best] + rest[best]) / n
        method = "max_cascade_accuracy_paired"
        how = (
            f"maximised the cascade's accuracy over {n} calibration questions, each "
            f"escalated answer scored by the next tiers' own answer: {objective:.3f}"
        )
    elif next_accuracy is not None:
        best = max(cuts, key=lambda k: ((right[k] + next_accuracy * (n - k)) / n, k))
        objective = (right[best] + next_accuracy * (n - best)) / n
        method = "max_cascade_accuracy"
        how = (
            f"maximised (correct accepted + {next_accuracy:.3f} x escalated) / n over {n} "
            f"calibration answers: cascade accuracy {objective:.3f}"
        )
    else:
        assert target_precision is not None
        ok_cuts = [k for k in cuts if k > 0 and right[k] / k >= target_precision - 1e-12]
        best = max(ok_cuts) if ok_cuts else 0
        objective = right[best] / best if best else math.nan
        method = "target_precision"
        how = (
            f"lowest threshold whose accepted answers reach precision {target_precision:.3f} "
            f"over {n} calibration answers"
            + ("" if ok_cuts else ": none does, escalate everything")
        )
    acc = right[best] / best if best else math.nan
    return ThresholdFit(threshold_at(best), method, objective, best / n, acc, n, how)
