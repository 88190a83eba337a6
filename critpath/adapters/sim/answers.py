"""What simulated models answer: a synthetic task, recorded real answers, or a function.

An answer source is deterministic per (model, question): the same model asked the
same question always gives the same answer, whatever the order of requests, as a
recorded model does. Requests name their question with ``extra_body={"question_id":
...}``; otherwise the last user message (or the prompt) is looked up as question text.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from critpath.adapters.protocol import ModelRequest
from critpath.errors import ConfigError

__all__ = [
    "ABSTAIN_TEXT",
    "Answer",
    "AnswerReader",
    "AnswerSource",
    "FunctionAnswers",
    "Question",
    "RecordedAnswers",
    "SyntheticTask",
    "answer_text",
    "parse_choice",
    "question_key",
    "stable_rng",
]

LETTERS = "ABCDEFGHIJ"
ABSTAIN_TEXT = "I don't know."


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    text: str
    options: tuple[str, ...]
    answer: str
    category: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """A model's answer: its text, how many tokens it streams, the letter it chose
    (``None``: it abstained) and its confidence in (0, 1] (the probability it puts on
    the letter; a simulated model reports it as the answer token's logprob)."""

    text: str
    tokens: int
    choice: str | None
    confidence: float


class AnswerSource(Protocol):
    def answer(self, model: str, request: ModelRequest) -> Answer: ...


def stable_rng(*parts: object) -> random.Random:
    """A ``random.Random`` seeded from ``parts`` (stable across processes and runs)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def question_key(request: ModelRequest) -> str | None:
    """The question a request asks: ``extra_body['question_id']``, else its text."""
    qid = request.extra_body.get("question_id")
    if qid is not None:
        return str(qid)
    if request.messages is not None:
        users = [m.content for m in request.messages if m.role == "user"]
        return users[-1] if users else None
    return request.prompt


def answer_text(choice: str | None, tokens: int, preamble: str = "") -> str:
    """Text of about ``tokens`` words ending in "The answer is (X)." (or abstaining)."""
    final = ABSTAIN_TEXT if choice is None else f"The answer is ({choice})."
    words = preamble.split() if preamble else []
    need = max(0, tokens - len(final.split()) - len(words))
    filler = ["Let", "us", "think", "step", "by", "step."]
    words += [filler[i % len(filler)] for i in range(need)]
    return " ".join([*words, final]) if words else final


def parse_choice(text: str) -> str | None:
    """The letter in "The answer is (X)" (or "answer is X"), or None: an abstention."""
    low = text.rfind("answer is")
    if low < 0:
        return None
    tail = text[low + len("answer is") :].strip().lstrip("(").strip()
    return tail[0] if tail and tail[0] in LETTERS else None


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class SyntheticTask:
    """Multiple-choice questions with a latent difficulty, models with a latent ability.

    P(correct) = sigmoid(1.7 * (ability - difficulty)): bigger models are right more
    often. Wrong answers fall on the question's shared distractor with probability
    ``shared_error`` (errors correlate across models, as in reality); weak models
    abstain on questions far above them. ``abilities`` maps model names to abilities;
    unknown names get one from the size in their name (``small``/``medium``/``large``).
    Answers are deterministic per (seed, model, question).
    """

    DEFAULT_ABILITIES: Mapping[str, float] = {"small": -0.4, "medium": 0.3, "large": 1.0}

    def __init__(
        self,
        n_questions: int = 1000,
        *,
        n_options: int = 4,
        seed: int = 0,
        abilities: Mapping[str, float] | None = None,
        shared_error: float = 0.6,
        tokens_mean: float = 120.0,
    ) -> None:
        if n_questions < 1 or not 2 <= n_options <= len(LETTERS):
            raise ConfigError("SyntheticTask needs n_questions >= 1 and 2..10 options")
        self.seed = seed
        self.abilities = dict(self.DEFAULT_ABILITIES if abilities is None else abilities)
        self.shared_error = shared_error
        self.tokens_mean = tokens_mean
        rng = random.Random(seed)
        self.questions: list[Question] = []
        self._difficulty: dict[str, float] = {}
        self._distractor: dict[str, str] = {}
        for i in range(n_questions):
            qid = f"syn-{i}"
            letters = LETTERS[:n_options]
            answer = rng.choice(letters)
            self._difficulty[qid] = rng.gauss(0.0, 1.0)
            self._distractor[qid] = rng.choice([c for c in letters if c != answer])
            options = tuple(f"option {c} of question {i}" for c in letters)
            self.questions.append(
                Question(qid, f"Synthetic question {i}: which option?", options, answer)
            )
        self._by_key = {q.id: q for q in self.questions} | {q.text: q for q in self.questions}

    def question_for(self, key: str) -> Question | None:
        """The question with this id or text, or ``None``."""
        return self._by_key.get(key)

    def ability(self, model: str) -> float:
        if model in self.abilities:
            return self.abilities[model]
        for size, value in self.DEFAULT_ABILITIES.items():
            if size in model:
                return value
        raise ConfigError(f"SyntheticTask: no ability for model {model!r}; pass abilities=")

    def p_correct(self, model: str, question_id: str) -> float:
        return _sigmoid(1.7 * (self.ability(model) - self._difficulty[question_id]))

    def answer(self, model: str, request: ModelRequest) -> Answer:
        key = question_key(request)
        q = self._by_key.get(key) if key is not None else None
        if q is None:  # not one of our questions: a generic answer
            return Answer(answer_text(None, 20), 20, None, 0.5)
        rng = stable_rng(self.seed, model, q.id)
        p = self.p_correct(model, q.id)
        tokens = max(8, int(rng.lognormvariate(math.log(self.tokens_mean), 0.4)))
        # Weak models sometimes say they do not know when the question is far above them.
        if rng.random() < 0.5 * max(0.0, 0.5 - p):
            return Answer(answer_text(None, 8), 8, None, 1.0 - p)
        if rng.random() < p:
            choice = q.answer
        elif rng.random() < self.shared_error:
            choice = self._distractor[q.id]
        else:
            choice = rng.choice([c for c in LETTERS[: len(q.options)] if c != q.answer])
        # Reported confidence: the model's own chance of being right, seen through noise.
        confidence = _sigmoid(math.log(p / (1 - p)) + rng.gauss(0.0, 0.6)) if 0 < p < 1 else p
        return Answer(answer_text(choice, tokens), tokens, choice, max(confidence, 1e-6))


class AnswerReader(Protocol):
    """What the replay of free-form answers needs from an answer kind
    (``critpath.cascades.answers.AnswerKind`` is one): the final answer in a reply
    (``None``: it abstains), its normal form, and equivalence of two answers."""

    def extract(self, reply: str) -> str | None: ...

    def normalise(self, answer: str) -> str | None: ...

    def equivalent(self, a: str, b: str) -> bool: ...


def _read_jsonl(
    path: Path, required: Mapping[str, tuple[type, ...]]
) -> list[tuple[int, dict[str, object]]]:
    """``(line number, object)`` for each non-empty line; a ``ConfigError`` naming the
    file, line and field for a line that is not a JSON object or lacks a field of the
    right type (``type(None)`` in a field's types: it may be null)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    rows: list[tuple[int, dict[str, object]]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{n}: not a JSON object: {exc.msg}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}:{n}: not a JSON object")
        for name, types in required.items():
            if name not in d:
                raise ConfigError(f"{path}:{n}: field {name!r} is missing")
            value = d[name]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise ConfigError(
                    f"{path}:{n}: field {name!r} must be {want}, got {type(value).__name__}"
                )
        rows.append((n, d))
    return rows


class RecordedAnswers:
    """Replay real models' answers in the format of ``shared/data/mmlu_pro`` (or
    ``math_l5``, ``crux``: free-form answers).

    ``questions.jsonl`` (``id``, ``question``, ``answer``; ``options`` for multiple
    choice, optional ``category``), ``responses/<model>.jsonl`` (``id``, ``pred`` or
    null, ``output_chars``, optional ``text``), ``models.json`` (``params_b``...),
    optional ``dataset.json`` (``answer_kind``: ``answer_kind`` here; ``None`` when
    undeclared). Malformed files raise one ``ConfigError`` naming file, line and field.

    A null ``pred`` is an abstention. A replayed answer streams ``output_chars / 4``
    tokens (about 4 characters a token), its recorded text when there is one (for
    free-form answers: when ``reader`` reads the recorded ``pred`` back from it; else a
    reply ending in the JSON ``{"answer": pred}``). Confidence is the model's accuracy
    on the questions it answered (recordings carry no per-question confidence), by
    ``reader``'s equivalence when one is set.
    """

    def __init__(self, directory: str | Path, reader: AnswerReader | None = None) -> None:
        self.directory = Path(directory)
        self.reader = reader
        qpath = self.directory / "questions.jsonl"
        if not qpath.is_file():
            raise ConfigError(f"no questions.jsonl in {self.directory}")
        need: dict[str, tuple[type, ...]] = {"id": (str, int), "question": (str,),
                                             "answer": (str, int, float)}  # fmt: skip
        self.questions: list[Question] = []
        seen: set[str] = set()
        for n, d in _read_jsonl(qpath, need):
            options = d.get("options", [])
            if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
                raise ConfigError(f"{qpath}:{n}: field 'options' must be a list of strings")
            category = d.get("category", "")
            qid = str(d["id"])
            if qid in seen:
                raise ConfigError(f"{qpath}:{n}: field 'id': {qid!r} appears twice")
            seen.add(qid)
            self.questions.append(
                Question(qid, str(d["question"]), tuple(options), str(d["answer"]),
                         category if isinstance(category, str) else "")
            )  # fmt: skip
        if not self.questions:
            raise ConfigError(f"{qpath}: no questions")
        self._by_key = {q.id: q for q in self.questions} | {q.text: q for q in self.questions}
        self.models: dict[str, dict[str, object]] = {}
        mpath = self.directory / "models.json"
        if mpath.is_file():
            models = _read_json(mpath)
            if not isinstance(models, dict) or not all(
                isinstance(v, dict) for v in models.values()
            ):
                raise ConfigError(f"{mpath}: must map each model's name to an object")
            self.models = models
        self.answer_kind: str | None = None
        dpath = self.directory / "dataset.json"
        if dpath.is_file():
            meta = _read_json(dpath)
            kind = meta.get("answer_kind") if isinstance(meta, dict) else None
            if not isinstance(kind, str):
                raise ConfigError(f"{dpath}: field 'answer_kind' must be a string")
            self.answer_kind = kind
        self._responses: dict[str, dict[str, dict[str, object]]] = {}
        self._accuracy: dict[str, float] = {}

    def available_models(self) -> list[str]:
        return sorted(p.stem for p in (self.directory / "responses").glob("*.jsonl"))

    def params_b(self, model: str) -> float | None:
        value = self.models.get(model, {}).get("params_b")
        return float(value) if isinstance(value, int | float) else None

    def responses(self, model: str) -> dict[str, dict[str, object]]:
        if model not in self._responses:
            path = self.directory / "responses" / f"{model}.jsonl"
            if not path.is_file():
                raise ConfigError(f"no recorded responses for {model!r} in {path.parent}")
            need: dict[str, tuple[type, ...]] = {
                "id": (str, int), "pred": (str, int, float, type(None)), "output_chars": (int,),
            }  # fmt: skip
            rows = _read_jsonl(path, need)
            for n, r in rows:
                if not isinstance(r.get("text", ""), str | type(None)):
                    raise ConfigError(f"{path}:{n}: field 'text' must be a string")
                if isinstance(r["pred"], int | float):
                    r["pred"] = str(r["pred"])
            self._responses[model] = {str(r["id"]): r for _, r in rows}
        return self._responses[model]

    def accuracy(self, model: str) -> float:
        """The model's accuracy on the questions it answered (0.5 if none)."""
        if model not in self._accuracy:
            answered = [r for r in self.responses(model).values() if r.get("pred") is not None]
            truth = {q.id: q.answer for q in self.questions}
            right = sum(1 for r in answered if self._same(str(r["pred"]), truth.get(str(r["id"]))))
            self._accuracy[model] = right / len(answered) if answered else 0.5
        return self._accuracy[model]

    def _same(self, pred: str, truth: str | None) -> bool:
        if truth is None:
            return False
        if self.reader is None:
            return pred == truth
        return self.reader.normalise(pred) is not None and self.reader.equivalent(pred, truth)

    def question(self, key: str) -> Question | None:
        return self._by_key.get(key)

    def answer(self, model: str, request: ModelRequest) -> Answer:
        key = question_key(request)
        q = self._by_key.get(key) if key is not None else None
        if q is None:
            return Answer(answer_text(None, 20), 20, None, 0.5)
        row = self.responses(model).get(q.id)
        if row is None:
            return Answer(ABSTAIN_TEXT, 4, None, 0.5)
        pred = row.get("pred")
        chars = row.get("output_chars")
        tokens = max(1, int(chars) // 4) if isinstance(chars, int) else 100
        text = row.get("text")
        recorded = text if isinstance(text, str) and text.strip() else None
        if not q.options and self.reader is not None:
            return self._free_form(model, pred if isinstance(pred, str) else None, recorded,
                                   tokens)  # fmt: skip
        choice = str(pred) if isinstance(pred, str) and pred in LETTERS else None
        if recorded is not None:
            ends_right = choice is None or parse_choice(recorded) == choice
            body = recorded if ends_right else f"{recorded.rstrip()} The answer is ({choice})."
        else:
            body = answer_text(choice, tokens)
        return Answer(body, tokens, choice, self.accuracy(model))

    def _free_form(self, model: str, pred: str | None, recorded: str | None, tokens: int) -> Answer:
        reader = self.reader
        assert reader is not None
        confidence = self.accuracy(model)
        if pred is None:
            silent = recorded is not None and reader.extract(recorded) is None
            body = recorded if silent and recorded is not None else answer_text(None, tokens)
            return Answer(body, tokens, None, confidence)
        if recorded is not None and reader.extract(recorded) == pred:
            return Answer(recorded, tokens, None, confidence)
        final = json.dumps({"answer": pred})
        need = max(0, tokens - len(final.split()))
        filler = ["Let", "us", "think", "step", "by", "step."]
        words = [filler[i % len(filler)] for i in range(need)]
        return Answer(" ".join([*words, final]), tokens, None, confidence)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None


class FunctionAnswers:
    """Any function ``fn(model, request) -> Answer | str`` as an answer source."""

    def __init__(self, fn: Callable[[str, ModelRequest], Answer | str]) -> None:
        self.fn = fn

    def answer(self, model: str, request: ModelRequest) -> Answer:
        out = self.fn(model, request)
        if isinstance(out, Answer):
            return out
        return Answer(out, max(1, len(out.split())), parse_choice(out), 1.0)
