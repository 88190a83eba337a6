"""Answer kinds: how to read the final answer of a reply, normalise it, compare two.

Votes, scorers, the replay and the benchmark share one notion of what an answer is.
An ``AnswerKind`` does three things:

- ``extract(reply)``: the final answer as the reply wrote it, or ``None`` when it
  abstains (no answer to be found, or an explicit "I don't know"). Where it looks, in
  order (``extract_final``): a JSON object's ``"answer"`` field, the last
  ``\\boxed{...}``, the last "The answer is ..." / "Answer: ...", else the last line.
- ``normalise(answer)``: a canonical text of an extracted answer (the key votes count
  on), or ``None`` when it is not an answer of this kind (it then counts as an
  abstention).
- ``equivalent(a, b)``: whether two extracted answers are the same answer.

Derived from them: ``key(reply)`` (extract, then normalise: a ``Normaliser``),
``abstains(reply)`` and ``correct(answer, truth)``.

Kinds (``kind_named`` by ``AnswerKindName``):

- ``ChoiceKind`` (``choice``): a multiple-choice letter ("The answer is (C)", a JSON
  ``"answer": "C"``, ``\\boxed{C}``);
- ``NumberKind`` (``number``): ``1,000`` = ``1000.0`` = ``$1000`` = ``1e3``; ``3/4`` =
  ``0.75`` (exact rational comparison);
- ``MathKind`` (``math``): LaTeX and symbolic expressions, compared with
  ``math-verify`` (sympy underneath): ``\\frac12`` = ``0.5``, ``2\\sqrt5`` =
  ``\\sqrt{20}``, ``(1,-2)``, ``x^2+1`` = ``1+x^2``. It needs the ``math`` extra;
- ``LiteralKind`` (``python_literal``): values compared after ``ast.literal_eval``
  with Python's ``==`` (what CRUXEval's ``assert f(x) == answer`` checks);
- ``TextKind`` (``text``): exact match after lowercasing, collapsing whitespace and
  dropping quotes, markup and a final period;
- ``FunctionKind``: your own, from functions.

``DEFAULT_KIND`` is the library's historical normaliser (``normalise_answer``: the
letter, else the cleaned text) as a kind, for votes and scorers given no kind.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import re
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from enum import StrEnum
from fractions import Fraction
from typing import Any

from critpath.adapters.sim.answers import parse_choice
from critpath.errors import ConfigError

__all__ = [
    "DEFAULT_KIND",
    "AnswerKind",
    "AnswerKindName",
    "AnswerKindLike",
    "ChoiceKind",
    "ABSTENTION_PATTERNS",
    "FunctionKind",
    "LiteralKind",
    "MathKind",
    "NumberKind",
    "TextKind",
    "as_kind",
    "default_normalise",
    "extract_final",
    "group_index",
    "kind_named",
    "parse_number",
    "says_it_does_not_know",
    "strict_key",
]

ABSTENTION_PATTERNS: tuple[str, ...] = (
    r"\bi (?:do not|don't|dont) know\b",
    r"\bi(?:'m| am) not (?:sure|certain)\b",
    r"\b(?:cannot|can't|can not|unable to) (?:answer|determine|tell)\b",
    r"\bnot enough information\b",
    r"\bno answer\b",
)
_ABSTAIN = re.compile("|".join(ABSTENTION_PATTERNS), re.IGNORECASE)


def says_it_does_not_know(text: str) -> bool:
    """Whether ``text`` says it does not know ("I don't know", "cannot determine"...).

    >>> says_it_does_not_know("I don\u2019t know."), says_it_does_not_know("42")
    (True, False)
    """
    return _ABSTAIN.search(text.replace("\u2019", "'")) is not None


# ---- extraction -----------------------------------------------------------------------

_ANSWER_FIELD = re.compile(r'"answer"\s*:\s*')
_STRING_BODY = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_UNESCAPE = re.compile(r'\\(["\\/]|u[0-9a-fA-F]{4})')


def _unescape(raw: str, latex: bool) -> str:
    """A JSON string body decoded: strictly (``\\n`` is a newline), or with ``latex``
    tolerantly: ``\\"``, ``\\\\``, ``\\/`` and ``\\uXXXX`` are decoded, any other
    backslash is kept (models write ``"\\frac"`` in JSON, which a strict decoder reads
    as a form feed). A body that is not valid JSON is decoded tolerantly."""
    if not latex:
        try:
            value = json.loads(f'"{raw}"')
            if isinstance(value, str) and not any(c in value for c in "\b\f"):
                return value  # a backspace or form feed was "\\beta" or "\\frac": LaTeX
        except json.JSONDecodeError:
            pass

    def sub(m: re.Match[str]) -> str:
        s = m.group(1)
        return chr(int(s[1:], 16)) if s[0] == "u" else s

    return _UNESCAPE.sub(sub, raw)


def _json_answer(reply: str, latex: bool = False) -> tuple[bool, str | None]:
    """``(found, answer)`` from the last ``"answer": ...`` field of a JSON reply:
    ``found`` is whether there is such a field; ``answer`` is ``None`` for ``null``."""
    fields = list(_ANSWER_FIELD.finditer(reply))
    if not fields:
        return False, None
    rest = reply[fields[-1].end() :]
    if rest.startswith('"'):
        m = _STRING_BODY.match(rest)
        if m is None:
            return False, None
        return True, _unescape(m.group(1), latex)
    try:
        value, _ = json.JSONDecoder().raw_decode(rest)
    except json.JSONDecodeError:
        return False, None
    if value is None:
        return True, None
    if isinstance(value, bool | int | float | list | dict):
        return True, repr(value) if not isinstance(value, int | float) else json.dumps(value)
    return True, str(value)


def _last_boxed(reply: str) -> str | None:
    start = max(reply.rfind("\\boxed{"), reply.rfind("\\fbox{"))
    if start < 0:
        return None
    i = reply.index("{", start) + 1
    depth = 1
    for j in range(i, len(reply)):
        if reply[j] == "{":
            depth += 1
        elif reply[j] == "}":
            depth -= 1
            if depth == 0:
                return reply[i:j]
    return None


def _clean_tail(answer: str) -> str:
    a = answer.strip()
    a = re.sub(r"^\*\*|\*\*$", "", a).strip()
    if len(a) > 1 and a.endswith(".") and not a.endswith(".."):
        a = a[:-1].rstrip()
    return a


def extract_final(reply: str, *, latex: bool = False) -> str | None:
    """The final answer as ``reply`` wrote it, or ``None``: a JSON ``"answer"`` field
    (``null``: none), else the last ``\\boxed{}``, else the last "The answer is X" or
    "Answer: X", else the last non-empty line. ``latex``: JSON strings hold LaTeX
    (backslashes other than ``\\\\`` and ``\\"`` are kept as written).

    >>> extract_final('{"reasoning": "...", "answer": "\\\\frac{1}{2}"}', latex=True)
    '\\\\frac{1}{2}'
    >>> extract_final('{"answer": "a\\\\nb"}')
    'a\\nb'
    >>> extract_final("so $x = \\\\boxed{5}$."), extract_final("Thus the answer is 12.")
    ('5', '12')
    >>> extract_final("Some work.\\n\\n42\\n"), extract_final("   ") is None
    ('42', True)
    """
    found, answer = _json_answer(reply, latex)
    if found:
        return None if answer is None or not answer.strip() else answer.strip()
    boxed = _last_boxed(reply)
    if boxed is not None:
        return boxed.strip() or None
    said = list(_ANSWER_IS.finditer(reply))
    if said:
        a = _clean_tail(said[-1].group(1).splitlines()[0])
        if a:
            return a
    lines = [x.strip() for x in reply.strip().splitlines() if x.strip()]
    if not lines:
        return None
    return _clean_tail(lines[-1]) or None


def strict_key(answer: str) -> str:
    """The answer with spaces and ``$`` removed: strict string match compares these
    (a lower bound on accuracy, reported beside the kind's equivalence)."""
    return re.sub(r"[\s$]", "", answer)


# ---- the kinds ------------------------------------------------------------------------


class AnswerKindName(StrEnum):
    """The kinds a data set's ``dataset.json`` may declare as ``answer_kind``."""

    CHOICE = "choice"
    NUMBER = "number"
    MATH = "math"
    PYTHON_LITERAL = "python_literal"
    TEXT = "text"


class AnswerKind(ABC):
    """How to extract, normalise and compare answers of one kind (module docstring).

    Subclasses write ``normalise``; ``extract`` defaults to ``extract_final`` with an
    "I don't know" answer as an abstention, ``equivalent`` to equal normal forms.
    """

    name: str = "answer"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def extract(self, reply: str) -> str | None:
        """The final answer in ``reply`` as written; ``None``: it abstains."""
        answer = extract_final(reply)
        if answer is None or says_it_does_not_know(answer):
            return None
        return answer

    @abstractmethod
    def normalise(self, answer: str) -> str | None:
        """The canonical text of an extracted answer; ``None``: not an answer of this kind."""

    def equivalent(self, a: str, b: str) -> bool:
        """Whether two extracted answers are the same answer."""
        na = self.normalise(a)
        return na is not None and na == self.normalise(b)

    def key(self, reply: str) -> str | None:
        """``normalise(extract(reply))``: the key a vote counts; ``None``: abstains."""
        answer = self.extract(reply)
        return None if answer is None else self.normalise(answer)

    def abstains(self, reply: str) -> bool:
        """No answer of this kind in ``reply`` (or it says it does not know)."""
        return not reply.strip() or self.key(reply) is None

    def correct(self, answer: str | None, truth: str) -> bool:
        """Whether an extracted ``answer`` (``None``: abstained) is the right one."""
        return (
            answer is not None
            and self.normalise(answer) is not None
            and (self.equivalent(answer, truth))
        )

    def strict(self, answer: str) -> str:
        """The answer for strict string match (``strict_key``: spaces and ``$`` removed),
        the lower bound the kind's equivalence is reported beside."""
        return strict_key(answer)

    def span(self, reply: str) -> tuple[int, int] | None:
        """Where the final answer sits in ``reply`` (its last occurrence), for logprob
        confidence; ``None`` when it cannot be found."""
        answer = self.extract(reply)
        if answer is None or answer.strip() == reply.strip():
            return None  # no answer apart from the reply
        at = reply.rfind(answer)
        return None if at < 0 else (at, at + len(answer))


class ChoiceKind(AnswerKind):
    """A multiple-choice letter ``A``-``J``.

    A reply that says it does not know anywhere abstains (the replies are reasoning
    that ends in a letter); the letter is "The answer is (X)", else a JSON
    ``"answer"`` field or ``\\boxed{}`` holding a single letter (or "(X)").

    >>> k = ChoiceKind()
    >>> k.key("Let us think. The answer is (C)."), k.key('{"answer": "(b)"}'), k.key("Paris")
    ('C', 'B', None)
    """

    name = AnswerKindName.CHOICE.value

    def __init__(self, letters: str = "ABCDEFGHIJ") -> None:
        self.letters = letters

    def extract(self, reply: str) -> str | None:
        if says_it_does_not_know(reply):
            return None
        letter = parse_choice(reply)
        if letter is not None and letter in self.letters:
            return letter
        found, answer = _json_answer(reply)
        if not found:
            answer = _last_boxed(reply)
        if answer is None:
            return None
        return self.normalise(answer)

    def normalise(self, answer: str) -> str | None:
        a = answer.strip().strip("*$").strip()
        a = re.sub(r"^\\text\{(.*)\}$", r"\1", a).strip()
        a = a.strip("()").strip().rstrip(".").strip("()").strip().upper()
        return a if len(a) == 1 and a in self.letters else None

    def span(self, reply: str) -> tuple[int, int] | None:
        spans = list(re.finditer(r"\([A-J]\)", reply))
        if spans:
            return spans[-1].span()
        return super().span(reply)


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_GROUPED = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?$")


def parse_number(answer: str) -> Fraction | None:
    """A number written as ``1,000``, ``$1000``, ``1000.0``, ``1e3``, ``50%`` (0.5 is
    not assumed: ``50%`` is 50), ``3/4`` or ``\\frac{3}{4}``; ``None`` if not a number.

    >>> parse_number("$1,000.00"), parse_number("3/4"), parse_number("x")
    (Fraction(1000, 1), Fraction(3, 4), None)
    """
    a = answer.strip()
    a = re.sub(r"^\\text\{(.*)\}$", r"\1", a)
    a = a.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    a = a.replace("\\!", "").replace("{,}", ",").strip().rstrip(".").strip()
    m = re.fullmatch(r"\\d?frac\{([^{}]+)\}\{([^{}]+)\}", a) or re.fullmatch(
        r"([^/\s]+)\s*/\s*([^/\s]+)", a
    )
    if m is not None:
        num, den = parse_number(m.group(1)), parse_number(m.group(2))
        if num is None or den is None or den == 0:
            return None
        return num / den
    if _GROUPED.match(a):
        a = a.replace(",", "")
    if not _NUMBER.fullmatch(a):
        return None
    try:
        return Fraction(a)
    except (ValueError, ZeroDivisionError):
        return None


class NumberKind(AnswerKind):
    """A number; equal when equal as exact rationals (``parse_number``).

    >>> k = NumberKind()
    >>> k.equivalent("1,000", "1000.0"), k.equivalent("$1000", "1e3"), k.normalise("0.75")
    (True, True, '3/4')
    """

    name = AnswerKindName.NUMBER.value

    def normalise(self, answer: str) -> str | None:
        value = parse_number(answer)
        return None if value is None else str(value)


def _clean_text(answer: str) -> str:
    a = answer.strip().strip("*`").strip()
    a = re.sub(r"^\\text\{(.*)\}$", r"\1", a)
    if len(a) >= 2 and a[0] == a[-1] and a[0] in "\"'":
        a = a[1:-1]
    return " ".join(a.lower().split()).rstrip(".").strip()


class TextKind(AnswerKind):
    """Free text; equal after lowercasing, collapsing whitespace, dropping surrounding
    quotes, markup and a final period.

    >>> TextKind().equivalent("  Paris. ", '"paris"')
    True
    """

    name = AnswerKindName.TEXT.value

    def normalise(self, answer: str) -> str | None:
        return _clean_text(answer) or None


_MISSING: Any = object()


class LiteralKind(AnswerKind):
    """A Python literal (``ast.literal_eval``); equal when the values are ``==``, as
    ``assert f(x) == answer`` would judge. A leading ``assert ... ==`` is dropped; an
    answer that is not a literal is no answer of this kind.

    >>> k = LiteralKind()
    >>> k.equivalent("[(4, 1), (2,3)]", "[(4,1), (2, 3)]"), k.equivalent("'abc'", '"abc"')
    (True, True)
    >>> k.normalise("{'b': 1, 'a': 2}"), k.normalise("abc") is None
    ("{'a': 2, 'b': 1}", True)
    """

    name = AnswerKindName.PYTHON_LITERAL.value

    @staticmethod
    @functools.lru_cache(maxsize=65536)
    def value(answer: str) -> Any:
        """The literal's value, or a private sentinel when it is not a literal."""
        a = answer.strip().strip("`").strip()
        a = re.sub(r"^assert\s+.*?==\s*", "", a, flags=re.DOTALL) if a.startswith("assert") else a
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)  # "1a" and the like
                return ast.literal_eval(a)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return _MISSING

    def strict(self, answer: str) -> str:
        """The answer stripped (spaces inside a string literal are part of its value)."""
        return answer.strip()

    def normalise(self, answer: str) -> str | None:
        v = self.value(answer)
        if v is _MISSING:
            return None
        return _canonical_repr(v)

    def equivalent(self, a: str, b: str) -> bool:
        va, vb = self.value(a), self.value(b)
        if va is _MISSING or vb is _MISSING:
            return False
        try:
            return bool(va == vb)
        except Exception:  # pragma: no cover - literal values compare without raising
            return False


def _canonical_repr(v: Any) -> str:
    """``repr`` with dict keys and set members sorted (where they sort), so equal
    values of those types get equal keys."""
    if isinstance(v, dict):
        items = [(_canonical_repr(k), _canonical_repr(x)) for k, x in v.items()]
        return "{" + ", ".join(f"{k}: {x}" for k, x in sorted(items)) + "}"
    if isinstance(v, set | frozenset):
        inner = ", ".join(sorted(_canonical_repr(x) for x in v))
        return ("frozenset({" + inner + "})") if isinstance(v, frozenset) else "{" + inner + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_canonical_repr(x) for x in v) + "]"
    if isinstance(v, tuple):
        inner = ", ".join(_canonical_repr(x) for x in v)
        return "(" + inner + ("," if len(v) == 1 else "") + ")"
    return repr(v)


class MathKind(AnswerKind):
    """A mathematical answer (a number, LaTeX or a symbolic expression), compared with
    ``math-verify`` (``pip install critpath[math]``): both sides are parsed (LaTeX, else
    a plain expression) into sympy and checked for equivalence. An answer it cannot
    parse falls back to its cleaned text (so ``\\text{Monday}`` still matches itself).
    ``timeout_s`` bounds each parse and check (a signal alarm: only in the main thread;
    elsewhere unbounded).

    >>> k = MathKind()
    >>> k.equivalent("\\\\frac12", "0.5"), k.equivalent("2\\\\sqrt{5}", "\\\\sqrt{20}")
    (True, True)
    >>> k.equivalent("(1,-2)", "(1, -2)"), k.equivalent("18", "16")
    (True, False)
    """

    name = AnswerKindName.MATH.value

    def __init__(self, *, timeout_s: int = 5) -> None:
        try:
            import math_verify
        except ImportError as exc:
            raise ConfigError(
                "math answers need math-verify: pip install 'critpath[math]'"
            ) from exc
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        self._mv = math_verify
        self._configs = [math_verify.LatexExtractionConfig(), math_verify.ExprExtractionConfig()]
        self.timeout_s = timeout_s
        self._parsed = functools.lru_cache(maxsize=65536)(self._parse)
        self._same = functools.lru_cache(maxsize=262144)(self._verify)

    def _timeout(self) -> int | None:
        main = threading.current_thread() is threading.main_thread()
        return self.timeout_s if main and self.timeout_s > 0 else None

    def _parse(self, answer: str) -> tuple[Any, ...]:
        a = answer.strip()
        if not a:
            return ()
        text = a if "$" in a or "\\(" in a or "\\[" in a else f"${a}$"
        try:
            parsed = self._mv.parse(text, self._configs, parsing_timeout=self._timeout())
        except Exception:  # math-verify and sympy raise many types on odd input
            return ()
        return tuple(parsed)

    def _verify(self, a: str, b: str) -> bool:
        pa, pb = self._parsed(a), self._parsed(b)
        if pa and pb:
            try:
                if self._mv.verify(list(pa), list(pb), timeout_seconds=self._timeout()):
                    return True
            except Exception:
                pass
        na, nb = _math_text(a), _math_text(b)
        return bool(na) and na == nb

    def normalise(self, answer: str) -> str | None:
        number = parse_number(answer)
        if number is not None:
            return str(number)
        parsed = self._parsed(answer)
        if parsed:
            return str(parsed[-1]) if len(parsed) > 1 else str(parsed[0])
        return _math_text(answer) or None

    def equivalent(self, a: str, b: str) -> bool:
        if a.strip() == b.strip():
            return bool(a.strip())
        na, nb = parse_number(a), parse_number(b)
        if na is not None and nb is not None:  # plain numbers: no need for sympy
            return na == nb
        x, y = sorted((a, b))
        return self._same(x, y)

    def extract(self, reply: str) -> str | None:
        answer = extract_final(reply, latex=True)
        if answer is None or says_it_does_not_know(answer):
            return None
        return answer


def _math_text(answer: str) -> str:
    a = answer.replace("\\!", "").replace("\\,", "").replace("\\left", "").replace("\\right", "")
    a = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}", r"\1", a)
    a = a.replace("dfrac", "frac").replace("tfrac", "frac")
    return re.sub(r"[\s$]", "", a).rstrip(".").lower()


class FunctionKind(AnswerKind):
    """Your own kind, from functions: ``normalise(answer) -> str | None`` (default: the
    cleaned text), optional ``equivalent(a, b) -> bool`` (default: equal normal forms)
    and ``extract(reply) -> str | None`` (default: ``extract_final`` with abstention).

    >>> k = FunctionKind(lambda a: a.strip().upper() or None, name="upper")
    >>> k.key("answer: abc"), k.equivalent("x", "X")
    ('ABC', True)
    """

    def __init__(
        self,
        normalise: Callable[[str], str | None] | None = None,
        *,
        equivalent: Callable[[str, str], bool] | None = None,
        extract: Callable[[str], str | None] | None = None,
        name: str = "custom",
    ) -> None:
        self._normalise = normalise or (lambda a: _clean_text(a) or None)
        self._equivalent = equivalent
        self._extract = extract
        self.name = name

    def __repr__(self) -> str:
        return f"FunctionKind({self.name!r})"

    def extract(self, reply: str) -> str | None:
        if self._extract is not None:
            return self._extract(reply)
        return super().extract(reply)

    def normalise(self, answer: str) -> str | None:
        return self._normalise(answer)

    def equivalent(self, a: str, b: str) -> bool:
        if self._equivalent is not None:
            return self._equivalent(a, b)
        return super().equivalent(a, b)


def default_normalise(text: str) -> str | None:
    """A reply as votes compared it before answer kinds: the letter, else the text
    stripped, lowercased, whitespace collapsed and a final period dropped; ``None`` for
    an abstention (``critpath.cascades.decisions.normalise_answer``)."""
    if says_it_does_not_know(text):
        return None
    letter = parse_choice(text)
    if letter is not None:
        return letter
    clean = " ".join(text.lower().split()).rstrip(".").strip()
    return clean or None


DEFAULT_KIND: AnswerKind = FunctionKind(default_normalise, extract=lambda r: r, name="default")
"""The default for votes and scorers given no kind: the letter of "The answer is (X)",
else the whole reply cleaned (``decisions.normalise_answer``)."""

AnswerKindLike = AnswerKind | AnswerKindName | str | None
"""A kind, its name, or ``None`` (``DEFAULT_KIND``)."""


def kind_named(name: str | AnswerKindName) -> AnswerKind:
    """The kind called ``name`` (``choice``, ``number``, ``math``, ``python_literal``,
    ``text``); ``ConfigError`` for any other."""
    try:
        which = AnswerKindName(name)
    except ValueError:
        known = ", ".join(k.value for k in AnswerKindName)
        raise ConfigError(f"unknown answer kind {name!r}; known: {known}") from None
    factories: dict[AnswerKindName, Callable[[], AnswerKind]] = {
        AnswerKindName.CHOICE: ChoiceKind,
        AnswerKindName.NUMBER: NumberKind,
        AnswerKindName.MATH: MathKind,
        AnswerKindName.PYTHON_LITERAL: LiteralKind,
        AnswerKindName.TEXT: TextKind,
    }
    return factories[which]()


def as_kind(
    kind: AnswerKindLike = None, normalise: Callable[[str], str | None] | None = None
) -> AnswerKind:
    """A kind from a kind, a name, or a bare normaliser (``normalise=``, the older way:
    the whole reply is its answer, equal keys are equal answers)."""
    if kind is not None and normalise is not None:
        raise ConfigError("give kind= or normalise=, not both")
    if normalise is not None:
        return FunctionKind(normalise, extract=lambda r: r, name="normaliser")
    if kind is None:
        return DEFAULT_KIND
    if isinstance(kind, AnswerKind):
        return kind
    return kind_named(kind)


def group_index(kind: AnswerKind, groups: Sequence[str], answer: str) -> int | None:
    """The index of the first of ``groups`` (extracted answers, one per group) that
    ``answer`` is equivalent to, or ``None``."""
    for i, rep in enumerate(groups):
        if kind.equivalent(rep, answer):
            return i
    return None
