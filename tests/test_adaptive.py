"""Adaptive: the best model predicted to answer in time, brownout and recovery, token
caps, shedding, decisions recorded per call, and composition with cascades, votes and
fast-then-refine. Simulated models on virtual time: every latency is exact."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from critpath import Graph
from critpath.adapters import complete, make_request
from critpath.adapters.adaptive import (
    FINISH_DEADLINE,
    Adaptive,
    Candidate,
    LoadShedError,
    record_decisions,
)
from critpath.adapters.brownout import Brownout, OnMiss, Outlook, Why, choose, predict
from critpath.adapters.sim import FunctionAnswers, LatencyProfile, SimulatedModel
from critpath.adapters.sim.answers import Answer, answer_text
from critpath.adapters.sim.clock import run_virtual
from critpath.adapters.wrapper import WrapperModel
from critpath.cascades import Cascade, Refine, Tier, Vote
from critpath.deadlines import deadline
from critpath.errors import ConfigError
from critpath.serve.asgi import AppServer

T = TypeVar("T")
ROOT = str(Path(__file__).resolve().parents[1])

LETTER = {"strong": "A", "medium": "B", "small": "C"}
TPOT = {"strong": 0.010, "medium": 0.005, "small": 0.002}  # 100 tokens: 1.09 / 0.595 / 0.298 s


def _answer(model: str, _request: Any) -> Answer:
    return Answer(answer_text(LETTER[model], 100), 100, LETTER[model], 0.9)


def sim(name: str, slots: int = 64) -> SimulatedModel:
    profile = LatencyProfile(queue_s=0.1, prefill_per_token_s=0.0, ttft_sigma=0.0,
                             tpot_s=TPOT[name], tpot_sigma=0.0, batch_slowdown=0.0,
                             max_num_seqs=slots)  # fmt: skip
    return SimulatedModel(name, profile=profile, answers=FunctionAnswers(_answer))


def fleet(strong_slots: int = 2) -> tuple[SimulatedModel, SimulatedModel, SimulatedModel]:
    return sim("strong", strong_slots), sim("medium"), sim("small")


def ask(timeout: float | None = None, max_tokens: int = 256) -> Any:
    return make_request(messages="which?", max_tokens=max_tokens, timeout=timeout)


def virtual(main: Coroutine[Any, Any, T]) -> T:
    return run_virtual(main)


# ---- the pure decisions ---------------------------------------------------------------


def test_prediction_adds_the_queue_beyond_capacity() -> None:
    idle = Outlook("m", ttft=0.1, tpot=0.01, tokens=101, service=1.1, outstanding=1, capacity=2)
    assert predict(idle, 4096) == pytest.approx(1.1)
    busy = Outlook("m", ttft=0.1, tpot=0.01, tokens=101, service=1.1, outstanding=5, capacity=2)
    assert busy.queue() == pytest.approx(4 * 1.1 / 2)
    assert predict(busy, 4096) == pytest.approx(2.2 + 1.1)
    assert predict(Outlook("m", None, None, 10, None, 0, None), 10) is None


def test_hysteresis_does_not_flap_around_the_budget() -> None:
    b = Brownout(2, recover=0.8)
    picks = []
    for i in range(100):  # the strong model's prediction hovers 5% around the budget
        strong = 1.05 if i % 2 == 0 else 0.95
        picks.append(choose([strong, 0.3], 1.0, b).index)
    assert picks[0] == 1
    assert set(picks) == {1}
    assert b.trips == 1
    assert b.recoveries == 0
    assert choose([0.79, 0.3], 1.0, b).index == 0  # back once it fits with the margin
    assert b.recoveries == 1
    assert b.tripped == (False, False)


def test_without_hysteresis_the_same_predictions_flap() -> None:
    b = Brownout(2, recover=1.0)
    picks = [choose([1.05 if i % 2 == 0 else 0.95, 0.3], 1.0, b).index for i in range(10)]
    assert picks == [1, 0] * 5  # what recover < 1 prevents


def test_none_fits_gives_the_fastest_or_sheds() -> None:
    assert choose([3.0, 2.0, 2.5], 1.0, Brownout(3)).index == 1
    shed = choose([3.0, 2.0], 1.0, Brownout(2), OnMiss.SHED)
    assert (shed.index, shed.why) == (None, Why.SHED)
    assert choose([None, 0.1], 1.0, Brownout(2)).why == Why.UNLEARNED
    assert choose([5.0, 0.1], None, Brownout(2)).why == Why.NO_BUDGET


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        Adaptive([])
    with pytest.raises(ConfigError):
        Adaptive([sim("small")], quantile=1.0)
    with pytest.raises(ConfigError):
        Adaptive([sim("small")], recover=0.0)
    with pytest.raises(ConfigError):
        Candidate(sim("small"), capacity=0)


# ---- routing on simulated models ------------------------------------------------------


def test_idle_requests_go_to_the_best_model() -> None:
    async def main() -> list[Any]:
        adaptive = Adaptive(fleet())
        return [await adaptive.call(ask(timeout=5.0)) for _ in range(5)]

    routed = virtual(main())
    assert [r.decision.model for r in routed] == ["strong"] * 5
    assert routed[0].decision.why == Why.UNLEARNED
    assert routed[-1].decision.why == Why.FITS
    assert routed[-1].decision.predicted_s == pytest.approx(1.09, rel=0.01)
    assert routed[-1].decision.budget_s == pytest.approx(5.0)


def test_a_burst_browns_out_within_the_budget_and_recovers_after() -> None:
    async def main() -> tuple[list[Any], list[Any], Any]:
        strong, medium, small = fleet(strong_slots=2)
        adaptive = Adaptive([Candidate(strong, capacity=2), medium, small])
        for _ in range(3):  # learn the strong model while idle
            await adaptive.call(ask(timeout=2.5))
        burst = await asyncio.gather(*(adaptive.call(ask(timeout=2.5)) for _ in range(12)))
        await asyncio.sleep(5.0)  # the burst has passed
        after = [await adaptive.call(ask(timeout=2.5)) for _ in range(3)]
        return list(burst), after, adaptive.statistics()

    burst, after, stats = virtual(main())
    models = [r.decision.model for r in burst]
    assert models[:4] == ["strong"] * 4  # two running, two predicted to queue in time
    assert set(models[4:]) == {"medium"}  # the rest answered lighter, not late
    assert all(r.completion.timings.e2e <= 2.5 for r in burst)
    assert burst[4].decision.predictions[0].fits is False
    assert burst[4].decision.predictions[0].queue_s > 0
    assert [r.decision.model for r in after] == ["strong"] * 3  # recovered
    assert stats.trips == 1
    assert stats.recoveries == 1
    assert stats.candidates[0].picks == 3 + 4 + 3


def test_the_deadline_scope_sets_the_budget() -> None:
    async def main() -> Any:
        adaptive = Adaptive(fleet())
        for _ in range(2):
            await adaptive.call(ask())  # no budget: the best
        for m in adaptive.wrapped[1:]:
            await complete(m, ask())  # the lighter ones learned by their own stats
        async with deadline(0.7):
            return await adaptive.call(ask())

    routed = virtual(main())
    assert routed.decision.model == "medium"
    assert routed.decision.budget_s == pytest.approx(0.7)
    assert routed.completion.timings.e2e <= 0.7


def test_token_cap_fits_the_time_left_and_marks_the_cut() -> None:
    async def main() -> tuple[Any, Any]:
        adaptive = Adaptive([sim("small")], cap_tokens=True)
        await adaptive.call(ask())
        loose = await adaptive.call(ask(timeout=5.0, max_tokens=256))
        tight = await adaptive.call(ask(timeout=0.2, max_tokens=256))
        return loose, tight

    loose, tight = virtual(main())
    assert loose.decision.max_tokens is None
    assert not loose.cut_by_deadline
    assert tight.decision.max_tokens in (50, 51)  # 0.1 s after the first token at 2 ms
    assert tight.cut_by_deadline
    assert tight.completion.finish_reason == FINISH_DEADLINE
    assert tight.completion.completion_tokens == tight.decision.max_tokens
    assert tight.completion.timings.e2e <= 0.2 + 1e-9


def test_admission_control_sheds_what_would_be_late() -> None:
    async def main() -> tuple[int, list[BaseException | Any]]:
        strong = sim("strong", slots=1)
        gate = Adaptive([Candidate(strong, capacity=1)], on_miss=OnMiss.SHED)
        await gate.call(ask(timeout=1.5))
        with record_decisions() as log:
            out = await asyncio.gather(
                *(gate.call(ask(timeout=1.5)) for _ in range(3)), return_exceptions=True
            )
        return len(log), out

    logged, out = virtual(main())
    assert logged == 3
    assert not isinstance(out[0], BaseException)
    assert all(isinstance(e, LoadShedError) for e in out[1:])
    err = out[1]
    assert isinstance(err, LoadShedError)
    assert err.budget == pytest.approx(1.5)
    assert err.predicted is not None
    assert err.predicted > 1.5


def test_concurrent_calls_each_get_their_own_decision() -> None:
    async def main() -> list[Any]:
        adaptive = Adaptive(fleet())
        for m in adaptive.wrapped:
            await complete(m, ask())
        adaptive.expected_tokens = 100

        async def one(budget: float) -> Any:
            with record_decisions() as log:
                await complete(adaptive, ask(timeout=budget))
            return log

        return list(await asyncio.gather(one(5.0), one(0.7), one(0.4)))

    logs = virtual(main())
    assert [[d.model for d in log] for log in logs] == [["strong"], ["medium"], ["small"]]
    assert [log[0].budget_s for log in logs] == pytest.approx([5.0, 0.7, 0.4])


def test_server_load_teaches_capacity_and_outstanding() -> None:
    async def main() -> Any:
        strong = sim("strong", slots=4)
        adaptive = Adaptive([strong, sim("small")])
        busy = [asyncio.create_task(complete(strong, ask())) for _ in range(6)]  # others'
        await asyncio.sleep(0.05)
        async with adaptive.watch(0.5):
            await asyncio.sleep(0.01)
            stats = adaptive.statistics()
        await asyncio.gather(*busy)
        return stats

    stats = virtual(main())
    assert stats.candidates[0].capacity == 4
    assert stats.candidates[0].outstanding == 6


# ---- in a run, on a span --------------------------------------------------------------


def test_a_step_records_its_choices_in_the_run_report() -> None:
    async def main() -> Any:
        adaptive = Adaptive(fleet(), expected_tokens=100)
        for m in adaptive.wrapped:
            await complete(m, ask())
        g = Graph("adaptive-step")

        @g.step
        async def answer() -> str:
            return (await complete(adaptive, ask())).text

        @g.step
        async def after(answer: str) -> str:
            await asyncio.sleep(0.2)
            return answer

        g.estimates.observe("after", 0.2)
        return await g.run(deadline=1.0)

    result = virtual(main())
    (choice,) = result.report.step("answer").model_choices
    # The run's deadline less the 0.2 s the next step is predicted to take.
    assert choice.budget_ms == pytest.approx(800, abs=1)
    assert choice.model == "medium"
    assert choice.why == "fits"
    assert "model choice in answer" in result.report.to_text()
    assert result.report.model_validate_json(result.report.model_dump_json()) == result.report


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    exp = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # nobody installed one yet
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exp))
    return exp


def test_the_model_span_carries_the_decision(exporter: InMemorySpanExporter) -> None:
    async def main() -> None:
        adaptive = Adaptive([sim("small")], name="adaptive-span")
        await adaptive.call(ask(timeout=3.0))

    virtual(main())
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "critpath.model adaptive-span"]
    attrs = dict(span.attributes or {})
    assert attrs["critpath.adaptive.model"] == "small"
    assert attrs["critpath.adaptive.why"] == "unlearned"
    assert attrs["critpath.adaptive.budget_ms"] == pytest.approx(3000)
    assert attrs["critpath.completion_tokens"] == 100


# ---- composition ----------------------------------------------------------------------


def _warm(adaptive: Adaptive) -> Coroutine[Any, Any, None]:
    async def go() -> None:
        for m in adaptive.wrapped:
            await complete(m, ask())

    return go()


def test_as_a_cascade_tier() -> None:
    async def main() -> tuple[Any, list[Any]]:
        light = Adaptive([sim("medium"), sim("small")], expected_tokens=100)
        await _warm(light)
        cascade = Cascade([Tier(light, hedge=False), Tier(sim("strong"))])
        with record_decisions() as log:
            async with deadline(0.5):
                result = await cascade.decide(ask())
        return result, log

    result, log = virtual(main())
    assert result.tier == 0
    assert result.completion.text.endswith("(C).")
    assert [d.model for d in log] == ["small"]  # 0.5 s left: the medium would be late


def test_as_a_voter() -> None:
    async def main() -> tuple[Any, list[Any]]:
        voter = Adaptive([sim("strong"), sim("small")], expected_tokens=100)
        await _warm(voter)
        vote = Vote([voter, sim("small"), sim("medium")], early_stop=False)
        with record_decisions() as log:
            result = await vote.decide(ask(timeout=0.6))
        return result, log

    result, log = virtual(main())
    assert [d.model for d in log] == ["small"]
    assert result.completion.text.endswith("(C).")  # two of three voted C


def test_as_the_draft_of_refine() -> None:
    async def main() -> tuple[str, list[Any]]:
        draft = Adaptive([sim("medium"), sim("small")], expected_tokens=100)
        await _warm(draft)
        refine = Refine(draft, sim("strong"))
        with record_decisions() as log:
            text = (await complete(refine, ask(timeout=0.4))).text
        return text, log

    text, log = virtual(main())
    assert [d.model for d in log] == ["small"]
    assert text.endswith("(A).")  # the strong model's revision is final


# ---- the benchmark --------------------------------------------------------------------


def _recorded(root: Path) -> Path:
    """A small recorded set: ``strong`` (70B, right 80%), ``medium`` (34B, 60%), ``small``
    (7B, 40%), every answer 100 tokens."""
    rng = random.Random(3)
    d = root / "set"
    (d / "responses").mkdir(parents=True)
    acc = {"strong": 0.8, "medium": 0.6, "small": 0.4}
    questions, rows = [], {m: [] for m in acc}
    for i in range(200):
        answer = rng.choice("ABCD")
        questions.append({"id": f"q{i}", "question": f"Q{i}?", "answer": answer,
                          "options": ["a", "b", "c", "d"]})  # fmt: skip
        for m, p in acc.items():
            pred = answer if rng.random() < p else ("A" if answer != "A" else "B")
            rows[m].append({"id": f"q{i}", "pred": pred, "output_chars": 400})
    (d / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in questions))
    for m, r in rows.items():
        (d / "responses" / f"{m}.jsonl").write_text("\n".join(json.dumps(x) for x in r))
    params = {"strong": 70, "medium": 34, "small": 7}
    (d / "models.json").write_text(json.dumps({m: {"params_b": p} for m, p in params.items()}))
    return d


def test_bench_adaptive_answers_in_time_where_the_strong_model_alone_is_late(
    tmp_path: Path,
) -> None:
    from critpath.bench import adaptive as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--data", str(_recorded(tmp_path)), "--strong", "strong",
                              "--medium", "medium", "--small", "small", "--slo", "15",
                              "--duration", "60", "--loads", "0.5,2", "--quiet"])  # fmt: skip
    result = virtual(bench.run(args))
    keys = {"policy", "load", "within_slo", "shed", "accuracy", "p50_ms", "p99_ms"}
    assert all(keys <= set(a) for a in result["arms"])
    by = {(a["policy"], a["load"]): a for a in result["arms"]}
    assert set(by) == {(p, x) for p in bench.POLICIES for x in (0.5, 2.0)}
    calm = {k: v for k, v in by["adaptive", 0.5].items() if k in keys - {"policy"}}
    assert calm == {k: by["strong", 0.5][k] for k in calm}  # the same answers when calm
    assert by["adaptive", 2.0]["within_slo"] > by["strong", 2.0]["within_slo"]
    assert by["admission", 2.0]["shed"] > 0
    assert by["adaptive", 2.0]["shed"] == 0
    assert by["adaptive", 2.0]["answered_by"]["medium"] > 0
    assert "adaptive" in bench.render(result)


def test_adaptive_is_a_wrapper_model() -> None:
    strong, medium, small = fleet()
    adaptive = Adaptive([Candidate(strong, capacity=2), medium, small])
    assert isinstance(adaptive, WrapperModel)
    assert [m.name for m in adaptive.leaves()] == ["strong", "medium", "small"]


async def test_the_chat_service_answers_from_the_draft_model_when_the_strong_one_is_late() -> None:
    sys.path.insert(0, ROOT)
    from examples.chatbot import ChatConfig, create_app

    def final_of(body: str) -> dict[str, Any]:
        for block in body.split("\n\n"):
            if block.startswith("event: final\n"):
                return dict(json.loads(block.split("data: ", 1)[1]))
        raise AssertionError(f"no final event in {body[:200]!r}")

    config = ChatConfig(time_scale=0.05, slo=0.03)  # the strong model takes ~0.05 s
    async with (
        AppServer(create_app(config)) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        finals = []
        for _ in range(2):
            r = await client.post("/chat", json={"message": "Why does my deploy fail?"})
            finals.append(final_of(r.text))
    # Not learned yet: the strong model's answer; then predicted late: the draft model's.
    assert "release notes" in finals[0]["text"]
    assert "retry the deploy" in finals[1]["text"]
