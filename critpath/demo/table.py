"""The demo's strategies side by side: each model alone, a cascade, a vote,
vote-then-escalate and fast-then-refine, over the same questions.

Thresholds here are fixed and stated (the cascade accepts the cheap model's answer
when it puts >= 0.7 on its letter; the vote-then-escalate accepts a unanimous vote);
``critpath bench cascade`` shows how to fit them on calibration data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from critpath.adapters.protocol import Model
from critpath.cascades.cascade import Cascade, Tier
from critpath.cascades.refine import Refine
from critpath.cascades.scorers import AgreementScorer, LogprobScorer
from critpath.cascades.vote import Vote
from critpath.demo.tiers import Tiers
from critpath.strategies.evaluate import ROW_KEYS, Outcome, ask, summarise

__all__ = ["CASCADE_THRESHOLD", "build_strategies", "compare", "strategy_count"]

CASCADE_THRESHOLD = 0.7


def build_strategies(tiers: Tiers) -> list[tuple[str, str, Model | Refine]]:
    """``(name, kind, runnable)`` for the tiers given (cheapest first)."""
    out: list[tuple[str, str, Model | Refine]] = [(m.name, "single", m) for m in tiers.models]
    cheap, strong = tiers.cheap, tiers.strong
    if len(tiers.models) < 2:
        return out
    out.append((
        f"cascade({cheap.name}>{strong.name})",
        "cascade",
        Cascade([Tier(cheap, LogprobScorer(), CASCADE_THRESHOLD, hedge=False), Tier(strong)]),
    ))  # fmt: skip
    if len(tiers.models) >= 3:
        out.append(("vote(all)", "vote", Vote(list(tiers.models))))
        lower = Vote(list(tiers.models[:-1]))
        out.append((
            f"vote(cheaper)>{strong.name}",
            "cascade",
            Cascade([Tier(lower, AgreementScorer(), 1.0, hedge=False), Tier(strong)]),
        ))  # fmt: skip
    out.append((f"refine({cheap.name}>{strong.name})", "refine", Refine(cheap, strong)))
    return out


async def compare(
    tiers: Tiers, on_question: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Ask every question of every strategy (one at a time); one row per strategy."""
    rows = []
    for name, kind, runnable in build_strategies(tiers):
        logprobs = kind == "cascade"
        outcomes: list[Outcome] = []
        for q in tiers.questions:
            outcomes.append(await ask(runnable, tiers.request(q, logprobs=logprobs), q.answer))
            if on_question is not None:
                on_question(name)
        s = summarise(outcomes)
        rows.append({"name": name, "kind": kind} | {k: s[k] for k in ROW_KEYS})
    return rows


def strategy_count(tiers: Tiers) -> int:
    return len(build_strategies(tiers))
