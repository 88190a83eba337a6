"""Speculative branches, speculative tool calls and streaming pipelines.

Ordering is asserted with run events and gates (``asyncio.Event``), never with sleeps.
Model calls go to a ``Scripted`` model, which records whether each stream finished or
was cancelled/closed, so "cancelled at once" is checked on the stream itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from scripted import Scripted

from critpath.adapters import complete, make_request
from critpath.errors import ConfigError, InvalidStepError, StepFailedError
from critpath.orchestrator import Graph, StepContext
from critpath.orchestrator.events import (
    SpeculationCancelled,
    SpeculationCommitted,
    SpeculationStarted,
    StepFinished,
    StepItem,
    StepStarted,
)
from critpath.orchestrator.speculation import (
    Speculation,
    SpeculationBudget,
    Speculative,
    Speculator,
    normalise_prediction,
)

REQ = make_request(messages="go", max_tokens=8)


def _names(events: list[Any], kind: type) -> list[str]:
    return [e.step for e in events if isinstance(e, kind)]


def _index(events: list[Any], kind: type, step: str) -> int:
    return next(i for i, e in enumerate(events) if isinstance(e, kind) and e.step == step)


async def _events(run: Any) -> list[Any]:
    return [e async for e in run.events()]


def _assert_no_stray_tasks() -> None:
    me = asyncio.current_task()
    assert [t for t in asyncio.all_tasks() if t is not me and not t.done()] == []


def router_graph(
    decide: asyncio.Event,
    choice: list[str],
    *,
    predict: Any = None,
    speculation: Speculation | None = None,
    b_speculative: Any = True,
    model: Scripted | None = None,
) -> tuple[Graph, dict[str, int]]:
    """``classify`` (waits for ``decide``) routes to ``b`` or ``c``; ``b`` calls ``model``."""
    g = Graph("router", inputs=["q"])
    runs = {"b": 0, "c": 0}

    @g.route(branches=["b", "c"], predict=predict, speculation=speculation)
    async def classify(q: str) -> str:
        await decide.wait()
        return choice[0]

    @g.step(speculative=b_speculative)
    async def b(q: str) -> str:
        runs["b"] += 1
        if model is not None:
            return (await complete(model, REQ)).text
        return f"b:{q}"

    @g.step(speculative=True)
    async def c(q: str) -> str:
        runs["c"] += 1
        return f"c:{q}"

    @g.step
    async def answer(b: str | None = None, c: str | None = None) -> str:
        return b or c or ""

    return g, runs


# ---- pure decisions -------------------------------------------------------------------


def test_predictions_normalise_and_budget_decides() -> None:
    assert normalise_prediction({"b": 0.3, "c": 0.6, "x": 0.1}, ["b", "c"]) == [
        ("c", 0.6),
        ("b", 0.3),
    ]
    assert normalise_prediction(None, ["b"]) == []
    budget = SpeculationBudget(max_waste=0.1, burst_s=0.0)
    assert not budget.allows(0.0)  # no credit yet
    budget.record_work(10.0)
    assert budget.allows(0.5)
    assert not budget.allows(2.0)
    budget.record_waste(1.0)
    assert budget.waste_fraction == pytest.approx(1 / 11)
    with pytest.raises(ConfigError):
        SpeculationBudget(max_waste=2.0)
    with pytest.raises(ConfigError):
        Speculation(top_k=0)


# ---- speculative branches -------------------------------------------------------------


async def test_a_right_guess_starts_before_the_router_and_is_committed() -> None:
    decide = asyncio.Event()
    model = Scripted("m", open_gate=True, words=("from", " b"))
    g, runs = router_graph(decide, ["b"], predict=lambda q: "b", model=model)
    run = g.start({"q": "x"})
    await model.started.wait()  # b is calling its model while the router still thinks
    decide.set()
    result = await run
    events = await _events(run)
    assert result.output == "from b"
    assert runs == {"b": 1, "c": 0}
    assert _index(events, StepStarted, "b~spec") < _index(events, StepFinished, "classify")
    assert _names(events, SpeculationCommitted) == ["b"]
    assert _names(events, SpeculationCancelled) == []
    spec = result.report.speculation
    assert spec is not None
    assert spec["started"] == spec["committed"] == 1
    assert spec["cancelled"] == 0
    assert spec["waste_s"] == 0
    step_b = result.report.step("b")
    assert step_b.speculative
    assert step_b.status == "ok"
    assert "classify" not in step_b.deps  # it did not wait for its router
    _assert_no_stray_tasks()


async def test_a_wrong_guess_is_cancelled_at_once_and_the_right_branch_runs() -> None:
    decide = asyncio.Event()
    model = Scripted("m")  # never answers: the speculation is still running when cut
    g, runs = router_graph(decide, ["c"], predict=lambda q: {"b": 0.9, "c": 0.1}, model=model)
    run = g.start({"q": "x"})
    await model.started.wait()
    decide.set()
    result = await run
    events = await _events(run)
    assert result.output == "c:x"
    assert runs == {"b": 1, "c": 1}
    assert model.outcome in ("cancelled", "closed")  # its stream was closed, not left open
    assert _names(events, SpeculationCancelled) == ["b"]
    spec = result.report.speculation
    assert spec is not None
    assert spec["cancelled"] == 1
    assert spec["committed"] == 0
    assert spec["waste_s"] >= 0
    statuses = {s.name: s.status for s in result.report.steps}
    assert statuses["b~spec"] == "cancelled"
    assert statuses["c"] == "ok"
    _assert_no_stray_tasks()


async def test_steps_with_unmarked_side_effects_are_never_speculated() -> None:
    decide = asyncio.Event()
    decide.set()
    g, runs = router_graph(decide, ["b"], predict=lambda q: "b", b_speculative=False)
    run = g.start({"q": "x"})
    result = await run
    events = await _events(run)
    assert result.output == "b:x"
    assert runs["b"] == 1
    assert result.report.speculation is None
    assert all(not s.speculative for s in result.report.steps)
    assert _names(events, SpeculationStarted) == []


async def test_the_budget_and_allow_refuse_speculation() -> None:
    decide = asyncio.Event()
    decide.set()
    broke = Speculation(budget=SpeculationBudget(max_waste=0.0, burst_s=0.0))
    g, _ = router_graph(decide, ["b"], predict=lambda q: {"b": 0.5}, speculation=broke)
    result = await g.run({"q": "x"})
    assert result.report.speculation is None  # nothing started
    assert broke.budget is not None
    assert broke.budget.refused == 1
    busy = Speculation(allow=lambda: False)
    g2, _ = router_graph(decide, ["b"], predict=lambda q: "b", speculation=busy)
    assert (await g2.run({"q": "x"})).report.speculation is None
    picky = Speculation(min_probability=0.8)
    g3, _ = router_graph(decide, ["b"], predict=lambda q: {"b": 0.6}, speculation=picky)
    assert (await g3.run({"q": "x"})).report.speculation is None


async def test_commit_and_undo_hooks_run_for_branches_with_side_effects() -> None:
    staged: list[tuple[str, Any]] = []
    hooks = Speculative(commit=lambda v: staged.append(("commit", v)),
                        undo=lambda v: staged.append(("undo", v)))  # fmt: skip
    for choice, expected in (["b"], ("commit", "b:x")), (["c"], ("undo", "b:x")):
        staged.clear()
        decide = asyncio.Event()
        g, _ = router_graph(decide, choice, predict=lambda q: "b", b_speculative=hooks)
        run = g.start({"q": "x"})
        async for e in run.events():  # let the speculation finish before deciding
            if isinstance(e, StepFinished) and e.step == "b~spec":
                decide.set()
        await run
        assert staged == [expected]


async def test_learned_predictions_speculate_after_enough_runs() -> None:
    decide = asyncio.Event()
    decide.set()
    g, _ = router_graph(decide, ["c"], predict="learned")
    started = []
    for _ in range(7):
        result = await g.run({"q": "x"})
        started.append((result.report.speculation or {}).get("started", 0))
    assert started[:5] == [0] * 5
    assert started[5:] == [1, 1]


async def test_a_branch_reading_the_router_or_a_failed_guess() -> None:
    g = Graph("r", inputs=["q"])
    decide = asyncio.Event()

    @g.route(branches=["b", "c"], predict=lambda q: "b")
    async def classify(q: str) -> str:
        await decide.wait()
        return "b"

    @g.step(speculative=True)
    async def b(classify: str) -> str:  # needs the decision itself: cannot run early
        return f"b after {classify}"

    @g.step(speculative=True)
    async def c(q: str) -> str:
        return "c"

    decide.set()
    result = await g.run({"q": "x"})
    assert result.outputs["b"] == "b after b"
    assert result.report.speculation is None

    attempts: list[int] = []
    g2 = Graph("r2", inputs=["q"])
    gate = asyncio.Event()

    @g2.route(branches=["flaky"], predict=lambda q: "flaky")
    async def route2(q: str) -> str:
        await gate.wait()
        return "flaky"

    @g2.step(speculative=True)
    async def flaky(q: str) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            gate.set()
            raise RuntimeError("first try fails")
        return "second try"

    result = await g2.run({"q": "x"})
    assert result.output == "second try"
    assert len(attempts) == 2


def test_predictor_must_take_the_routers_parameters() -> None:
    g = Graph("r", inputs=["q"])
    with pytest.raises(InvalidStepError, match="predict needs"):

        @g.route(branches=["b"], predict=lambda nope: "b")
        async def classify(q: str) -> str:
            return "b"


# ---- speculative tool calls -----------------------------------------------------------


async def test_speculator_keeps_confirmed_calls_and_cancels_the_rest() -> None:
    ran: list[str] = []
    never = asyncio.Event()

    async def tool(name: str, block: bool = False) -> str:
        ran.append(name)
        if block:
            await never.wait()
        return f"{name} done"

    async with Speculator() as spec:
        assert spec.start("search(a)", lambda: tool("a"))
        assert not spec.start("search(a)", lambda: tool("a"))  # already started
        spec.start("search(b-partial)", lambda: tool("b", block=True))
        first = await spec.commit("search(a)", lambda: tool("a"))
        late = await spec.commit("search(c)", lambda: tool("c"))  # never speculated
    assert (first, late) == ("a done", "c done")
    assert ran.count("a") == 1
    assert spec.stats.started == 2
    assert spec.stats.committed == 1
    assert spec.stats.cancelled == 1
    _assert_no_stray_tasks()


# ---- streaming pipelines --------------------------------------------------------------


def plan_graph(gates: list[asyncio.Event], plan: list[dict[str, Any]]) -> Graph:
    g = Graph("planner", inputs=["q"])

    @g.stream
    async def planner(q: str) -> Any:
        for gate, task in zip(gates, plan, strict=True):
            await gate.wait()
            yield task

    @g.each(over="planner", key=lambda t: t["id"], needs=lambda t: t["deps"])
    async def execute(task: dict[str, Any], ctx: StepContext) -> str:
        return f"{task['id']}<" + ",".join(sorted(ctx.needed)) + ">"

    @g.step
    async def join(execute: list[str]) -> str:
        return " ".join(execute)

    return g


async def test_consumers_start_before_the_producer_finishes_and_respect_needs() -> None:
    plan = [{"id": "1", "deps": []}, {"id": "2", "deps": []}, {"id": "3", "deps": ["1", "2"]}]
    gates = [asyncio.Event() for _ in plan]
    run = plan_graph(gates, plan).start({"q": "x"})
    seen: list[Any] = []
    async for e in run.events():
        seen.append(e)
        if isinstance(e, StepFinished) and e.step == "execute[0]":
            gates[1].set()  # the second task comes only after the first was executed
        if isinstance(e, StepFinished) and e.step == "execute[1]":
            gates[2].set()
        if not gates[0].is_set():
            gates[0].set()
    result = await run
    assert result.output == "1<> 2<> 3<1,2>"
    assert _index(seen, StepFinished, "execute[0]") < _index(seen, StepFinished, "planner")
    items = [e for e in seen if isinstance(e, StepItem)]
    assert [e.index for e in items] == [0, 1, 2]
    assert _index(seen, StepStarted, "execute[2]") > _index(seen, StepFinished, "execute[1]")


async def test_stream_errors_are_clear() -> None:
    gates = [asyncio.Event() for _ in range(2)]
    for gate in gates:
        gate.set()
    missing = [{"id": "1", "deps": ["9"]}, {"id": "2", "deps": []}]
    with pytest.raises(StepFailedError, match="never produced"):
        await plan_graph(gates, missing).run({"q": "x"})
    twice = [{"id": "1", "deps": []}, {"id": "1", "deps": []}]
    with pytest.raises(StepFailedError, match="key"):
        await plan_graph(gates, twice).run({"q": "x"})
    g = Graph("bad", inputs=["q"])

    @g.step
    async def plain(q: str) -> list[int]:
        return [1]

    @g.each(over="plain")
    async def use(x: int) -> int:
        return x

    with pytest.raises(InvalidStepError, match="stream step"):
        g.validate()
    with pytest.raises(InvalidStepError, match="async generator"):

        @Graph("g2").stream
        async def not_a_generator() -> int:
            return 1


async def test_a_failing_consumer_cancels_the_producer() -> None:
    closed = asyncio.Event()
    g = Graph("p", inputs=["q"])

    @g.stream
    async def planner(q: str) -> Any:
        try:
            yield 1
            await asyncio.Event().wait()  # would stream forever
        finally:
            closed.set()

    @g.each(over="planner")
    async def execute(item: int) -> int:
        raise ValueError("tool broke")

    with pytest.raises(StepFailedError, match="tool broke"):
        await g.run({"q": "x"})
    assert closed.is_set()
    _assert_no_stray_tasks()


async def test_an_empty_stream_and_a_skipped_stream() -> None:
    g = Graph("e", inputs=["q"])

    @g.route(branches=["planner"])
    async def choose(q: str) -> str | None:
        return None if q == "skip" else "planner"

    @g.stream
    async def planner(q: str) -> Any:
        if q == "empty":
            return
        yield 1

    @g.each(over="planner")
    async def execute(item: int) -> int:
        return item * 10

    assert (await g.run({"q": "empty"})).outputs["execute"] == []
    assert (await g.run({"q": "one"})).outputs["execute"] == [10]
    skipped = await g.run({"q": "skip"})
    assert "execute" not in skipped.outputs
    assert {s.name: s.status for s in skipped.report.steps}["execute"] == "skipped"


# ---- the benchmark, small ---------------------------------------------------------------


def test_bench_speculation_reports_latency_cut_waste_and_pipeline_speedups() -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "critpath.cli", "bench", "speculation", "--json", "--runs", "40",
         "--plans", "4", "--accuracies", "0.5,0.95"],
        capture_output=True, text=True, timeout=300, cwd=root, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    rows = {s["predict_accuracy"]: s for s in result["speculation"]}
    for s in rows.values():
        assert {"predict_accuracy", "p50_ms_off", "p50_ms_on", "waste_fraction"} <= set(s)
        assert 0 <= s["waste_fraction"] < 1
        assert s["started"] > 0
    assert rows[0.95]["p50_ms_on"] < rows[0.95]["p50_ms_off"]
    assert rows[0.95]["cancelled"] < rows[0.5]["cancelled"]
    p = result["pipeline"]
    assert set(p) >= {"sequential_ms", "parallel_ms", "streamed_ms", "critical_path_ms"}
    assert p["streamed_ms"] <= p["parallel_ms"] < p["sequential_ms"]
    assert p["critical_path_ms"] <= p["streamed_ms"] * 1.0001  # a lower bound


# ---- review regressions -------------------------------------------------------------------


async def test_commit_hooks_finish_before_the_run_returns_even_if_it_fails() -> None:
    g = Graph("r", inputs=["q"])
    gate, hook_gate, hook_started = asyncio.Event(), asyncio.Event(), asyncio.Event()
    log: list[str] = []

    async def commit(value: Any) -> None:
        log.append("start")
        hook_started.set()
        await hook_gate.wait()
        log.append("end")

    @g.route(branches=["b"], predict=lambda q: "b")
    async def r(q: str) -> str:
        await gate.wait()
        return "b"

    @g.step(speculative=Speculative(commit=commit))
    async def b(q: str) -> int:
        gate.set()  # the router decides while b is still speculative
        await asyncio.sleep(0)
        return 1

    @g.step
    async def other(q: str) -> None:
        await hook_started.wait()
        hook_gate.set()
        raise ValueError("other failed")

    with pytest.raises(StepFailedError, match="other failed"):
        await g.run({"q": "x"})
    assert log == ["start", "end"]
    _assert_no_stray_tasks()


def _undo_graph(how: str, undone: list[Any]) -> Graph:
    g = Graph("r", inputs=["q"])
    started = asyncio.Event()

    @g.route(branches=["b"], predict=lambda q: "b")
    async def r(q: str) -> str | None:
        await started.wait()
        if how == "router fails":
            raise RuntimeError("router broke")
        return None

    @g.step(speculative=Speculative(undo=undone.append))
    async def b(q: str) -> int:
        started.set()
        await asyncio.Event().wait()
        return 1

    return g


async def test_open_speculations_are_undone_when_the_run_ends() -> None:
    for how in ("no branch", "router fails"):
        undone: list[Any] = []
        g = _undo_graph(how, undone)
        if how == "router fails":
            with pytest.raises(StepFailedError):
                await g.run({"q": "x"})
        else:
            assert "b" not in (await g.run({"q": "x"})).outputs
        assert undone == [None], how
        _assert_no_stray_tasks()


def test_only_plain_steps_and_routers_speculate() -> None:
    g = Graph("r", inputs=["items"])
    with pytest.raises(ConfigError, match="only plain steps"):

        @g.map(over="items", speculative=True)
        async def m(item: int) -> int:
            return item


async def test_a_branch_whose_input_was_skipped_is_never_speculated() -> None:
    g = Graph("r", inputs=["q"])
    gate = asyncio.Event()
    calls: list[Any] = []

    @g.route(branches=["x"])
    async def r0(q: str) -> None:
        return None

    @g.route(branches=["b"], predict=lambda q: "b")
    async def r(q: str, r0: str | None = None) -> str:
        gate.set()
        return "b"

    @g.step
    async def x(q: str) -> int:
        return 1

    @g.step(speculative=True)
    async def b(x: int) -> int:
        calls.append(x)
        return x

    result = await g.run({"q": "q"})
    assert calls == []
    assert "b" not in result.outputs


async def test_a_finished_wrong_guess_is_waste_not_work() -> None:
    budget = SpeculationBudget(max_waste=0.5, burst_s=10.0)
    g = Graph("r", inputs=["q"])
    done = asyncio.Event()

    @g.route(branches=["b", "c"], predict=lambda q: "b", speculation=Speculation(budget=budget))
    async def r(q: str) -> str:
        await done.wait()
        return "c"

    @g.step(speculative=True)
    async def b(q: str) -> int:
        done.set()
        return 1

    @g.step(speculative=True)
    async def c(q: str) -> int:
        return 2

    result = await g.run({"q": "x"})
    statuses = {s.name: s.status for s in result.report.steps}
    assert statuses["b~spec"] == "cancelled"
    assert result.outputs["c"] == 2
    useful = sum(s.duration or 0.0 for s in result.report.steps if s.status == "ok")
    assert budget.work == pytest.approx(useful)


async def test_a_committed_guess_that_then_fails_runs_again() -> None:
    g = Graph("r", inputs=["q"])
    gate, decided = asyncio.Event(), asyncio.Event()
    attempts: list[int] = []

    @g.route(branches=["b"], predict=lambda q: "b")
    async def r(q: str) -> str:
        await gate.wait()
        decided.set()
        return "b"

    @g.step(speculative=True)
    async def b(q: str) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            gate.set()
            await decided.wait()  # the router chose it; now it fails
            await asyncio.sleep(0)
            raise RuntimeError("transient")
        return "second"

    assert (await g.run({"q": "x"})).output == "second"
    assert len(attempts) == 2


async def test_each_items_do_not_depend_on_the_whole_stream_in_the_report() -> None:
    g = Graph("p", inputs=["q"])
    release = asyncio.Event()

    @g.stream
    async def planner(q: str) -> Any:
        for i in range(3):
            yield i
        await release.wait()  # keeps streaming (nothing) until the items are done

    @g.each(over="planner")
    async def ex(item: int) -> int:
        await asyncio.sleep(0.05)
        if item == 2:
            release.set()
        return item

    report = (await g.run({"q": "x"})).report
    assert "planner" not in report.step("ex[0]").deps
    assert report.span <= report.makespan * 1.05


async def test_an_async_predictor_such_as_a_fast_model() -> None:
    # A predictor that answers before the router: its branch starts early.
    model = Scripted("fast-classifier", open_gate=True, words=("b",))

    async def fast_guess(q: str) -> str:
        return (await complete(model, REQ)).text

    decide = asyncio.Event()
    g, runs = router_graph(decide, ["b"], predict=fast_guess)
    run = g.start({"q": "x"})
    async for event in run.events():
        if isinstance(event, SpeculationStarted):
            decide.set()  # the router decides only after the guess was acted on
    result = await run
    assert result.output == "b:x"
    assert runs["b"] == 1
    assert result.report.speculation is not None
    assert result.report.speculation["committed"] == 1

    # A predictor slower than the router: nothing is speculated, and it is stopped.
    slow = Scripted("slow-classifier")  # starts, never answers
    g2 = Graph("r2", inputs=["q"])

    @g2.route(branches=["b2"], predict=lambda q: complete(slow, REQ))
    async def r2(q: str) -> str:
        await slow.started.wait()  # decide while the predictor is mid-call
        return "b2"

    @g2.step(speculative=True)
    async def b2(q: str) -> str:
        return "b2"

    result2 = await g2.run({"q": "x"})
    assert result2.output == "b2"
    assert result2.report.speculation is None
    assert slow.outcome in ("cancelled", "closed")
    _assert_no_stray_tasks()
