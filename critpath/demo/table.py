"""The demo's strategies side by side (``critpath.demo.strategies``: each model alone,
a cascade, a vote, vote-then-escalate and fast-then-refine), over the same questions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from critpath.demo.strategies import StrategyKind, build_all
from critpath.demo.tiers import Tiers
from critpath.strategies.evaluate import ROW_KEYS, Outcome, ask, summarise

__all__ = ["compare", "strategy_count"]


async def compare(
    tiers: Tiers, on_question: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Ask every question of every strategy (one at a time); one row per strategy."""
    rows = []
    for s in build_all(tiers.models):
        logprobs = s.kind is StrategyKind.CASCADE
        outcomes: list[Outcome] = []
        for q in tiers.questions:
            outcomes.append(await ask(s.runnable, tiers.request(q, logprobs=logprobs), q.answer))
            if on_question is not None:
                on_question(s.name)
        summary = summarise(outcomes)
        rows.append({"name": s.name, "kind": s.kind.value} | {k: summary[k] for k in ROW_KEYS})
    return rows


def strategy_count(tiers: Tiers) -> int:
    """How many strategies ``compare`` runs on these tiers."""
    return len(build_all(tiers.models))
