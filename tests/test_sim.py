"""The simulated fleet: latency model, scheduler, answers, determinism, faults."""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path

import pytest

from critpath.adapters import complete, make_request
from critpath.adapters.sim import (
    PROFILES,
    Fleet,
    LatencyProfile,
    RecordedAnswers,
    SimulatedModel,
    SlotScheduler,
    SyntheticTask,
    calibrate_llmperf,
    parse_choice,
    profile_for_params,
)
from critpath.errors import ConfigError, ModelConnectionError, ServerError

TIMEOUT = 30.0
DATA = Path(os.environ.get("CRITPATH_DATA", Path(__file__).parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(
    not (DATA / "mmlu_pro").is_dir(), reason=f"no recorded data at {DATA} (set CRITPATH_DATA)"
)

# No spread: the latency of each request follows from the profile alone.
FLAT = LatencyProfile(
    queue_s=0.02, prefill_per_token_s=0.0005, ttft_sigma=0.0, tpot_s=0.002, tpot_sigma=0.0,
    batch_slowdown=0.0,
)  # fmt: skip


async def until(condition: object) -> None:
    """Yield to the loop until ``condition()`` holds (state with no event to wait on)."""
    async with asyncio.timeout(TIMEOUT):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0)


def model(profile: LatencyProfile = FLAT, **kw: object) -> SimulatedModel:
    return SimulatedModel("m", profile=profile, **kw)  # type: ignore[arg-type]


# ---- profiles ---------------------------------------------------------------------------


@needs_data
def test_default_profiles_are_the_llmperf_calibration() -> None:
    measured = calibrate_llmperf(DATA / "llmperf")
    for size in ("7b", "13b", "70b"):
        got, want = measured[size], PROFILES[size]
        assert got.tpot_s == pytest.approx(want.tpot_s, rel=0.02)
        assert got.queue_s == pytest.approx(want.queue_s, rel=0.02)
        assert got.ttft_sigma == pytest.approx(want.ttft_sigma, rel=0.05)


def test_profile_by_size_and_validation() -> None:
    assert profile_for_params(3.8) is PROFILES["7b"]
    assert profile_for_params(34) is PROFILES["13b"]
    assert profile_for_params(70) is PROFILES["70b"]
    assert profile_for_params(None) is PROFILES["api"]
    with pytest.raises(ConfigError):
        FLAT.with_(straggler_p=1.5)
    with pytest.raises(ConfigError):
        FLAT.with_(max_num_seqs=0)
    with pytest.raises(ConfigError):
        SimulatedModel("m", profile="9000b")


# ---- the slot scheduler -------------------------------------------------------------------


async def test_scheduler_serves_by_priority_then_arrival() -> None:
    s = SlotScheduler(1)
    await s.acquire(0)
    order: list[str] = []

    async def wait(tag: str, prio: int) -> None:
        await s.acquire(prio)
        order.append(tag)
        s.release()

    tasks = [asyncio.create_task(wait(t, p)) for t, p in (("a", 5), ("b", 1), ("c", 5), ("d", 0))]
    await until(lambda: s.waiting == 4)
    s.release()
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert order == ["d", "b", "a", "c"]
    assert s.running == 0


async def test_cancelled_waiter_leaves_no_slot_behind() -> None:
    s = SlotScheduler(1)
    await s.acquire(0)
    waiter = asyncio.create_task(s.acquire(0))
    await until(lambda: s.waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert s.waiting == 0
    s.release()
    assert s.running == 0
    await asyncio.wait_for(s.acquire(0), TIMEOUT)  # the slot is free
    assert s.running == 1


# ---- the simulated model ------------------------------------------------------------------


async def test_streams_the_answer_exactly_with_usage_and_logprobs() -> None:
    task = SyntheticTask(50, seed=3)
    m = SimulatedModel("large", profile=FLAT, answers=task)
    q = task.questions[7]
    c = await complete(m, make_request(messages=q.text, max_tokens=1000, logprobs=True))
    answer = task.answer("large", make_request(messages=q.text))
    assert c.text == answer.text
    assert c.usage is not None
    assert c.usage.completion_tokens == answer.tokens == c.timings.tokens
    assert c.finish_reason == "stop"
    assert c.logprobs is not None
    assert len(c.logprobs) == answer.tokens
    if answer.choice is not None:
        letter = [lp for lp in c.logprobs if f"({answer.choice})" in lp.token]
        assert letter
        assert letter[0].logprob == pytest.approx(math.log(answer.confidence))
    assert m.stats.ttft.count == 1
    assert m.stats.in_flight == 0


async def test_max_tokens_truncates_with_length() -> None:
    c = await complete(model(), make_request(prompt="hi", max_tokens=3))
    assert c.finish_reason == "length"
    assert c.usage is not None
    assert c.usage.completion_tokens == 3


async def test_deterministic_under_a_seed() -> None:
    prof = PROFILES["7b"].with_(straggler_p=0.3)

    async def draw(seed: int) -> list[tuple[str, int]]:
        m = SimulatedModel("small", profile=prof, answers=SyntheticTask(20, seed=1), seed=seed,
                           time_scale=0.01)  # fmt: skip
        out = []
        for i in range(5):
            req = make_request(messages=f"Synthetic question {i}: which option?",
                               max_tokens=400, request_id=f"r{i}")  # fmt: skip
            c = await complete(m, req)
            out.append((c.text, c.timings.tokens))
        return out

    assert await draw(1) == await draw(1)


async def test_ttft_grows_with_the_prompt() -> None:
    m = model()
    short = await complete(m, make_request(prompt="x", max_tokens=2))
    long = await complete(m, make_request(prompt="x" * 4000, max_tokens=2))  # ~1000 tokens
    assert short.timings.ttft is not None
    assert long.timings.ttft is not None
    # 0.02 s vs 0.02 + 1000 x 0.0005 = 0.52 s
    assert long.timings.ttft > short.timings.ttft + 0.2


async def test_load_raises_time_per_token() -> None:
    prof = FLAT.with_(batch_slowdown=1.0, tpot_s=0.004)
    alone = await complete(model(prof), make_request(prompt="x", max_tokens=30))
    busy = model(prof)
    crowd = await asyncio.gather(*[complete(busy, make_request(prompt="x", max_tokens=30))
                                   for _ in range(8)])  # fmt: skip
    assert alone.timings.tpot is not None
    tpots = [c.timings.tpot for c in crowd if c.timings.tpot is not None]
    # 8 sequences at once: each token takes (1 + 1.0 x 7) = 8x longer
    assert min(tpots) > 3 * alone.timings.tpot


async def test_requests_queue_beyond_the_slots_by_priority() -> None:
    m = model(FLAT.with_(max_num_seqs=1))
    finished: list[str] = []

    async def ask(tag: str, prio: int) -> None:
        await complete(m, make_request(prompt="x", max_tokens=20, priority=prio))
        finished.append(tag)

    first = asyncio.create_task(ask("first", 5))
    await until(lambda: m.scheduler.running == 1)
    rest = [asyncio.create_task(ask(t, p)) for t, p in (("low", 9), ("high", 1))]
    await until(lambda: m.scheduler.waiting == 2)
    load = await m.load()
    assert (load.running, load.waiting) == (1.0, 2.0)
    await asyncio.wait_for(asyncio.gather(first, *rest), TIMEOUT)
    assert finished == ["first", "high", "low"]


async def test_stragglers_are_slower() -> None:
    normal = await complete(model(), make_request(prompt="x", max_tokens=20))
    slow = await complete(
        model(FLAT.with_(straggler_p=1.0, straggler_x=10.0)),
        make_request(prompt="x", max_tokens=20),
    )
    assert slow.timings.e2e > 4 * normal.timings.e2e


async def test_faults() -> None:
    with pytest.raises(ServerError):
        await complete(model(FLAT.with_(error_p=1.0)), make_request(prompt="x", max_tokens=5))
    with pytest.raises(ModelConnectionError):
        await complete(model(FLAT.with_(reset_p=1.0)), make_request(prompt="x", max_tokens=5))
    stalled = model(FLAT.with_(stall_p=1.0))
    before = asyncio.all_tasks()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(complete(stalled, make_request(prompt="x", max_tokens=50)), 0.5)
    assert stalled.aborted == 1
    assert stalled.scheduler.running == 0
    assert stalled.stats.in_flight == 0
    assert asyncio.all_tasks() - before == set()


async def test_cancel_releases_the_slot() -> None:
    m = model(FLAT.with_(max_num_seqs=1, tpot_s=0.05))
    got = asyncio.Event()

    async def read() -> None:
        async for chunk in m.stream(make_request(prompt="x", max_tokens=500)):
            if chunk.text:
                got.set()

    t = asyncio.create_task(read())
    await asyncio.wait_for(got.wait(), TIMEOUT)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert m.aborted == 1
    assert m.scheduler.running == 0


# ---- answers --------------------------------------------------------------------------------


def test_synthetic_task_bigger_models_are_right_more_often_and_err_alike() -> None:
    task = SyntheticTask(2000, seed=0)
    truth = {q.id: q.answer for q in task.questions}
    picks = {
        m: {q.id: task.answer(m, make_request(messages=q.text)).choice for q in task.questions}
        for m in ("small", "medium", "large")
    }
    acc = {m: sum(picks[m][i] == truth[i] for i in truth) / len(truth) for m in picks}
    assert acc["small"] < acc["medium"] < acc["large"]
    abstain = {m: sum(v is None for v in picks[m].values()) for m in picks}
    assert abstain["small"] > abstain["large"]
    assert abstain["small"] > 0
    # Correlated errors: when both are wrong, small and medium agree far above chance (1/3).
    both_wrong = [i for i in truth if picks["small"][i] not in (None, truth[i])
                  and picks["medium"][i] not in (None, truth[i])]  # fmt: skip
    same = sum(picks["small"][i] == picks["medium"][i] for i in both_wrong) / len(both_wrong)
    assert same > 0.5
    # Deterministic per (model, question), whatever the order.
    q = task.questions[11]
    assert task.answer("small", make_request(messages=q.text)) == task.answer(
        "small", make_request(messages="x", extra_body={"question_id": q.id})
    )


def test_parse_choice() -> None:
    assert parse_choice("so... The answer is (C).") == "C"
    assert parse_choice("the answer is D") == "D"
    assert parse_choice("I don't know.") is None


@needs_data
def test_recorded_answers_replay_real_models() -> None:
    rec = RecordedAnswers(DATA / "mmlu_pro")
    gpt = "gpt-4o-2024-05-13"
    rows = rec.responses(gpt)
    right = total = 0
    for q in rec.questions:
        a = rec.answer(gpt, make_request(messages=q.text, extra_body={"question_id": q.id}))
        row = rows[q.id]
        assert a.choice == row["pred"]
        assert a.tokens == max(1, int(row["output_chars"]) // 4)  # type: ignore[call-overload]
        total += 1
        right += a.choice == q.answer
    assert right / total == pytest.approx(0.720, abs=0.005)  # the data README's figure
    nulls = [r for r in rows.values() if r["pred"] is None]
    if nulls:
        abstained = rec.question(str(nulls[0]["id"]))
        assert abstained is not None
        assert rec.answer(gpt, make_request(messages=abstained.text)).choice is None
    with pytest.raises(ConfigError):
        rec.responses("no-such-model")


@needs_data
async def test_recorded_fleet_profiles_by_size() -> None:
    fleet = Fleet.recorded(DATA / "mmlu_pro", ["phi-3-mini-4k-instruct", "gpt-4o-2024-05-13"],
                           time_scale=0.01)  # fmt: skip
    assert fleet["phi-3-mini-4k-instruct"].profile is PROFILES["7b"]
    assert fleet["gpt-4o-2024-05-13"].profile is PROFILES["api"]
    assert isinstance(fleet.answers, RecordedAnswers)
    q = fleet.answers.questions[0]
    c = await asyncio.wait_for(
        complete(fleet["phi-3-mini-4k-instruct"], make_request(messages=q.text, max_tokens=4000)),
        TIMEOUT,
    )
    expected = fleet.answers.answer("phi-3-mini-4k-instruct", make_request(messages=q.text))
    assert parse_choice(c.text) == expected.choice


def test_fleet_validation() -> None:
    with pytest.raises(ConfigError):
        Fleet.synthetic(["huge"])
    fleet = Fleet.synthetic(["small"], replicas=3)
    assert len(fleet.replicas("small")) == 3
    with pytest.raises(ConfigError):
        fleet.replicas("large")
