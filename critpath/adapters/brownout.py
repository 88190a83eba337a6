"""Choosing a model by predicted latency: the pure decisions behind ``Adaptive``.

No I/O and no event loop here, so every rule is testable on its own:

- ``predict(outlook, max_tokens)``: a candidate's end-to-end latency from what is known
  about it — its time to first token once running, its time per output token, the
  output tokens expected of it, and the queue in front of it (requests outstanding
  beyond its capacity, each holding a slot for its mean service time).
- ``Brownout``: per-candidate hysteresis. A candidate predicted to miss a request's
  budget is *tripped*; while tripped it must fit with a margin (``predicted <= recover
  x budget``) to be chosen again, so decisions do not flap when the prediction hovers
  around the budget.
- ``choose(predictions, budget, brownout, on_miss)``: the best candidate (the first, by
  quality) predicted to finish within the budget; when none fits, the fastest
  (``OnMiss.FASTEST``) or none (``OnMiss.SHED``: the caller refuses the request).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from critpath.errors import ConfigError

__all__ = [
    "Brownout",
    "Choice",
    "OnMiss",
    "Outlook",
    "Why",
    "choose",
    "predict",
]


class Why(StrEnum):
    """Why a candidate was chosen (or none)."""

    FITS = "fits"
    """The best candidate predicted to finish within the budget."""
    UNLEARNED = "unlearned"
    """The best candidate not yet learned (nothing to predict from): tried, to learn it."""
    NO_BUDGET = "no_budget"
    """No deadline, step finish or SLO applies: the best candidate."""
    NONE_FIT = "none_fit"
    """No candidate is predicted to finish in time: the fastest."""
    SHED = "shed"
    """No candidate is predicted to finish in time and the policy refuses the request."""


class OnMiss(StrEnum):
    """What to do when no candidate is predicted to finish within the budget."""

    FASTEST = "fastest"
    SHED = "shed"


@dataclass(frozen=True, slots=True)
class Outlook:
    """What is known about one candidate when a request is placed. Seconds.

    ``ttft``: time to the first token once the request runs; ``tpot``: per output token
    (``None``: not learned, taken as 0); ``tokens``: output tokens expected of this
    candidate; ``service``: mean seconds a request holds one of its slots;
    ``outstanding``: requests it is serving or queueing now; ``capacity``: requests it
    serves at once (``None``: unknown, no queue predicted).
    """

    name: str
    ttft: float | None
    tpot: float | None
    tokens: float | None
    service: float | None
    outstanding: float
    capacity: float | None

    def queue(self) -> float:
        """Predicted seconds before a new request starts running."""
        cap = self.capacity
        if cap is None or cap <= 0 or self.service is None or self.outstanding < cap:
            return 0.0
        return (self.outstanding - cap + 1) * self.service / cap


def predict(outlook: Outlook, max_tokens: int) -> float | None:
    """Predicted seconds to the end of the answer, or ``None`` when not learned yet.

    >>> o = Outlook("m", ttft=0.5, tpot=0.02, tokens=101, service=2.5, outstanding=9,
    ...             capacity=8)
    >>> round(predict(o, 4096), 3)  # 2 queued x 2.5 s / 8 slots + 0.5 + 100 x 0.02
    3.125
    >>> round(predict(o, 51), 3)  # never more tokens than max_tokens
    2.125
    """
    if outlook.ttft is None or outlook.tokens is None:
        return None
    tokens = min(outlook.tokens, float(max_tokens))
    tpot = outlook.tpot or 0.0
    return outlook.queue() + outlook.ttft + tpot * max(0.0, tokens - 1.0)


class Brownout:
    """Per-candidate hysteresis (see the module docstring); ``recover`` in (0, 1].

    >>> b = Brownout(2, recover=0.8)
    >>> b.fits(0, 1.05, 1.0), b.tripped
    (False, (False, False))
    >>> b.settle(chosen=1, missed=[0]); b.tripped
    (True, False)
    >>> b.fits(0, 0.95, 1.0), b.fits(0, 0.75, 1.0)  # back only with a margin
    (False, True)
    """

    def __init__(self, n: int, *, recover: float = 0.8) -> None:
        if n < 1:
            raise ConfigError("Brownout needs at least one candidate")
        if not 0.0 < recover <= 1.0:
            raise ConfigError(f"recover must be in (0, 1], got {recover!r}")
        self.recover = recover
        self._tripped = [False] * n
        self.trips = 0
        self.recoveries = 0

    @property
    def tripped(self) -> tuple[bool, ...]:
        return tuple(self._tripped)

    def fits(self, index: int, predicted: float, budget: float) -> bool:
        """Whether candidate ``index`` is predicted to finish within ``budget``."""
        limit = budget * self.recover if self._tripped[index] else budget
        return predicted <= limit

    def settle(self, chosen: int | None, missed: Sequence[int]) -> None:
        """After a choice: trip the candidates predicted to miss; the chosen one recovers."""
        for i in missed:
            if not self._tripped[i]:
                self._tripped[i] = True
                self.trips += 1
        if chosen is not None and self._tripped[chosen] and chosen not in missed:
            self._tripped[chosen] = False
            self.recoveries += 1


@dataclass(frozen=True, slots=True)
class Choice:
    """The outcome of ``choose``: ``index`` (``None``: shed), why, and which candidates
    were predicted to fit (``None`` for a candidate not learned or not considered)."""

    index: int | None
    why: Why
    fits: tuple[bool | None, ...]


def choose(
    predictions: Sequence[float | None],
    budget: float | None,
    brownout: Brownout,
    on_miss: OnMiss = OnMiss.FASTEST,
) -> Choice:
    """Pick a candidate (ordered best first) for a request with ``budget`` seconds left.

    >>> b = Brownout(3)
    >>> choose([3.0, 1.0, 0.5], 2.0, b)
    Choice(index=1, why=<Why.FITS: 'fits'>, fits=(False, True, None))
    >>> choose([3.0, 2.5, 2.2], 2.0, b).index, choose([3.0, None, 0.5], None, b).why
    (2, <Why.NO_BUDGET: 'no_budget'>)
    """
    n = len(predictions)
    fits: list[bool | None] = [None] * n
    if budget is None:
        return Choice(0, Why.NO_BUDGET, tuple(fits))
    for i, predicted in enumerate(predictions):
        if predicted is None:
            brownout.settle(i, [j for j in range(i) if fits[j] is False])
            return Choice(i, Why.UNLEARNED, tuple(fits))
        fits[i] = brownout.fits(i, predicted, budget)
        if fits[i]:
            brownout.settle(i, list(range(i)))
            return Choice(i, Why.FITS, tuple(fits))
    if on_miss == OnMiss.SHED:
        brownout.settle(None, list(range(n)))
        return Choice(None, Why.SHED, tuple(fits))
    known = [(p, i) for i, p in enumerate(predictions) if p is not None and math.isfinite(p)]
    fastest = min(known)[1] if known else n - 1
    brownout.settle(fastest, [i for i in range(n) if i != fastest])
    return Choice(fastest, Why.NONE_FIT, tuple(fits))
