"""Fast, then refine: a draft streamed from a fast model, then a revision as a diff.

``Refine(fast, strong)`` sends the request to both models **at once**, in parallel;
``async for event in refine.events(request)`` yields:

- ``DraftDelta(text, t)`` for each piece of the fast model's answer as soon as it comes;
- ``Revision(ops, t, ...)``: the strong model's answer as a diff against the draft the
  reader has seen (a list of ``DiffOp``: equal / insert / delete / replace spans with
  character positions in the draft and in the final text), so a UI can show what
  changed, like a git diff. ``apply_revision(draft, ops)`` rebuilds the final text
  exactly;
- ``Final(text, source, t, stats)``: the answer, ``source="draft"`` or ``"revision"``,
  with the call's ``RefineCallStats``.

``t`` is seconds since the call began (the event loop's clock).

The diff (``diff_ops``) is ``difflib.SequenceMatcher`` (``autojunk=False``) over
**words** by default: a word token is a run of non-space characters with the whitespace
before it (``re.findall(r"\\s*\\S+|\\s+")``), so tokens join back to the text exactly and
ops fall on word boundaries; ``diff="chars"`` diffs characters instead. Positions are
always character offsets, whatever the unit.

How a call ends:

- **refined**: the strong model answers: ``Revision``, then ``Final(source="revision")``.
  If it answers before the draft is complete, the draft is cut short (its stream
  closed, the fast model aborts) and the revision is against the draft streamed so far.
- **skipped**: ``skip_if(draft_text, draft_chunks)`` is asked once the draft is complete
  (e.g. "the draft is confident enough"); when it says yes, the strong model's stream
  is cancelled and closed at once (a vLLM server aborts it), no ``Revision`` is sent,
  and ``Final(source="draft")``.
- **strong failed** (a ``ModelError``): the draft is streamed to its end and is the
  final (``source="draft"``); the error is in ``stats.strong_error``.
- **draft failed** (a ``ModelError``): the strong answer is still delivered, as a
  ``Revision`` against the draft streamed before the failure (empty if it failed
  before its first token: one ``insert`` op), then ``Final(source="revision")``; the
  error is in ``stats.draft_error``.
- **both failed**: the strong model's error is raised (after both streams are closed).
  Any other exception (a bug, not a model failure) is raised at once.

Structured: the two streams are read by tasks owned by the ``events()`` generator;
closing or cancelling it cancels both, closes their streams and waits for them.

``Refine`` is also a ``Model`` (so it nests in cascades and votes): ``stream(request)``
yields **only the final answer's chunks** — the draft's own chunks when the draft is
final, the strong model's chunks when the revision is — once the decision is made.
Nothing is streamed twice and logprobs belong to the text they come with, so a
confidence scorer downstream reads the right model's confidence; the price is that
its first token comes at the time of the final, not of the draft. Use ``events()``
to show the draft early.

``refine.statistics()`` aggregates the calls so far (``RefineStatistics``).
"""

from __future__ import annotations

import asyncio
import difflib
import re
import statistics as _stats
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, fields
from typing import Literal

from critpath._tasks import cancel_and_wait
from critpath.adapters.protocol import Chunk, Model, ModelRequest
from critpath.adapters.wrapper import WrapperModel
from critpath.errors import ConfigError, ModelError

__all__ = [
    "DiffOp",
    "DraftDelta",
    "Final",
    "Refine",
    "RefineCallStats",
    "RefineEvent",
    "RefineStatistics",
    "Revision",
    "apply_revision",
    "change_fraction",
    "diff_ops",
]

DiffUnit = Literal["words", "chars"]
SkipIf = Callable[[str, Sequence[Chunk]], bool]

_WORD = re.compile(r"\s*\S+|\s+")


# ---- the diff (pure) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiffOp:
    """One span of a revision. ``draft_start:draft_end`` in the draft becomes
    ``final_start:final_end`` in the final text, whose characters are ``text``.

    ``tag``: ``equal`` (kept; ``text`` is the span, in both), ``insert`` (empty draft
    span), ``delete`` (empty ``text``), ``replace``.
    """

    tag: Literal["equal", "insert", "delete", "replace"]
    draft_start: int
    draft_end: int
    final_start: int
    final_end: int
    text: str


def _tokens(text: str, unit: DiffUnit) -> list[str]:
    return list(text) if unit == "chars" else _WORD.findall(text)


def diff_ops(draft: str, final: str, *, unit: DiffUnit = "words") -> tuple[DiffOp, ...]:
    """The ops that turn ``draft`` into ``final`` (``difflib.SequenceMatcher`` over
    ``unit``: words with their leading whitespace, or characters).

    >>> ops = diff_ops("The answer is (B).", "The answer is (C).")
    >>> [(op.tag, op.text) for op in ops]
    [('equal', 'The answer is'), ('replace', ' (C).')]
    >>> apply_revision("The answer is (B).", ops)
    'The answer is (C).'
    """
    if unit not in ("words", "chars"):
        raise ConfigError(f"diff unit must be 'words' or 'chars', got {unit!r}")
    a, b = _tokens(draft, unit), _tokens(final, unit)
    # Character offset of each token boundary.
    a_at, b_at = [0], [0]
    for tok in a:
        a_at.append(a_at[-1] + len(tok))
    for tok in b:
        b_at.append(b_at[-1] + len(tok))
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    ops: list[DiffOp] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        ds, de, fs, fe = a_at[i1], a_at[i2], b_at[j1], b_at[j2]
        ops.append(DiffOp(tag, ds, de, fs, fe, final[fs:fe]))
    return tuple(ops)


def apply_revision(draft: str, ops: Sequence[DiffOp]) -> str:
    """The final text: ``ops`` (from a ``Revision``) applied to ``draft``.

    Raises ``ValueError`` when the ops do not describe this draft (spans not contiguous,
    not covering it, or an ``equal`` span that differs).
    """
    out: list[str] = []
    at = 0
    for op in ops:
        if op.draft_start != at or op.draft_end < op.draft_start or op.draft_end > len(draft):
            raise ValueError(f"revision op {op!r} does not follow the draft at offset {at}")
        if op.tag == "equal":
            if draft[op.draft_start : op.draft_end] != op.text:
                raise ValueError(f"revision op {op!r}: the draft differs there")
            out.append(op.text)
        elif op.tag in ("insert", "replace"):
            out.append(op.text)
        at = op.draft_end
    if at != len(draft):
        raise ValueError(f"revision ops cover {at} of the draft's {len(draft)} characters")
    return "".join(out)


def change_fraction(draft: str, final: str) -> float:
    """How much of the text changed: 1 - ``SequenceMatcher.ratio()`` over whitespace-split
    words (0: same words; 1: no word in common). Whitespace alone never counts.

    >>> change_fraction("a b c d", "a b x d")
    0.25
    """
    a, b = draft.split(), final.split()
    if not a and not b:
        return 0.0
    return 1.0 - difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


# ---- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DraftDelta:
    """A piece of the draft, as the fast model sent it; ``t``: seconds since the call began."""

    text: str
    t: float


@dataclass(frozen=True, slots=True)
class Revision:
    """The strong model's answer as ``ops`` against the draft (``draft``: the text of the
    ``DraftDelta``s sent before it). ``apply_revision(draft, ops)`` is the final text."""

    ops: tuple[DiffOp, ...]
    t: float
    draft: str
    unit: DiffUnit
    change_fraction: float

    @property
    def changed(self) -> bool:
        return any(op.tag != "equal" for op in self.ops)


@dataclass(frozen=True, slots=True)
class RefineCallStats:
    """One call: ``ttft_draft`` (first draft text; ``None`` if none came), ``ttft_strong``
    (the strong model's first text; ``None`` if none came), ``t_final``; ``source`` of the
    final text and the ``model`` that wrote it; ``outcome``: ``refined`` (the revision is
    final), ``skipped`` (``skip_if`` said the draft is enough), ``strong_failed`` (the
    draft is final), ``draft_failed`` (the revision is final); ``draft_complete``: the
    fast model finished (not cut short, not failed); ``changed`` / ``change_fraction``:
    whether and how much the revision changed the draft (``False`` / 0 without one).
    """

    ttft_draft: float | None
    ttft_strong: float | None
    t_final: float
    source: Literal["draft", "revision"]
    model: str
    outcome: Literal["refined", "skipped", "strong_failed", "draft_failed"]
    draft_complete: bool
    changed: bool
    change_fraction: float
    draft_error: BaseException | None = None
    strong_error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Final:
    """The answer. ``chunks``: the final text's chunks as its model sent them."""

    text: str
    source: Literal["draft", "revision"]
    t: float
    stats: RefineCallStats
    chunks: tuple[Chunk, ...] = field(default=(), repr=False)


RefineEvent = DraftDelta | Revision | Final


@dataclass(frozen=True, slots=True)
class RefineStatistics:
    """What a ``Refine`` has done so far.

    ``calls``: started; ``refined`` / ``skipped`` / ``strong_failed`` / ``draft_failed``:
    calls that ended with a ``Final`` of that outcome; ``failed``: calls that raised
    (both models failed, or a bug); ``abandoned``: calls their reader closed or cancelled
    before the ``Final``. Times (seconds) are over the calls with a ``Final`` (medians
    over the latest ``_WINDOW`` of them: a ``Refine`` keeps no record per call);
    ``changed_fraction``: of the calls with a revision, the share where it changed the
    draft; ``mean_change_fraction``: their mean ``change_fraction``. ``nan`` when empty.
    """

    calls: int
    refined: int
    skipped: int
    strong_failed: int
    draft_failed: int
    failed: int
    abandoned: int
    mean_ttft_draft: float
    median_ttft_draft: float
    mean_t_final: float
    median_t_final: float
    changed_fraction: float
    mean_change_fraction: float

    def as_dict(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_WINDOW = 4096


def _median(xs: Sequence[float]) -> float:
    return _stats.median(xs) if xs else float("nan")


class _Totals:
    """The calls with a ``Final``, added up: counts and sums (for means) and the latest
    ``_WINDOW`` times (for medians). Memory stays bounded however many calls run."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.ttft_sum = 0.0
        self.ttfts: deque[float] = deque(maxlen=_WINDOW)
        self.ttft_count = 0
        self.final_sum = 0.0
        self.finals: deque[float] = deque(maxlen=_WINDOW)
        self.revised = 0
        self.changed = 0
        self.change_sum = 0.0

    def add(self, s: RefineCallStats) -> None:
        self.outcomes[s.outcome] += 1
        if s.ttft_draft is not None:
            self.ttft_count += 1
            self.ttft_sum += s.ttft_draft
            self.ttfts.append(s.ttft_draft)
        self.final_sum += s.t_final
        self.finals.append(s.t_final)
        if s.source == "revision":
            self.revised += 1
            self.changed += s.changed
            self.change_sum += s.change_fraction


def _ratio(total: float, n: int) -> float:
    return total / n if n else float("nan")


# ---- the wrapper ----------------------------------------------------------------------


@dataclass(slots=True)
class _Msg:
    kind: Literal["chunk", "draft_end", "draft_error", "strong_end", "strong_error"]
    chunk: Chunk | None = None
    chunks: list[Chunk] | None = None
    error: Exception | None = None
    ttft: float | None = None


def _has_text(chunk: Chunk) -> bool:
    return bool(chunk.text)


class Refine(WrapperModel):
    """Fast, then refine: a ``fast`` model's draft streamed at once, a ``strong`` model's
    answer (started at the same time) sent as a diff against it. See the module doc.

    ``skip_if(draft_text, draft_chunks) -> bool``: asked when the draft is complete;
    ``True`` cancels the refinement and the draft is final. ``diff``: ``"words"``
    (default) or ``"chars"``, the unit of the revision's ops.
    """

    def __init__(
        self,
        fast: Model,
        strong: Model,
        *,
        skip_if: SkipIf | None = None,
        diff: DiffUnit = "words",
        name: str | None = None,
    ) -> None:
        if diff not in ("words", "chars"):
            raise ConfigError(f"diff must be 'words' or 'chars', got {diff!r}")
        super().__init__([fast, strong], name=name or f"refine({fast.name}->{strong.name})")
        self.skip_if = skip_if
        self.diff = diff
        self._calls = 0
        self._failed = 0
        self._abandoned = 0
        self._totals = _Totals()

    @property
    def fast(self) -> Model:
        """The model whose draft is streamed at once."""
        return self.wrapped[0]

    @property
    def strong(self) -> Model:
        """The model whose answer revises the draft."""
        return self.wrapped[1]

    def __repr__(self) -> str:
        return f"Refine({self.fast.name!r} -> {self.strong.name!r}, diff={self.diff!r})"

    def statistics(self) -> RefineStatistics:
        """Counts, times to first draft token and to final, how often and how much the
        revisions changed the drafts."""
        t = self._totals
        return RefineStatistics(
            calls=self._calls,
            refined=t.outcomes["refined"],
            skipped=t.outcomes["skipped"],
            strong_failed=t.outcomes["strong_failed"],
            draft_failed=t.outcomes["draft_failed"],
            failed=self._failed,
            abandoned=self._abandoned,
            mean_ttft_draft=_ratio(t.ttft_sum, t.ttft_count),
            median_ttft_draft=_median(t.ttfts),
            mean_t_final=_ratio(t.final_sum, sum(t.outcomes.values())),
            median_t_final=_median(t.finals),
            changed_fraction=_ratio(t.changed, t.revised),
            mean_change_fraction=_ratio(t.change_sum, t.revised),
        )

    # ---- the protocol -----------------------------------------------------------------

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        """The final answer's chunks only (see the module doc)."""
        async with aclosing(self.events(request)) as events:
            async for event in events:
                if isinstance(event, Final):
                    for chunk in event.chunks:
                        yield chunk

    # ---- events -----------------------------------------------------------------------

    async def events(self, request: ModelRequest) -> AsyncGenerator[RefineEvent, None]:
        """Draft deltas, then a revision (unless skipped or the strong model failed),
        then the final. Close it (``aclosing``) if you stop reading early."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        self._calls += 1
        queue: asyncio.Queue[_Msg] = asyncio.Queue()

        async def read_draft() -> None:
            try:
                async with aclosing(self.fast.stream(request)) as chunks:
                    async for chunk in chunks:
                        queue.put_nowait(_Msg("chunk", chunk=chunk))
            except Exception as exc:
                queue.put_nowait(_Msg("draft_error", error=exc))
                return
            queue.put_nowait(_Msg("draft_end"))

        async def read_strong() -> None:
            got: list[Chunk] = []
            ttft: float | None = None
            try:
                async with aclosing(self.strong.stream(request)) as chunks:
                    async for chunk in chunks:
                        if ttft is None and _has_text(chunk):
                            ttft = loop.time() - t0
                        got.append(chunk)
            except Exception as exc:
                queue.put_nowait(_Msg("strong_error", error=exc, ttft=ttft))
                return
            queue.put_nowait(_Msg("strong_end", chunks=got, ttft=ttft))

        # The strong model starts first: it is on the critical path.
        strong_task = asyncio.create_task(
            read_strong(), name=f"critpath-refine:{self._name}:strong"
        )
        draft_task = asyncio.create_task(read_draft(), name=f"critpath-refine:{self._name}:draft")
        draft_parts: list[str] = []
        draft_chunks: list[Chunk] = []
        ttft_draft: float | None = None
        draft_state: Literal["running", "complete", "failed", "cut"] = "running"
        draft_error: Exception | None = None
        strong_error: Exception | None = None
        strong_chunks: list[Chunk] | None = None
        ttft_strong: float | None = None
        finished = False
        try:
            while True:
                msg = await queue.get()
                if msg.kind == "chunk":
                    assert msg.chunk is not None
                    draft_chunks.append(msg.chunk)
                    if msg.chunk.text:
                        if ttft_draft is None:
                            ttft_draft = loop.time() - t0
                        draft_parts.append(msg.chunk.text)
                        yield DraftDelta(msg.chunk.text, loop.time() - t0)
                    continue
                if msg.kind in ("draft_error", "strong_error"):
                    assert msg.error is not None
                    if not isinstance(msg.error, ModelError):
                        raise msg.error  # a bug, not a model failure: never masked
                if msg.kind == "draft_end":
                    draft_state = "complete"
                elif msg.kind == "draft_error":
                    draft_state, draft_error = "failed", msg.error
                elif msg.kind == "strong_end":
                    strong_chunks, ttft_strong = msg.chunks, msg.ttft
                else:
                    strong_error, ttft_strong = msg.error, msg.ttft

                if strong_chunks is not None:  # the strong answer is in: revise now
                    if draft_state == "running":
                        draft_state = "cut"
                        await cancel_and_wait([draft_task])
                elif strong_error is not None:
                    if draft_state == "running":
                        continue  # the draft will be the answer: stream it to its end
                    if draft_state == "failed":
                        raise strong_error
                elif draft_state == "complete":
                    draft_text = "".join(draft_parts)
                    if self.skip_if is None or not self.skip_if(draft_text, tuple(draft_chunks)):
                        continue  # wait for the strong answer
                    await cancel_and_wait([strong_task])
                else:
                    continue  # the draft failed or runs: wait for the strong model

                t = loop.time() - t0
                draft_text = "".join(draft_parts)
                if strong_chunks is None:  # skipped, or the strong model failed
                    outcome: Literal["refined", "skipped", "strong_failed", "draft_failed"]
                    outcome = "skipped" if strong_error is None else "strong_failed"
                    stats = RefineCallStats(
                        ttft_draft, ttft_strong, t, "draft", self.fast.name, outcome,
                        True, False, 0.0, None, strong_error,
                    )  # fmt: skip
                    self._totals.add(stats)
                    finished = True
                    yield Final(draft_text, "draft", t, stats, tuple(draft_chunks))
                    return
                final_text = "".join(c.text for c in strong_chunks)
                ops = diff_ops(draft_text, final_text, unit=self.diff)
                frac = change_fraction(draft_text, final_text)
                revision = Revision(ops, t, draft_text, self.diff, frac)
                outcome = "draft_failed" if draft_state == "failed" else "refined"
                stats = RefineCallStats(
                    ttft_draft, ttft_strong, t, "revision", self.strong.name, outcome,
                    draft_state == "complete", revision.changed, frac, draft_error, None,
                )  # fmt: skip
                self._totals.add(stats)
                finished = True
                yield revision
                yield Final(final_text, "revision", t, stats, tuple(strong_chunks))
                return
        except Exception:
            if not finished:
                self._failed += 1
                finished = True
            raise
        finally:
            if not finished:
                self._abandoned += 1
            await cancel_and_wait([strong_task, draft_task])
