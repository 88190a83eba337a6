"""What kind of answers a recorded data set holds, and whether its answers can be read.

- ``dataset_kind``: the data set's ``AnswerKind``: ``dataset.json``'s ``answer_kind``;
  without one, questions with ``options`` are ``choice``, and free-form questions are
  ``number`` when every right answer is a number, else ``text``.
- ``readability``: per model, the share of its recorded answers (``pred``) that are
  no answer of that kind; ``warnings`` turns the alarming ones (and a data set on
  which every model scores 0) into sentences the benchmark prints.
- ``strict_accuracy``: strict string match of outcomes (spaces and ``$`` removed, or
  the kind's own ``strict``), the lower bound reported beside equivalence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from critpath.adapters.sim.answers import Question, RecordedAnswers
from critpath.cascades.answers import (
    AnswerKind,
    ChoiceKind,
    NumberKind,
    TextKind,
    kind_named,
    parse_number,
)
from critpath.errors import ConfigError
from critpath.strategies.evaluate import Outcome

__all__ = ["UNREADABLE_WARN", "dataset_kind", "readability", "strict_accuracy", "warnings"]

UNREADABLE_WARN = 0.5
"""A model whose recorded answers are more than this share unreadable is warned about."""


def dataset_kind(answers: RecordedAnswers) -> AnswerKind:
    """The answer kind of a recorded data set (see the module docstring)."""
    if answers.answer_kind is not None:
        try:
            return kind_named(answers.answer_kind)
        except ConfigError as exc:
            raise ConfigError(f"{answers.directory / 'dataset.json'}: {exc}") from None
    with_options = [q for q in answers.questions if q.options]
    if with_options and len(with_options) < len(answers.questions):
        raise ConfigError(
            f"{answers.directory / 'questions.jsonl'}: {len(with_options)} of "
            f"{len(answers.questions)} questions have options; declare answer_kind in "
            "dataset.json"
        )
    if with_options:
        return ChoiceKind()
    if all(parse_number(q.answer) is not None for q in answers.questions):
        return NumberKind()
    return TextKind()


def readability(
    answers: RecordedAnswers, kind: AnswerKind, models: Sequence[str]
) -> dict[str, float]:
    """Per model: the share of its non-null recorded answers that ``kind`` cannot read
    (no answer of that kind: e.g. not a Python literal)."""
    out: dict[str, float] = {}
    for name in models:
        preds = [r["pred"] for r in answers.responses(name).values() if r.get("pred") is not None]
        bad = sum(1 for p in preds if kind.normalise(str(p)) is None)
        out[name] = round(bad / len(preds), 4) if preds else 1.0
    return out


def warnings(directory: str, kind: AnswerKind, unreadable: Mapping[str, float]) -> list[str]:
    """Sentences about models whose answers are mostly unreadable with ``kind``."""
    return [
        f"{name}: {share:.0%} of its recorded answers are no {kind.name} answer "
        f"(unreadable, counted as abstentions) in {directory}"
        for name, share in sorted(unreadable.items())
        if share > UNREADABLE_WARN
    ]


def strict_accuracy(
    kind: AnswerKind, outcomes: Sequence[Outcome], questions: Mapping[str, Question]
) -> float:
    """The share of ``outcomes`` whose answer equals the right one as strings
    (``kind.strict``): a lower bound on accuracy by equivalence."""
    if not outcomes:
        return float("nan")
    right = 0
    for o in outcomes:
        q = questions.get(o.question)
        if q is not None and o.extracted is not None:
            right += kind.strict(o.extracted) == kind.strict(q.answer)
    return round(right / len(outcomes), 4)
