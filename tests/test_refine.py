"""``Refine``: the diff reconstructs the final text, parallel start, skip, failures,
cleanup, the ``Model`` view and statistics.

Ordering is controlled by events, not sleeps: ``Gated`` models hold their answer until
the test (or the other model) sets an ``asyncio.Event``, and record whether their
stream finished, failed, was cancelled or was closed. Timers appear only in the
simulated-model test, with generous bounds. Every test checks that no task it started
is left behind.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import pytest

from critpath.adapters import Chunk, Model, ModelRequest, complete, make_request
from critpath.adapters.sim import PROFILES, SimulatedModel, SyntheticTask
from critpath.cascades.refine import (
    DiffOp,
    DraftDelta,
    Final,
    Refine,
    RefineEvent,
    Revision,
    apply_revision,
    change_fraction,
    diff_ops,
)
from critpath.errors import ConfigError, ServerError

REQ = make_request(messages="hi", max_tokens=64)
DRAFT = ("The", " answer", " is", " (B).")
STRONG = ("The", " answer", " is", " surely", " (C).")


@pytest.fixture(autouse=True)
async def no_task_left() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    left = {t for t in asyncio.all_tasks() - before if not t.done() and t is not current}
    assert not left, f"tasks left behind: {left!r}"


class Gated:
    """A model that sends ``words``, waiting for ``gates[i]`` (if any) before word ``i``;
    ``fail`` raises before word ``fail_at``. Records each call's outcome."""

    def __init__(
        self,
        name: str,
        words: Sequence[str],
        *,
        gates: dict[int, asyncio.Event] | None = None,
        fail: Exception | None = None,
        fail_at: int = 0,
        logprob: float = -0.05,
    ) -> None:
        self._name = name
        self.words = tuple(words)
        self.gates = gates or {}
        self.fail = fail
        self.fail_at = fail_at
        self.logprob = logprob
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.outcomes: list[str] = []

    @property
    def name(self) -> str:
        return self._name

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        self.started.set()
        outcome = "running"
        try:
            yield Chunk()  # accepted
            for i, word in enumerate(self.words):
                if i in self.gates:
                    await self.gates[i].wait()
                if self.fail is not None and i == self.fail_at:
                    raise self.fail
                last = i == len(self.words) - 1
                yield Chunk(text=word, tokens=1, finish_reason="stop" if last else None)
            if self.fail is not None and self.fail_at >= len(self.words):
                raise self.fail
            outcome = "finished"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except GeneratorExit:
            outcome = "closed"
            raise
        except Exception:
            outcome = "failed"
            raise
        finally:
            self.outcomes.append(outcome)
            self.ended.set()


async def collect(refine: Refine, request: ModelRequest = REQ) -> list[RefineEvent]:
    async with aclosing(refine.events(request)) as events:
        return [ev async for ev in events]


def check_stream(events: list[RefineEvent]) -> Final:
    """Deltas, then at most one revision, then one final; the revision rebuilds it."""
    assert isinstance(events[-1], Final)
    final = events[-1]
    draft = "".join(ev.text for ev in events if isinstance(ev, DraftDelta))
    revisions = [ev for ev in events if isinstance(ev, Revision)]
    kinds = [type(ev).__name__ for ev in events]
    assert kinds == ["DraftDelta"] * (len(kinds) - 1 - len(revisions)) + ["Revision"] * len(
        revisions
    ) + ["Final"]
    if revisions:
        (rev,) = revisions
        assert rev.draft == draft
        assert apply_revision(draft, rev.ops) == final.text
        assert final.source == "revision"
    else:
        assert final.source == "draft"
        assert final.text == draft
    assert "".join(c.text for c in final.chunks) == final.text
    return final


# ---- the diff (pure) ------------------------------------------------------------------

VOCAB = ["the", "answer", "is", "(A).", "(B)", "é", "ünï", "x", "", "42", "Let", "us"]
SPACES = [" ", " ", " ", "  ", "\n", "\t", " \n "]


def random_text(rng: random.Random) -> str:
    n = rng.randrange(0, 25)
    parts = []
    for _ in range(n):
        parts.append(rng.choice(VOCAB))
        parts.append(rng.choice(SPACES) if rng.random() < 0.9 else "")
    if rng.random() < 0.2:
        parts.insert(0, rng.choice(SPACES))
    return "".join(parts)


def mutate(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    for _ in range(rng.randrange(0, 4)):
        op = rng.randrange(3)
        i = rng.randrange(len(words) + 1)
        if op == 0:
            words.insert(i, rng.choice(VOCAB))
        elif op == 1 and i < len(words):
            del words[i]
        elif i < len(words):
            words[i] = rng.choice(VOCAB)
    return " ".join(words)


@pytest.mark.parametrize("unit", ["words", "chars"])
def test_diff_reconstructs_final_exactly(unit: Any) -> None:
    rng = random.Random(1234)
    for _ in range(1500):
        draft = random_text(rng)
        final = mutate(rng, draft) if rng.random() < 0.6 else random_text(rng)
        ops = diff_ops(draft, final, unit=unit)
        assert apply_revision(draft, ops) == final
        # The ops tile both texts, in order, and carry the final's characters.
        d = f = 0
        for op in ops:
            assert (op.draft_start, op.final_start) == (d, f)
            assert op.text == final[op.final_start : op.final_end]
            if op.tag == "equal":
                assert draft[op.draft_start : op.draft_end] == op.text
            if op.tag == "insert":
                assert op.draft_start == op.draft_end
            if op.tag == "delete":
                assert op.text == ""
            d, f = op.draft_end, op.final_end
        assert (d, f) == (len(draft), len(final))
        assert (draft == final) == all(op.tag == "equal" for op in ops)


def test_word_ops_fall_on_word_boundaries() -> None:
    ops = diff_ops("The answer is (B).", "The answer is surely (C).")
    assert [(op.tag, op.text) for op in ops] == [
        ("equal", "The answer is"),
        ("replace", " surely (C)."),
    ]
    assert diff_ops("", "") == ()
    assert [op.tag for op in diff_ops("", "new text")] == ["insert"]
    assert [op.tag for op in diff_ops("old", "")] == ["delete"]


def test_apply_revision_rejects_ops_for_another_draft() -> None:
    ops = diff_ops("a b c", "a x c")
    with pytest.raises(ValueError, match="differs"):
        apply_revision("q b c", ops)
    with pytest.raises(ValueError, match="cover"):
        apply_revision("a b c and more", ops)
    with pytest.raises(ValueError, match="follow"):
        apply_revision("a b c", [DiffOp("equal", 1, 2, 0, 1, " ")])
    with pytest.raises(ConfigError):
        diff_ops("a", "b", unit="lines")  # type: ignore[arg-type]


def test_change_fraction() -> None:
    assert change_fraction("a b c", "a  b\nc") == 0.0
    assert change_fraction("", "") == 0.0
    assert change_fraction("", "a b") == 1.0
    assert change_fraction("a b", "c d") == 1.0
    assert 0.0 < change_fraction("a b c d", "a b c e") < 0.5


# ---- the stream -----------------------------------------------------------------------


async def test_strong_starts_in_parallel_before_the_draft_is_done() -> None:
    strong = Gated("strong", STRONG, gates={0: asyncio.Event()})
    # The draft cannot go past its first word until the strong model has started:
    # run one after the other, this would hang.
    fast = Gated("fast", DRAFT, gates={1: strong.started})
    refine = Refine(fast, strong)
    seen: list[RefineEvent] = []
    async with aclosing(refine.events(REQ)) as events:
        async for ev in events:
            seen.append(ev)
            if isinstance(ev, DraftDelta) and len(seen) == len(DRAFT):
                assert strong.started.is_set()
                assert strong.outcomes == []
                strong.gates[0].set()
    final = check_stream(seen)
    assert final.text == "".join(STRONG)
    assert final.stats.outcome == "refined"
    assert final.stats.draft_complete
    assert final.stats.changed
    assert final.stats.change_fraction > 0
    assert final.stats.model == "strong"
    assert final.stats.ttft_draft is not None
    assert final.stats.ttft_strong is not None
    assert final.stats.ttft_draft <= final.stats.ttft_strong
    assert fast.outcomes == ["finished"]
    assert strong.outcomes == ["finished"]


async def test_unchanged_revision_is_all_equal() -> None:
    fast = Gated("f", DRAFT)
    final = check_stream(await collect(Refine(fast, Gated("s", DRAFT, gates={0: fast.ended}))))
    assert final.source == "revision"
    assert not final.stats.changed
    assert final.stats.change_fraction == 0.0


async def test_skip_if_cancels_the_strong_stream() -> None:
    never = asyncio.Event()
    strong = Gated("strong", STRONG, gates={0: never})
    fast = Gated("fast", DRAFT)
    asked: list[tuple[str, int]] = []

    def confident(text: str, chunks: Sequence[Chunk]) -> bool:
        asked.append((text, len(chunks)))
        return True

    refine = Refine(fast, strong, skip_if=confident)
    events = await collect(refine)
    final = check_stream(events)
    assert final.source == "draft"
    assert final.text == "".join(DRAFT)
    assert final.stats.outcome == "skipped"
    assert final.stats.model == "fast"
    assert asked == [("".join(DRAFT), len(DRAFT) + 1)]
    assert strong.outcomes == ["cancelled"]  # closed by cancellation, not left to run
    assert not never.is_set()


async def test_skip_if_false_waits_for_the_revision() -> None:
    strong = Gated("strong", STRONG, gates={0: asyncio.Event()})
    fast = Gated("fast", DRAFT)

    def not_confident(text: str, chunks: Sequence[Chunk]) -> bool:
        strong.gates[0].set()  # asked once the draft is complete; now let the strong go
        return False

    final = check_stream(await collect(Refine(fast, strong, skip_if=not_confident)))
    assert final.stats.outcome == "refined"
    assert strong.outcomes == ["finished"]


async def test_strong_first_cuts_the_draft_short() -> None:
    fast = Gated("fast", DRAFT, gates={2: asyncio.Event()})  # stalls after two words
    strong = Gated("strong", STRONG, gates={0: asyncio.Event()})
    refine = Refine(fast, strong)
    seen: list[RefineEvent] = []
    async with aclosing(refine.events(REQ)) as events:
        async for ev in events:
            seen.append(ev)
            if isinstance(ev, DraftDelta) and len(seen) == 2:
                strong.gates[0].set()
    final = check_stream(seen)
    rev = next(ev for ev in seen if isinstance(ev, Revision))
    assert rev.draft == "The answer"
    assert final.stats.outcome == "refined"
    assert not final.stats.draft_complete
    assert fast.outcomes == ["cancelled"]


async def test_strong_failure_finishes_with_the_draft() -> None:
    boom = ServerError("down", model="strong", status=500)
    strong = Gated("strong", STRONG, fail=boom, fail_at=1)
    refine = Refine(Gated("fast", DRAFT), strong)
    final = check_stream(await collect(refine))
    assert final.source == "draft"
    assert final.text == "".join(DRAFT)
    assert final.stats.outcome == "strong_failed"
    assert final.stats.strong_error is boom


async def test_draft_failure_still_delivers_the_strong_answer() -> None:
    boom = ServerError("down", model="fast", status=500)
    # Before the first token: a revision against an empty draft, one insert.
    fast = Gated("fast", DRAFT, fail=boom)
    events = await collect(Refine(fast, Gated("strong", STRONG, gates={0: fast.ended})))
    final = check_stream(events)
    assert [type(ev) for ev in events] == [Revision, Final]
    rev = events[0]
    assert isinstance(rev, Revision)
    assert [op.tag for op in rev.ops] == ["insert"]
    assert final.stats.outcome == "draft_failed"
    assert final.stats.draft_error is boom
    assert final.stats.ttft_draft is None
    # Mid-stream: a revision against what was streamed.
    fast = Gated("fast", DRAFT, fail=boom, fail_at=2)
    strong = Gated("strong", STRONG, gates={0: fast.ended})
    events = await collect(Refine(fast, strong))
    final = check_stream(events)
    assert final.stats.outcome == "draft_failed"
    assert final.text == "".join(STRONG)
    assert sum(isinstance(ev, DraftDelta) for ev in events) == 2


async def test_both_failing_raises_the_strong_error() -> None:
    fast_err = ServerError("fast down", model="fast", status=500)
    strong_err = ServerError("strong down", model="strong", status=503)
    fast = Gated("fast", DRAFT, fail=fast_err, fail_at=1)
    strong = Gated("strong", STRONG, fail=strong_err, gates={0: fast.ended})
    refine = Refine(fast, strong)
    with pytest.raises(ServerError, match="strong down"):
        await collect(refine)
    assert refine.statistics().failed == 1


async def test_a_bug_is_raised_not_degraded() -> None:
    strong = Gated("strong", STRONG, gates={0: asyncio.Event()})
    refine = Refine(Gated("fast", DRAFT, fail=KeyError("bug")), strong)
    with pytest.raises(KeyError):
        await collect(refine)
    assert strong.outcomes == ["cancelled"]


async def test_closing_early_closes_both_streams() -> None:
    fast = Gated("fast", DRAFT, gates={1: asyncio.Event()})
    strong = Gated("strong", STRONG, gates={0: asyncio.Event()})
    refine = Refine(fast, strong)
    async with aclosing(refine.events(REQ)) as events:
        async for ev in events:
            assert isinstance(ev, DraftDelta)
            break
    assert fast.outcomes == ["cancelled"]
    assert strong.outcomes == ["cancelled"]
    assert refine.statistics().abandoned == 1


async def test_cancelling_the_reader_cancels_both_streams() -> None:
    fast = Gated("fast", DRAFT, gates={1: asyncio.Event()})
    strong = Gated("strong", STRONG, gates={0: asyncio.Event()})
    task = asyncio.create_task(collect(Refine(fast, strong)))
    await strong.started.wait()
    await fast.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fast.outcomes == ["cancelled"]
    assert strong.outcomes == ["cancelled"]


# ---- as a Model -----------------------------------------------------------------------


async def test_refine_is_a_model_streaming_the_final_answer() -> None:
    refine = Refine(Gated("fast", DRAFT), Gated("strong", STRONG))
    assert isinstance(refine, Model)
    assert refine.name == "refine(fast->strong)"
    answer = await complete(refine, REQ)
    assert answer.text == "".join(STRONG)
    assert answer.finish_reason == "stop"
    never = asyncio.Event()
    skip = Refine(
        Gated("fast", DRAFT), Gated("strong", STRONG, gates={0: never}), skip_if=lambda t, c: True
    )
    assert (await complete(skip, REQ)).text == "".join(DRAFT)


def test_bad_diff_unit() -> None:
    with pytest.raises(ConfigError):
        Refine(Gated("f", DRAFT), Gated("s", DRAFT), diff="lines")  # type: ignore[arg-type]


# ---- statistics -----------------------------------------------------------------------


async def test_statistics_count_each_outcome() -> None:
    boom = ServerError("down", model="x", status=500)
    fast = Gated("fast", DRAFT)
    strong = Gated("strong", STRONG, gates={0: fast.ended})
    refine = Refine(fast, strong, skip_if=lambda text, chunks: skip)
    skip = False
    await collect(refine)  # refined, changed
    fast.ended.clear()
    strong.words = DRAFT
    await collect(refine)  # refined, unchanged
    skip, strong.gates = True, {0: asyncio.Event()}
    await collect(refine)  # skipped
    fast.ended.clear()
    skip, strong.gates, strong.fail = False, {0: fast.ended}, boom
    await collect(refine)  # strong failed
    fast.ended.clear()
    strong.fail, fast.fail = None, boom
    await collect(refine)  # draft failed (a full rewrite of an empty draft)
    fast.ended.clear()
    strong.fail = boom
    with pytest.raises(ServerError):
        await collect(refine)  # both failed
    s = refine.statistics()
    assert (s.calls, s.refined, s.skipped, s.strong_failed, s.draft_failed, s.failed) == (
        6, 2, 1, 1, 1, 1,
    )  # fmt: skip
    assert s.abandoned == 0
    assert s.changed_fraction == pytest.approx(2 / 3)  # changed, unchanged, rewritten
    expected = (change_fraction("".join(DRAFT), "".join(STRONG)) + 0.0 + 1.0) / 3
    assert s.mean_change_fraction == pytest.approx(expected)
    assert 0 <= s.median_ttft_draft <= s.median_t_final
    assert s.mean_ttft_draft <= s.mean_t_final
    assert set(s.as_dict()) >= {"calls", "refined", "median_t_final", "mean_change_fraction"}


def test_statistics_empty() -> None:
    s = Refine(Gated("f", DRAFT), Gated("s", DRAFT)).statistics()
    assert s.calls == 0
    assert s.mean_t_final != s.mean_t_final


# ---- simulated models -----------------------------------------------------------------


async def test_first_draft_token_beats_strong_ttft_with_simulated_models() -> None:
    # The calibrated profiles give 7B and 70B similar TTFTs (hosted providers, 550-token
    # prompts); the fast tier here is a small model on an idle, nearby GPU: a tenth of
    # the queueing and prefill. No spread, so the bound is about the design, not luck.
    small = PROFILES["small"].with_(ttft_sigma=0.0, tpot_sigma=0.0)
    small = small.with_(queue_s=small.queue_s / 10, prefill_per_token_s=0.0)
    large = PROFILES["large"].with_(ttft_sigma=0.0, tpot_sigma=0.0)
    task = SyntheticTask(20, seed=3)
    fast = SimulatedModel("small", profile=small, answers=task, time_scale=0.2)
    strong = SimulatedModel("large", profile=large, answers=task, time_scale=0.2)
    refine = Refine(fast, strong)
    for q in range(4):
        req = make_request(
            messages="q", max_tokens=8, logprobs=True, extra_body={"question_id": f"syn-{q}"}
        )
        final = check_stream(await collect(refine, req))
        stats = final.stats
        assert stats.ttft_draft is not None
        assert stats.ttft_strong is not None
        assert stats.ttft_draft < stats.ttft_strong
        assert stats.source == "revision"
    s = refine.statistics()
    assert s.refined == 4
    # Strong TTFT is 0.2 x 0.27 s ~ 54 ms; the draft's ~6 ms. Generous: < 60%.
    assert s.median_ttft_draft < 0.6 * 0.2 * large.queue_s


async def test_confident_draft_skips_and_aborts_the_simulated_strong_model() -> None:
    def confident(text: str, chunks: Sequence[Chunk]) -> bool:
        # The simulated answer token "(X)" carries the model's confidence as its logprob.
        lps = [lp.logprob for c in chunks for lp in c.logprobs or () if "(" in lp.token]
        return bool(lps) and math.exp(lps[-1]) >= 0.7

    # The strong model is slow to start here (50 ms), so every draft completes first.
    small = PROFILES["small"].with_(queue_s=0.01, prefill_per_token_s=0.0, ttft_sigma=0.0)
    large = PROFILES["large"].with_(queue_s=1.0, prefill_per_token_s=0.0, ttft_sigma=0.0)
    task = SyntheticTask(20, seed=3)
    fast = SimulatedModel("small", profile=small, answers=task, time_scale=0.01)
    strong = SimulatedModel("large", profile=large, answers=task, time_scale=0.05)
    refine = Refine(fast, strong, skip_if=confident)

    def ask(q: str) -> ModelRequest:
        return make_request(messages="q", logprobs=True, extra_body={"question_id": q})

    # syn-2: the small model answers (A) with confidence ~0.86: skip, abort the strong.
    final = check_stream(await collect(refine, ask("syn-2")))
    assert final.stats.outcome == "skipped"
    assert "(A)" in final.text
    assert strong.aborted == 1  # its stream was closed before its answer was complete
    assert strong.stats.in_flight == 0
    # syn-1: the small model is unsure (~0.49): the strong model's answer is final.
    final = check_stream(await collect(refine, ask("syn-1")))
    assert final.stats.outcome == "refined"
    assert final.stats.changed
    assert "(B)" in final.text
    s = refine.statistics()
    assert (s.calls, s.skipped, s.refined) == (2, 1, 1)
