"""The demo's strategies, named once: what ``critpath demo`` compares, what ``critpath
loadtest --strategy NAME`` loads, and what the example chat service serves.

Given models cheapest first, every model alone is a strategy (named by the model),
and so is each ``DemoStrategy`` the models allow:

- ``cascade``: the cheapest model, escalating to the strongest unless it puts at least
  ``CASCADE_THRESHOLD`` on its answer (two models or more);
- ``vote``: every model votes (three or more);
- ``vote-escalate``: the cheaper models vote; the strongest answers unless they are
  unanimous (three or more);
- ``refine``: fast-then-refine, the cheapest model's draft at once, the strongest
  model's revision after (two or more).

Thresholds are fixed and stated; ``critpath bench cascade`` shows how to fit them.
This module imports the strategies' classes only when one is built, so the command
line can list the names without loading them.

>>> [s.value for s in DemoStrategy]
['cascade', 'vote', 'vote-escalate', 'refine']
>>> DemoStrategy.CASCADE.label(["small", "medium", "large"])
'cascade(small>large)'
>>> served_name(DemoStrategy.REFINE)
'critpath-refine'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from critpath.errors import ConfigError

if TYPE_CHECKING:
    from critpath.adapters.protocol import Model
    from critpath.cascades.refine import Refine

__all__ = [
    "CASCADE_THRESHOLD",
    "BuiltStrategy",
    "DemoStrategy",
    "StrategyKind",
    "build_all",
    "build_named",
    "build_refine",
    "build_strategy",
    "known_names",
    "served_name",
]

CASCADE_THRESHOLD = 0.7
"""The cascade accepts the cheap model's answer when it puts at least this on it."""


class StrategyKind(StrEnum):
    """What a strategy is, as the demo's table and JSON say it."""

    SINGLE = "single"
    CASCADE = "cascade"
    VOTE = "vote"
    REFINE = "refine"


class DemoStrategy(StrEnum):
    """The demo's strategies over several models (each model alone is one too)."""

    CASCADE = "cascade"
    VOTE = "vote"
    VOTE_ESCALATE = "vote-escalate"
    REFINE = "refine"

    @property
    def kind(self) -> StrategyKind:
        return _KINDS[self]

    @property
    def min_models(self) -> int:
        """How many models it needs."""
        return 3 if self in (DemoStrategy.VOTE, DemoStrategy.VOTE_ESCALATE) else 2

    def label(self, names: Sequence[str]) -> str:
        """Its name in the demo's table, given the models' names cheapest first."""
        cheap, strong = names[0], names[-1]
        match self:
            case DemoStrategy.CASCADE:
                return f"cascade({cheap}>{strong})"
            case DemoStrategy.VOTE:
                return "vote(all)"
            case DemoStrategy.VOTE_ESCALATE:
                return f"vote(cheaper)>{strong}"
            case DemoStrategy.REFINE:
                return f"refine({cheap}>{strong})"


_KINDS = {
    DemoStrategy.CASCADE: StrategyKind.CASCADE,
    DemoStrategy.VOTE: StrategyKind.VOTE,
    DemoStrategy.VOTE_ESCALATE: StrategyKind.CASCADE,
    DemoStrategy.REFINE: StrategyKind.REFINE,
}


def served_name(strategy: DemoStrategy) -> str:
    """The model name a service answering with ``strategy`` goes by (the chat service's
    OpenAI-compatible endpoint; the default model of ``critpath loadtest --url``)."""
    return f"critpath-{strategy.value}"


@dataclass(frozen=True, slots=True)
class BuiltStrategy:
    """A strategy ready to ask: ``key`` (what ``--strategy`` takes), ``name`` (its label
    in the table), its kind, and the runnable itself."""

    key: str
    name: str
    kind: StrategyKind
    runnable: Model


def build_refine(models: Sequence[Model], *, name: str | None = None) -> Refine:
    """``refine``: the cheapest model's draft, then the strongest model's revision."""
    from critpath.cascades.refine import Refine

    _enough(DemoStrategy.REFINE, models)
    return Refine(models[0], models[-1], name=name)


def build_strategy(
    strategy: DemoStrategy, models: Sequence[Model], *, name: str | None = None
) -> Model:
    """``strategy`` over ``models`` (cheapest first); ``ConfigError`` if too few."""
    from critpath.cascades.cascade import Cascade, Tier
    from critpath.cascades.scorers import AgreementScorer, LogprobScorer
    from critpath.cascades.vote import Vote

    _enough(strategy, models)
    cheap, strong = models[0], models[-1]
    match strategy:
        case DemoStrategy.CASCADE:
            tiers = [Tier(cheap, LogprobScorer(), CASCADE_THRESHOLD, hedge=False), Tier(strong)]
            return Cascade(tiers, name=name)
        case DemoStrategy.VOTE:
            return Vote(list(models), name=name)
        case DemoStrategy.VOTE_ESCALATE:
            lower = Vote(list(models[:-1]))
            return Cascade([Tier(lower, AgreementScorer(), 1.0, hedge=False), Tier(strong)],
                           name=name)  # fmt: skip
        case DemoStrategy.REFINE:
            return build_refine(models, name=name)


def build_all(models: Sequence[Model]) -> list[BuiltStrategy]:
    """Every model alone, then every ``DemoStrategy`` the models allow, in that order."""
    out = [BuiltStrategy(m.name, m.name, StrategyKind.SINGLE, m) for m in models]
    names = [m.name for m in models]
    for s in DemoStrategy:
        if len(models) >= s.min_models:
            out.append(BuiltStrategy(s.value, s.label(names), s.kind, build_strategy(s, models)))
    return out


def known_names(model_names: Sequence[str]) -> list[str]:
    """The keys ``build_named`` takes for these models: each model, then the strategies."""
    return [*model_names, *(s.value for s in DemoStrategy if len(model_names) >= s.min_models)]


def build_named(key: str, models: Sequence[Model]) -> BuiltStrategy:
    """The strategy ``key`` names (a model's name, or a ``DemoStrategy`` value);
    ``ConfigError`` naming the known keys for anything else."""
    names = [m.name for m in models]
    if key in names:
        model = models[names.index(key)]
        return BuiltStrategy(key, key, StrategyKind.SINGLE, model)
    if key in {s.value for s in DemoStrategy}:
        s = DemoStrategy(key)
        return BuiltStrategy(key, s.label(names), s.kind, build_strategy(s, models))
    raise ConfigError(f"unknown strategy {key!r}; known: {', '.join(known_names(names))}")


def _enough(strategy: DemoStrategy, models: Sequence[Model]) -> None:
    if len(models) < strategy.min_models:
        raise ConfigError(
            f"the {strategy.value} strategy needs {strategy.min_models} models or more, "
            f"got {len(models)}"
        )
