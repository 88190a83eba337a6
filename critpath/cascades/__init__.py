"""Compound strategies over the model protocol: cascades and votes.

- ``answers``: answer kinds (``choice``, ``number``, ``math``, ``python_literal``,
  ``text``, your own): how to extract the final answer of a reply, normalise it and
  decide whether two answers are equivalent; votes and scorers take one (``kind=``).
- ``decisions``: the pure logic — answer normalisation, abstention, logprob confidence,
  acceptance (``Acceptance``, ``Reason``), quorum (``tally``), escalation timing and
  threshold fitting on calibration data (``fit_threshold``).
- ``scorers``: pluggable confidence scorers for cascade tiers (abstention, logprob,
  vote agreement, verifier model, any function).
- ``decider``: ``Decider``, the base of the strategies that decide over whole answers:
  ``await x.decide(request)`` returns that call's result, the answer and its trail.
- ``vote``: ``Vote``, N models (or N samples of one) in parallel with early quorum.
- ``cascade``: ``Cascade`` of ``Tier``s, cheapest first, with hedged escalation.
- ``refine``: ``Refine``, fast-then-refine: a fast model's draft streamed at once, then
  a strong model's revision as a diff against it.

``Vote``, ``Cascade`` and ``Refine`` are ``Model``s (``WrapperModel``s), so they nest
(a vote can be a tier); ``await x.decide(request)`` returns a vote's or a cascade's
result (``VoteResult``, ``CascadeResult``) for that call alone.
"""

from critpath.cascades.answers import (
    DEFAULT_KIND,
    AnswerKind,
    AnswerKindName,
    ChoiceKind,
    FunctionKind,
    LiteralKind,
    MathKind,
    NumberKind,
    TextKind,
    as_kind,
    extract_final,
    kind_named,
)
from critpath.cascades.cascade import (
    Cascade,
    CascadeFailedError,
    CascadeResult,
    Escalation,
    Tier,
    TierReport,
)
from critpath.cascades.decider import Decided, Decider, completion_chunks
from critpath.cascades.decisions import (
    Acceptance,
    Reason,
    Score,
    Tally,
    ThresholdFit,
    accept,
    answer_confidence,
    escalation_delay,
    fit_threshold,
    is_abstention,
    normalise_answer,
    normalise_choice,
    tally,
)
from critpath.cascades.refine import (
    DiffOp,
    DraftDelta,
    Final,
    Refine,
    RefineCallStats,
    RefineEvent,
    RefineStatistics,
    Revision,
    apply_revision,
    change_fraction,
    diff_ops,
)
from critpath.cascades.scorers import (
    AbstentionScorer,
    AgreementScorer,
    Candidate,
    FunctionScorer,
    LogprobScorer,
    Scorer,
    VerifierScorer,
)
from critpath.cascades.vote import Ballot, Seeded, Vote, VoteFailedError, VoteResult

__all__ = [
    "DEFAULT_KIND",
    "AbstentionScorer",
    "Acceptance",
    "AgreementScorer",
    "AnswerKind",
    "AnswerKindName",
    "Ballot",
    "Candidate",
    "Cascade",
    "CascadeFailedError",
    "CascadeResult",
    "ChoiceKind",
    "Decided",
    "Decider",
    "DiffOp",
    "DraftDelta",
    "Escalation",
    "Final",
    "FunctionKind",
    "FunctionScorer",
    "LiteralKind",
    "LogprobScorer",
    "MathKind",
    "NumberKind",
    "Reason",
    "Refine",
    "RefineCallStats",
    "RefineEvent",
    "RefineStatistics",
    "Revision",
    "Score",
    "Scorer",
    "Seeded",
    "Tally",
    "TextKind",
    "ThresholdFit",
    "Tier",
    "TierReport",
    "VerifierScorer",
    "Vote",
    "VoteFailedError",
    "VoteResult",
    "accept",
    "answer_confidence",
    "apply_revision",
    "as_kind",
    "change_fraction",
    "completion_chunks",
    "diff_ops",
    "escalation_delay",
    "extract_final",
    "fit_threshold",
    "is_abstention",
    "kind_named",
    "normalise_answer",
    "normalise_choice",
    "tally",
]
