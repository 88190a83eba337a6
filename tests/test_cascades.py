"""Cascades and votes: the pure decisions, then early quorum, hedged escalation, failures.

The decision tests need no event loop. The async tests control ordering with events,
not sleeps: a ``Scripted`` model holds its answer until the test sets its gate and
records whether its stream finished, failed, or was cancelled or closed. Timers appear
only as lower bounds (a tier never starts before its budget). Every async test checks
that no task it started is left behind. The last tests run a cascade and a vote over
simulated models on the synthetic task and compare accuracies.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest
from scripted import Call
from scripted import Scripted as _Scripted

from critpath.adapters import (
    Chunk,
    ModelRequest,
    TokenLogprob,
    complete,
    make_request,
)
from critpath.adapters.sim import SimulatedModel, SyntheticTask
from critpath.cascades import (
    AbstentionScorer,
    AgreementScorer,
    Candidate,
    Cascade,
    CascadeFailedError,
    FunctionScorer,
    LogprobScorer,
    Reason,
    Score,
    Tier,
    VerifierScorer,
    Vote,
    VoteFailedError,
    accept,
    answer_confidence,
    escalation_delay,
    fit_threshold,
    is_abstention,
    normalise_answer,
    normalise_choice,
    tally,
)
from critpath.deadlines import deadline
from critpath.errors import ConfigError, ServerError
from critpath.strategies.evaluate import ask

REQ = make_request(messages="Which option?", max_tokens=64)


# ---- pure decisions -------------------------------------------------------------------


def test_normalise_and_abstention() -> None:
    assert normalise_answer("Step by step. The answer is (C).") == "C"
    assert normalise_answer("  Paris.\n") == "paris"
    assert normalise_answer("I don\u2019t know.") is None
    assert normalise_answer("   ") is None
    assert normalise_choice("Paris") is None
    assert is_abstention("I'm not sure about this one.")
    assert is_abstention("")
    assert not is_abstention("The answer is (A).")
    assert is_abstention("Paris", normalise_choice)  # no letter: nothing to count
    assert not is_abstention("Paris")


def test_answer_confidence() -> None:
    split = [
        TokenLogprob("The answer is ", -0.01),
        TokenLogprob("(", math.log(0.9)),
        TokenLogprob("B", math.log(0.5)),
        TokenLogprob(").", 0.0),
    ]
    assert answer_confidence(split) == pytest.approx(0.45)  # the span's tokens, joint
    no_span = [TokenLogprob("Paris", math.log(0.25)), TokenLogprob(".", 0.0)]
    assert answer_confidence(no_span) == pytest.approx(0.5)  # geometric mean
    assert answer_confidence(split, method="mean") == pytest.approx(
        math.exp((-0.01 + math.log(0.45)) / 4)
    )
    assert answer_confidence(None) is None
    assert answer_confidence([]) is None
    with pytest.raises(ConfigError):
        answer_confidence(split, method="max")


def test_accept_says_why() -> None:
    yes = accept(Score(0.8), 0.7)
    assert (yes.accepted, yes.reason) == (True, Reason.ACCEPTED)
    low = accept(Score(0.42, detail="logprob"), 0.7)
    assert (low.accepted, low.reason) == (False, Reason.LOW_CONFIDENCE)
    assert str(low) == "escalated: low confidence 0.420 < 0.700 (logprob)"
    assert accept(Score(0.99, abstained=True), 0.0).reason is Reason.ABSTAINED
    assert accept(Score(None), 0.5).reason is Reason.NO_CONFIDENCE
    assert accept(Score(None), 0.0).accepted
    assert accept(None, 0.9).accepted  # no scorer: accept
    assert accept(Score(0.7), 0.7).accepted  # the threshold itself is accepted


def test_tally_plurality() -> None:
    t = tally([("A", 1.0)], pending_weight=2.0)
    assert (t.winner, t.final) == ("A", False)
    t = tally([("A", 1.0), ("A", 1.0)], pending_weight=1.0)
    assert (t.winner, t.settled, t.final) == ("A", True, True)
    assert t.agreement == 1.0
    assert t.min_agreement == pytest.approx(2 / 3)
    # A tie still pending can go either way; a tie with nothing pending goes to the first.
    assert not tally([("A", 1.0), ("B", 1.0)], pending_weight=1.0).final
    t = tally([("B", 1.0), ("A", 1.0)])
    assert (t.winner, t.final, t.agreement) == ("B", True, 0.5)
    # leader == runner-up + pending could still be tied: not final.
    assert not tally([("A", 1.0), ("A", 1.0), ("B", 1.0)], pending_weight=1.0).final
    # Abstentions count as responded, not for any answer.
    t = tally([(None, 1.0), ("A", 1.0), (None, 1.0)])
    assert t.winner == "A"
    assert t.agreement == pytest.approx(1 / 3)
    assert tally([(None, 1.0)]).winner is None
    with pytest.raises(ConfigError):
        tally([("A", -1.0)])


def test_tally_weights_and_required_agreement() -> None:
    t = tally([("A", 3.0)], pending_weight=2.0)  # 3 > 0 + 2: nothing can overtake it
    assert t.final
    assert t.winner == "A"
    t = tally([("B", 1.0), ("A", 3.0)], pending_weight=1.0)
    assert (t.winner, t.final, t.agreement) == ("A", True, 0.75)
    # required 0.6 of 5 voters: 3 agreeing votes reach it whatever the other two say.
    assert not tally([("A", 1.0)] * 2, pending_weight=3.0, required=0.6).final
    t = tally([("A", 1.0)] * 3, pending_weight=2.0, required=0.6)
    assert (t.reached, t.final) == (True, True)
    # Settled but below the required share: keep going while it can still be reached.
    t = tally([("A", 1.0)] * 3, pending_weight=2.0, required=0.8)
    assert (t.settled, t.reached, t.unreachable, t.final) == (True, False, False, False)
    # A, B, C of 4 with required 0.75: no answer can reach 3 votes any more.
    t = tally([("A", 1.0), ("B", 1.0), ("C", 1.0)], pending_weight=1.0, required=0.75)
    assert (t.unreachable, t.final) == (True, True)
    with pytest.raises(ConfigError):
        tally([], required=1.5)


def test_escalation_delay() -> None:
    assert escalation_delay(budget=0.3, learned=0.1) == (0.3, "budget")
    assert escalation_delay(learned=0.2) == (0.2, "learned")
    assert escalation_delay(learned=math.nan) == (None, "none")
    assert escalation_delay(remaining=2.0) == (1.0, "deadline")  # next tier unknown: half
    delay, source = escalation_delay(learned=0.9, remaining=1.0, next_expected=0.7)
    assert delay == pytest.approx(0.3)
    assert source == "deadline"
    assert escalation_delay(remaining=-1.0, next_expected=0.5) == (0.0, "deadline")
    assert escalation_delay() == (None, "none")


def calibrated(n: int, seed: int) -> list[tuple[float, bool]]:
    """Synthetic calibration data: confidence c, correct with probability c."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        c = rng.random()
        out.append((c, rng.random() < c))
    return out


def test_fit_threshold_max_cascade_accuracy() -> None:
    pairs = calibrated(4000, seed=1)
    fit = fit_threshold(pairs, next_accuracy=0.8)
    # Calibrated confidences: accepting is right exactly when confidence > 0.8.
    assert 0.72 < fit.threshold < 0.88
    assert fit.method == "max_cascade_accuracy"
    assert fit.n == 4000
    assert 0.1 < fit.accept_rate < 0.3
    assert fit.accepted_accuracy > 0.8
    assert "cascade accuracy" in fit.description
    # It beats accepting all and escalating all on the same data.
    accept_all = sum(ok for _, ok in pairs) / len(pairs)
    assert fit.objective >= max(accept_all, 0.8)
    # A useless next tier: accept everything.
    assert fit_threshold(pairs, next_accuracy=0.0).accept_rate == 1.0
    # A perfect next tier: accept only what is surely right (ties go to accepting more).
    perfect = fit_threshold(pairs, next_accuracy=1.0)
    assert perfect.objective == 1.0
    assert perfect.accepted_accuracy == 1.0
    assert perfect.accept_rate < 0.05


def test_fit_threshold_target_precision() -> None:
    pairs = calibrated(4000, seed=2)
    fit = fit_threshold(pairs, target_precision=0.9)
    assert fit.accepted_accuracy >= 0.9
    assert 0.7 < fit.threshold < 0.9
    accepted = [ok for c, ok in pairs if c >= fit.threshold]
    assert sum(accepted) / len(accepted) >= 0.9
    never = fit_threshold([(0.9, False), (0.5, False)], target_precision=0.5)
    assert never.threshold == math.inf
    assert never.accept_rate == 0.0
    with pytest.raises(ConfigError):
        fit_threshold(pairs)
    with pytest.raises(ConfigError):
        fit_threshold([], next_accuracy=0.5)


# ---- controlled models ----------------------------------------------------------------


class Scripted(_Scripted):
    """Answers ``text`` in one chunk (the answer token's logprob ``log(confidence)``)
    once ``gate`` is set; records what became of each call."""

    def __init__(
        self,
        name: str,
        text: str = "The answer is (A).",
        *,
        confidence: float = 0.9,
        fail: Exception | None = None,
        open_gate: bool = True,
    ) -> None:
        super().__init__(name, words=(text,), confidence=confidence, fail=fail, open_gate=open_gate)
        self.text = text


@pytest.fixture
async def no_leftover_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    left = {t for t in asyncio.all_tasks() - before if not t.done() and t is not current}
    assert left == set()


async def wait_for(event: asyncio.Event) -> None:
    async with asyncio.timeout(10):  # generous: only a hang trips it
        await event.wait()


def answer(letter: str) -> str:
    return f"Thinking. The answer is ({letter})."


# ---- vote -----------------------------------------------------------------------------


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_early_quorum_cancels_stragglers() -> None:
    a1, a2 = Scripted("a1", answer("A")), Scripted("a2", answer("A"))
    late = Scripted("late", answer("B"), open_gate=False)
    vote = Vote([a1, late, a2])
    result = await vote.decide(REQ)
    assert result.winner == "A"
    assert result.stopped_early
    assert result.cancelled == (1,)
    assert late.outcome == "cancelled"  # its stream was cancelled, not merely ignored
    assert [b.status for b in result.ballots] == ["answered", "cancelled", "answered"]
    assert result.agreement == 1.0
    assert result.min_agreement == pytest.approx(2 / 3)
    assert result.completion.text == answer("A")
    assert result.quorum_reached is None
    assert result.failed == ()


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_required_agreement_stops_once_reached() -> None:
    fast = [Scripted(f"f{i}", answer("C")) for i in range(3)]
    slow = [Scripted(f"s{i}", answer("D"), open_gate=False) for i in range(2)]
    result = await Vote([*fast, *slow], quorum=0.6).decide(REQ)
    assert (result.winner, result.quorum_reached) == ("C", True)
    assert result.cancelled == (3, 4)
    assert [m.outcome for m in slow] == ["cancelled", "cancelled"]


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_unreachable_agreement_stops_the_vote() -> None:
    late = Scripted("late", answer("A"), open_gate=False)
    vote = Vote([Scripted("a", answer("A")), Scripted("b", answer("B")), late], quorum=1.0)
    result = await vote.decide(REQ)  # A and B disagree: unanimity is out of reach
    assert result.quorum_reached is False
    assert result.cancelled == (2,)
    assert late.outcome == "cancelled"
    assert result.agreement == 0.5


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_weighted_vote_can_decide_on_one_heavy_voter() -> None:
    heavy = Scripted("heavy", answer("B"))
    light = [Scripted(f"l{i}", answer("A"), open_gate=False) for i in range(2)]
    result = await Vote([heavy, *light], weights=[3, 1, 1]).decide(REQ)
    assert result.winner == "B"
    assert result.cancelled == (1, 2)
    assert all(m.outcome == "cancelled" for m in light)
    with pytest.raises(ConfigError):
        Vote([heavy], weights=[1, 2])


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_vote_waits_for_all_when_they_disagree() -> None:
    models = [Scripted("a", answer("A")), Scripted("b", answer("B")), Scripted("c", answer("A"))]
    result = await Vote(models).decide(REQ)
    assert result.winner == "A"
    assert not result.stopped_early
    assert result.agreement == pytest.approx(2 / 3)
    assert result.votes() == {"A": 2.0, "B": 1.0}
    assert all(m.outcome == "finished" for m in models)


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_failing_voter_degrades_gracefully() -> None:
    broken = Scripted("broken", fail=ServerError("boom", model="broken", status=500))
    ok = [Scripted("x", answer("A")), Scripted("y", answer("A"))]
    result = await Vote([broken, *ok]).decide(REQ)
    assert result.winner == "A"
    assert result.failed == (0,)
    assert isinstance(result.errors[0], ServerError)
    assert result.ballots[0].status == "failed"
    assert result.agreement == 1.0  # the failed voter is out of the count
    with pytest.raises(VoteFailedError) as info:
        await Vote([broken, Scripted("b2", fail=ServerError("x", status=503))]).decide(REQ)
    assert len(info.value.errors) == 2


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_a_bug_in_a_voter_propagates_and_cancels_the_rest() -> None:
    bug = Scripted("bug", fail=RuntimeError("a bug"))
    waiting = Scripted("w", open_gate=False)
    with pytest.raises(RuntimeError, match="a bug"):
        await Vote([bug, waiting]).decide(REQ)
    assert waiting.outcome == "cancelled"


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_vote_stream_and_abstentions() -> None:
    vote = Vote([Scripted("p", "I don't know."), Scripted("q", "I don't know.")])
    done = await complete(vote, REQ)
    assert done.text == "I don't know."
    assert not hasattr(vote, "last_result")  # a call's result is returned, never kept
    result = await vote.decide(REQ)
    assert result.winner is None
    assert [b.status for b in result.ballots] == ["abstained", "abstained"]
    assert (await complete(Vote([Scripted("r", answer("E"))]), REQ)).text == answer("E")


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_vote_over_seeded_samples() -> None:
    class BySeed(Scripted):
        async def _stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
            self.calls.append(Call(request, 0.0))
            yield Chunk(text=answer("AAB"[(request.seed or 0) % 3]), tokens=1)

    model = BySeed("m")
    vote = Vote.samples(model, 3, seed=0)
    result = await vote.decide(REQ)
    assert sorted(c.request.seed or 0 for c in model.calls) == [0, 1, 2]
    assert result.winner == "A"
    assert result.ballots[0].voter == "m#seed0"


# ---- cascade --------------------------------------------------------------------------


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_first_tier_accepted_never_starts_the_next() -> None:
    small, big = Scripted("small", confidence=0.9), Scripted("big")
    cascade = Cascade([Tier(small, LogprobScorer(), 0.7), Tier(big)])
    result = await cascade.decide(REQ)
    assert (result.tier, result.tier_name, result.accepted) == (0, "small", True)
    assert result.confidence == pytest.approx(0.9)
    assert small.calls[0].request.logprobs  # the logprob scorer asked for logprobs
    assert big.outcome == "not called"
    assert result.tiers[1].status == "not_started"
    assert result.escalations == ()


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_escalation_reasons_are_recorded() -> None:
    abstains = Scripted("t0", "I don't know.")
    unsure = Scripted("t1", answer("B"), confidence=0.3)
    broken = Scripted("t2", fail=ServerError("boom", status=502))
    big = Scripted("t3", answer("C"))
    cascade = Cascade(
        [
            Tier(abstains, AbstentionScorer(), 0.5),
            Tier(unsure, LogprobScorer(), 0.5),
            Tier(broken, AbstentionScorer(), 0.5),
            Tier(big),
        ]
    )
    result = await cascade.decide(REQ)
    assert (result.tier, result.completion.text) == (3, answer("C"))
    reasons = [(e.from_tier, e.to_tier, e.reason) for e in result.escalations]
    assert reasons == [
        (0, 1, Reason.ABSTAINED),
        (1, 2, Reason.LOW_CONFIDENCE),
        (2, 3, Reason.ERROR),
    ]
    assert "0.300 < 0.500" in result.escalations[1].detail
    assert "ServerError" in result.escalations[2].detail
    assert [t.status for t in result.tiers] == ["rejected", "rejected", "failed", "accepted"]
    assert all(e.started for e in result.escalations)
    assert (await complete(cascade, REQ)).text == answer("C")


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_nothing_accepted_gives_the_highest_answer_and_all_failed_raises() -> None:
    low = [Scripted("a", answer("A"), confidence=0.2), Scripted("b", answer("B"), confidence=0.3)]
    result = await Cascade([Tier(m, LogprobScorer(), 0.9) for m in low]).decide(REQ)
    assert (result.tier, result.accepted) == (1, False)
    assert result.acceptance.reason is Reason.LOW_CONFIDENCE
    assert [e.to_tier for e in result.escalations] == [1, None]
    broken = [Scripted(f"x{i}", fail=ServerError("boom", status=500)) for i in range(2)]
    with pytest.raises(CascadeFailedError) as info:
        await Cascade([Tier(m) for m in broken]).decide(REQ)
    assert len(info.value.errors) == 2


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_hedged_escalation_starts_next_tier_after_budget() -> None:
    slow = Scripted("slow", open_gate=False)
    big = Scripted("big", answer("D"))
    budget = 0.05
    result = await Cascade([Tier(slow, budget=budget), Tier(big)]).decide(REQ)
    assert (result.tier, result.completion.text) == (1, answer("D"))
    assert big.calls[0].started_at - slow.calls[0].started_at >= budget * 0.9
    assert slow.outcome == "cancelled"  # the late tier was cancelled once big answered
    [esc] = result.escalations
    assert (esc.reason, esc.started, esc.to_tier) == (Reason.TIMEOUT, True, 1)
    assert "0.050s (budget)" in esc.detail
    assert [t.status for t in result.tiers] == ["cancelled", "accepted"]
    assert result.tiers[1].early


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_hedged_escalation_first_accepted_answer_wins() -> None:
    small = Scripted("small", answer("A"), open_gate=False)
    big = Scripted("big", answer("B"), open_gate=False)
    cascade = Cascade([Tier(small, budget=0.01), Tier(big)])
    task = asyncio.create_task(cascade.decide(REQ))
    await wait_for(big.started)  # the budget ran out: big is running too
    small.gate.set()  # ...but small answers first, and is accepted
    result = await task
    assert (result.tier, result.completion.text) == (0, answer("A"))
    assert big.outcome == "cancelled"
    assert [t.status for t in result.tiers] == ["accepted", "cancelled"]


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_rejected_early_tier_does_not_restart_a_running_one() -> None:
    small = Scripted("small", "I don't know.", open_gate=False)
    big = Scripted("big", answer("B"), open_gate=False)

    def abstained_then_release_big(c: Candidate) -> Score:
        big.gate.set()  # big can answer only after small's answer was scored
        return Score(0.0, abstained=True)

    scorer = FunctionScorer(abstained_then_release_big)
    task = asyncio.create_task(
        Cascade([Tier(small, scorer, 0.5, budget=0.01), Tier(big)]).decide(REQ)
    )
    await wait_for(big.started)
    small.gate.set()
    result = await task
    assert result.tier == 1
    assert len(big.calls) == 1
    assert [(e.reason, e.started) for e in result.escalations] == [
        (Reason.TIMEOUT, True),
        (Reason.ABSTAINED, False),
    ]
    assert result.tiers[0].status == "rejected"
    assert result.tiers[1].early


async def test_budget_from_learned_latency_and_deadline() -> None:
    small, big = Scripted("small"), Scripted("big")
    cascade = Cascade([Tier(small), Tier(big)])
    assert cascade.budget_for(0) == (None, "none")
    assert cascade.budget_for(1) == (None, "last tier")
    for _ in range(30):
        small.stats.e2e.observe(0.2)
    assert cascade.budget_for(0) == (0.2, "learned")
    async with deadline(10.0):
        assert cascade.budget_for(0) == (0.2, "learned")
    async with deadline(0.3):
        delay, source = cascade.budget_for(0)  # next tier unknown: half of what is left
        assert source == "deadline"
        assert 0.1 < (delay or 0) <= 0.15


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_deadline_cancels_every_tier() -> None:
    a, b = Scripted("a", open_gate=False), Scripted("b", open_gate=False)
    with pytest.raises(TimeoutError):
        async with deadline(0.05):
            await Cascade([Tier(a), Tier(b)]).decide(REQ)
    assert (a.outcome, b.outcome) == ("cancelled", "cancelled")  # b started at 0.025 s


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_vote_then_escalate_when_they_disagree() -> None:
    big = Scripted("big", answer("D"))

    def tiers(*voters: Scripted) -> Cascade:
        return Cascade([Tier(Vote(voters), AgreementScorer(), 0.67), Tier(big)])

    straggler = Scripted("v2", answer("B"), open_gate=False)
    agree = await tiers(Scripted("v0", answer("A")), Scripted("v1", answer("A")), straggler).decide(
        REQ
    )  # A, A settle it: the straggler is cancelled
    assert (agree.tier, agree.completion.text) == (0, answer("A"))
    assert straggler.outcome == "cancelled"
    assert big.outcome == "not called"
    vote_result = agree.tiers[0].result
    assert vote_result is not None
    assert vote_result.confidence == 1.0
    split = await tiers(*(Scripted(f"w{x}", answer(x)) for x in "ABC")).decide(REQ)
    assert (split.tier, split.completion.text) == (1, answer("D"))
    assert split.escalations[0].reason is Reason.LOW_CONFIDENCE
    assert "0.333 < 0.670" in split.escalations[0].detail


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_verifier_and_function_scorers() -> None:
    done = await complete(Scripted("s", answer("A")), REQ)
    candidate = Candidate(REQ, done)
    yes = Scripted("judge-yes", "yes")
    assert (await VerifierScorer(yes).score(candidate)).confidence == 1.0
    prompt = yes.calls[0].request.messages
    assert prompt is not None
    assert "Which option?" in prompt[0].content
    assert answer("A") in prompt[0].content
    assert (await VerifierScorer(Scripted("judge-no", "No.")).score(candidate)).confidence == 0.0
    # With logprobs: P(yes) / (P(yes) + P(no)) from the first token's alternatives.
    # (Scripted puts log(confidence) on its only token and no alternatives.)
    sure = Scripted("judge-lp", "yes", confidence=0.6)
    assert (await VerifierScorer(sure).score(candidate)).confidence == 1.0
    abstain = Candidate(REQ, await complete(Scripted("s", "I don't know."), REQ))
    assert (await VerifierScorer(yes).score(abstain)).abstained
    assert len(yes.calls) == 1  # an abstention is not sent to the verifier

    async def long_enough(c: Candidate) -> float:
        return min(1.0, len(c.text) / 100)

    assert (await FunctionScorer(long_enough).score(candidate)).confidence == pytest.approx(
        len(answer("A")) / 100
    )
    assert (await FunctionScorer(lambda c: None).score(candidate)).confidence is None
    assert (await FunctionScorer(lambda c: Score(0.1, True)).score(candidate)).abstained
    assert (await AgreementScorer().score(candidate)).confidence is None  # not a vote


# ---- simulated models on the synthetic task ---------------------------------------------


def sim(task: SyntheticTask, name: str, profile: str) -> SimulatedModel:
    return SimulatedModel(name, profile=profile, answers=task, time_scale=0.0005)


async def accuracy(model: Any, task: SyntheticTask) -> float:
    async def one(i: int) -> bool:
        q = task.questions[i]
        req = make_request(messages=q.text, max_tokens=4096, extra_body={"question_id": q.id})
        return normalise_choice((await complete(model, req)).text) == q.answer

    right = await asyncio.gather(*(one(i) for i in range(len(task.questions))))
    return sum(right) / len(right)


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_cascade_and_vote_beat_the_small_model_on_the_synthetic_task() -> None:
    task = SyntheticTask(200, seed=7)
    small = sim(task, "small", "7b")
    cascade = Cascade([Tier(small, LogprobScorer(), 0.7), Tier(sim(task, "large", "70b"))])
    vote = Vote(
        [sim(task, n, p) for n, p in (("small", "7b"), ("medium", "13b"), ("large", "70b"))]
    )
    alone = await accuracy(small, task)
    cascaded = await accuracy(cascade, task)
    voted = await accuracy(vote, task)
    assert cascaded > alone + 0.1, (alone, cascaded)
    assert voted > alone + 0.05, (alone, voted)


# ---- concurrent calls on one object ---------------------------------------------------


class PerQuestion:
    """Answers each question (the last message) with its own text, once that question's
    gate is set; ``started[q]`` is set when a call for ``q`` begins."""

    def __init__(self, name: str, answers: dict[str, str]) -> None:
        self.name = name
        self.answers = answers
        self.gates = {q: asyncio.Event() for q in answers}
        self.started = {q: asyncio.Event() for q in answers}

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        assert request.messages is not None
        q = request.messages[-1].content
        self.started[q].set()
        yield Chunk()
        await self.gates[q].wait()
        yield Chunk(text=self.answers[q], tokens=1, finish_reason="stop")


Q1 = make_request(messages="Q1", max_tokens=8, request_id="q1")
Q2 = make_request(messages="Q2", max_tokens=8, request_id="q2")


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_concurrent_votes_on_one_vote_each_get_their_own_result() -> None:
    voters = [PerQuestion(f"v{i}", {"Q1": answer("A"), "Q2": answer("B")}) for i in range(2)]
    vote = Vote(voters)
    first = asyncio.create_task(vote.decide(Q1))
    second = asyncio.create_task(vote.decide(Q2))
    for v in voters:  # both calls are in flight on the same Vote
        await wait_for(v.started["Q1"])
        await wait_for(v.started["Q2"])
    for v in voters:  # the second call finishes first
        v.gates["Q2"].set()
    r2 = await second
    assert not first.done()
    for v in voters:
        v.gates["Q1"].set()
    r1 = await first
    assert (r1.winner, r1.completion.text) == ("A", answer("A"))
    assert (r2.winner, r2.completion.text) == ("B", answer("B"))
    assert [b.answer for b in r1.ballots] == ["A", "A"]
    assert [b.answer for b in r2.ballots] == ["B", "B"]
    assert vote.stats.requests == 2


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_concurrent_calls_on_one_cascade_each_get_their_own_result() -> None:
    small = PerQuestion("small", {"Q1": answer("A"), "Q2": "I don't know."})
    big = PerQuestion("big", {"Q1": answer("C"), "Q2": answer("D")})
    cascade = Cascade([Tier(small, AbstentionScorer(), 0.5, hedge=False), Tier(big)])
    first = asyncio.create_task(cascade.decide(Q1))
    second = asyncio.create_task(cascade.decide(Q2))
    await wait_for(small.started["Q1"])
    small.gates["Q2"].set()  # Q2's cheap answer abstains: Q2 escalates, Q1 still runs
    await wait_for(big.started["Q2"])
    small.gates["Q1"].set()
    r1 = await first  # Q1 ends while Q2 is still on the big tier
    assert not second.done()
    big.gates["Q2"].set()
    r2 = await second
    assert (r1.tier, r1.completion.text, r1.escalations) == (0, answer("A"), ())
    assert (r2.tier, r2.completion.text) == (1, answer("D"))
    assert [(e.from_tier, e.reason) for e in r2.escalations] == [(0, Reason.ABSTAINED)]
    assert [t.status for t in r1.tiers] == ["accepted", "not_started"]
    assert [t.status for t in r2.tiers] == ["rejected", "accepted"]
    assert not big.started["Q1"].is_set()
    assert not hasattr(cascade, "last_result")


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_concurrent_asks_of_one_strategy_report_their_own_decision() -> None:
    small = PerQuestion("small", {"Q1": answer("A"), "Q2": "I don't know."})
    big = PerQuestion("big", {"Q1": answer("C"), "Q2": answer("D")})
    for gate in (*small.gates.values(), *big.gates.values()):
        gate.set()
    cascade = Cascade([Tier(small, AbstentionScorer(), 0.5, hedge=False), Tier(big)])
    o1, o2 = await asyncio.gather(ask(cascade, Q1, "A"), ask(cascade, Q2, "D"))
    assert (o1.answer, o1.correct, o1.detail) == ("A", True, "tier0")
    assert (o2.answer, o2.correct, o2.detail) == ("D", True, "tier1")
    assert o1.ttft is not None
    assert o2.ttft is not None


# ---- logging --------------------------------------------------------------------------


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_cascade_logs_each_escalation_with_tier_score_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unsure, big = Scripted("t0", answer("B"), confidence=0.3), Scripted("t1", answer("C"))
    cascade = Cascade([Tier(unsure, LogprobScorer(), 0.5, hedge=False), Tier(big)], name="c")
    with caplog.at_level("DEBUG", logger="critpath.cascades.cascade"):
        await cascade.decide(Q1)
    lines = [r.getMessage() for r in caplog.records if r.name == "critpath.cascades.cascade"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("cascade c: request q1: escalated past tier 0 (t0) at ")
    assert "low_confidence: escalated: low confidence 0.300 < 0.500" in lines[0]
    assert lines[0].endswith("; tier 1 starts")
    assert lines[1].startswith("cascade c: request q1: answered by tier 1 (t1), accepted, at ")
    assert {r.levelname for r in caplog.records} == {"DEBUG"}


@pytest.mark.usefixtures("no_leftover_tasks")
async def test_vote_logs_an_early_quorum_stop(caplog: pytest.LogCaptureFixture) -> None:
    late = Scripted("late", answer("B"), open_gate=False)
    vote = Vote([Scripted("a1", answer("A")), late, Scripted("a2", answer("A"))], name="v")
    with caplog.at_level("DEBUG", logger="critpath.cascades.vote"):
        await vote.decide(Q1)
        await Vote([Scripted("x", answer("A"))]).decide(Q1)  # heard everyone: quiet
    (record,) = [r for r in caplog.records if r.name == "critpath.cascades.vote"]
    assert record.getMessage().startswith("vote v: request q1: decided early for 'A' at ")
    assert record.getMessage().endswith("1 straggler(s) cancelled")
