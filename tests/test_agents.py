"""The agent loop on simulated models and virtual time (exact, machine-independent
timings): tools start as their arguments close, results go back in order, errors go
back to the model, the deadline yields a partial answer, and in a graph every turn and
tool call is a sub-step of the report, the timeline and the critical path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Literal

import pytest
from pydantic import BaseModel

from critpath import Graph, StepContext, deadline
from critpath.adapters import Chunk, ModelRequest, SimulatedModel
from critpath.adapters.sim.clock import run_virtual
from critpath.adapters.sim.tools import CallTools, PlannedCall, Say, WavesScript
from critpath.adapters.tools import ToolCallDelta
from critpath.agents import Agent, AgentStatus, StopReason, Tool, ToolStart, tool
from critpath.errors import ConfigError, ModelConnectionError
from critpath.orchestrator.substeps import SubStepKind

DELAYS = {"a": 1.0, "b": 0.25, "c": 2.0}
started: list[tuple[str, float]] = []


@tool
async def fetch(key: Literal["a", "b", "c"]) -> str:
    """Fetch the value of a key."""
    started.append((key, asyncio.get_running_loop().time()))
    await asyncio.sleep(DELAYS[key])
    return f"value of {key}"


def waves(*keys: str, tokens: int = 20) -> WavesScript:
    return WavesScript([[PlannedCall("fetch", {"key": k}, tokens=tokens) for k in keys]])


def model(script: object) -> SimulatedModel:
    return SimulatedModel("m", profile="7b", tool_script=script, draw_by="request")  # type: ignore[arg-type]


def test_tools_start_as_their_arguments_close_and_results_go_back_in_order() -> None:
    async def main() -> None:
        started.clear()
        result = await Agent(model(waves("c", "b", "a")), [fetch]).run("go")
        assert result.status is AgentStatus.OK
        assert result.turns == 2
        subs = {r.name: r for r in result.substeps.records}
        # Each tool started when its own arguments closed: before the message went on.
        assert subs["t1.fetch#0"].start == subs["t1.model"].end
        assert subs["t1.fetch#0"].start < subs["t1.model+1"].end  # type: ignore[operator]
        assert subs["t1.fetch#1"].start == subs["t1.model+1"].end
        assert all(subs[f"t1.fetch#{k}"].speculative for k in range(3))
        # b finished first, but results go back in call order: c, b, a.
        tool_msgs = [m for m in result.messages if m.role == "tool"]
        assert [m.content for m in tool_msgs] == ["value of c", "value of b", "value of a"]
        calls = result.messages[1].tool_calls or ()
        assert [m.tool_call_id for m in tool_msgs] == [c.id for c in calls]
        # The next turn waited for every tool; the span is the makespan on virtual time.
        assert subs["t2.model"].start == subs["t1.fetch#0"].end
        pa = result.substeps.analysis()
        assert pa.critical_path[-2:] == ["t1.fetch#0", "t2.model"]
        assert pa.span == pytest.approx(subs["t2.model"].end)

    run_virtual(main())


def test_streamed_after_message_and_sequential_side_by_side() -> None:
    async def makespan(mode: ToolStart) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        r = await Agent(model(waves("c", "b", "a")), [fetch], tool_start=mode).run("go")
        return loop.time() - t0, r.substeps.analysis().span

    async def main() -> None:
        streamed, span_s = await makespan(ToolStart.STREAMED)
        after, span_a = await makespan(ToolStart.AFTER_MESSAGE)
        react, _ = await makespan(ToolStart.SEQUENTIAL)
        assert streamed == pytest.approx(span_s)  # streamed runs at its critical path
        assert span_a == pytest.approx(span_s)  # the same dependencies...
        assert after > span_a  # ...but after-message starts its tools late
        assert streamed < after < react

    run_virtual(main())


def test_bad_arguments_unknown_tools_and_failing_tools_go_back_to_the_model() -> None:
    class Clumsy:
        def turn(self, request: ModelRequest) -> CallTools | Say:
            if any(m.role == "tool" for m in request.messages or ()):
                return Say("recovered")
            return CallTools((
                PlannedCall("fetch", {"key": "z"}),
                PlannedCall("nope", {}),
                PlannedCall("boom", {}),
                PlannedCall("fetch", {"key": "b"}),
            ))  # fmt: skip

    @tool
    async def boom() -> str:
        """Always fails."""
        raise RuntimeError("tool exploded")

    async def main() -> None:
        result = await Agent(model(Clumsy()), [fetch, boom]).run("go")
        assert result.status is AgentStatus.OK
        assert result.output == "recovered"
        errors = [r.error for r in result.tool_runs]
        assert errors[0] is not None
        assert "key" in errors[0]
        assert errors[1] is not None
        assert "no tool 'nope'" in errors[1]
        assert errors[2] == "RuntimeError: tool exploded"
        assert errors[3] is None
        contents = [m.content for m in result.messages if m.role == "tool"]
        assert contents[0].startswith("error: ")
        assert contents[3] == "value of b"
        statuses = {r.name: r.status for r in result.substeps.records}
        assert statuses["t1.fetch#0"] == "failed"
        assert statuses["t1.fetch#3"] == "ok"

    run_virtual(main())


def test_side_effecting_tools_wait_for_the_whole_message() -> None:
    @tool(side_effects=True)
    async def send(key: str) -> str:
        """Send something (not undoable)."""
        return "sent"

    script = WavesScript([[PlannedCall("send", {"key": "x"}, tokens=10),
                           PlannedCall("fetch", {"key": "b"}, tokens=10)]])  # fmt: skip

    async def main() -> None:
        result = await Agent(model(script), [fetch, send]).run("go")
        subs = {r.name: r for r in result.substeps.records}
        message_end = subs["t1.model+1"].end
        assert subs["t1.send#0"].start == message_end  # held until the message ended
        assert not subs["t1.send#0"].speculative
        assert subs["t1.fetch#1"].speculative

    run_virtual(main())


def test_a_failing_stream_cancels_the_tools_it_started() -> None:
    gate_seen: list[str] = []

    @tool
    async def slow(key: str) -> str:
        """Slow."""
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            gate_seen.append("cancelled")
            raise
        return "done"

    class Breaks:
        name = "breaks"

        async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
            yield Chunk(tool_calls=(ToolCallDelta(0, "c0", "slow", '{"key": "x"}'),), tokens=1)
            await asyncio.sleep(0.1)
            raise ModelConnectionError("lost", model="breaks")

    async def main() -> None:
        agent = Agent(Breaks(), [slow])
        with pytest.raises(ModelConnectionError):
            await agent.run("go")
        assert gate_seen == ["cancelled"]

    run_virtual(main())


def test_the_deadline_stops_the_loop_with_a_partial_answer() -> None:
    many = WavesScript([[PlannedCall("fetch", {"key": "a"}, tokens=5)] for _ in range(6)])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        agent = Agent(model(many), [fetch])
        t0 = loop.time()
        async with deadline(4.0):
            result = await agent.run("go")
        took = loop.time() - t0
        assert result.status is AgentStatus.PARTIAL
        assert result.stop is StopReason.DEADLINE
        assert took < 4.0
        # It stopped because the next turn could not fit, not because it was cut off.
        assert all(r.status == "ok" for r in result.substeps.records)
        assert "fetch: value of a" in result.output
        # A turn longer than the whole deadline is abandoned, still with a partial answer.
        cut = Agent(model(many), [fetch])
        async with deadline(0.7):
            short = await cut.run("go")
        assert short.status is AgentStatus.PARTIAL
        assert any(r.status == "cancelled" for r in short.substeps.records)

    run_virtual(main())


def test_turn_limit_and_typed_answers() -> None:
    class Verdict(BaseModel):
        label: Literal["yes", "no"]
        score: int

    class Judge:
        def __init__(self) -> None:
            self.calls = 0

        def turn(self, request: ModelRequest) -> CallTools | Say:
            self.calls += 1
            if self.calls == 1:
                return CallTools((PlannedCall("fetch", {"key": "b"}),))
            if self.calls == 2:
                return Say('{"label": "perhaps", "score": 1}')
            return Say('{"label": "yes", "score": 2}')

    async def main() -> None:
        result = await Agent(model(Judge()), [fetch], response_format=Verdict).run("judge")
        assert result.output == Verdict(label="yes", score=2)
        assert result.invalid_answers == 1
        limited = await Agent(model(waves("a")), [fetch], max_turns=1).run("go")
        assert limited.status is AgentStatus.PARTIAL
        assert limited.stop is StopReason.TURN_LIMIT

    run_virtual(main())


def test_tools_are_typed_async_functions() -> None:
    def sync(x: int) -> int:
        return x

    with pytest.raises(ConfigError, match="async"):
        Tool(sync)  # type: ignore[arg-type]

    async def untyped(x) -> int:  # type: ignore[no-untyped-def]
        return 1

    with pytest.raises(ConfigError, match="annotation"):
        Tool(untyped)
    assert fetch.validate({"key": "a"}) == {"key": "a"}


def test_turns_and_tool_calls_are_sub_steps_of_the_graph_run(tmp_path: object) -> None:
    g = Graph("agentic", inputs=["question"], output="answer")

    @g.step
    async def prepare(question: str) -> str:
        await asyncio.sleep(0.5)
        return question

    @g.step
    async def answer(prepare: str, ctx: StepContext) -> str:
        result = await Agent(model(waves("a", "c")), [fetch]).run(prepare)
        return str(result.output)

    async def main() -> None:
        res = await g.run({"question": "go"})
        report = res.report
        step = report.step("answer")
        names = [s.name for s in step.substeps]
        assert names[:2] == ["t1.model", "t1.fetch#0"]
        kinds = {s.name: s.kind for s in step.substeps}
        assert kinds["t1.fetch#1"] is SubStepKind.TOOL
        assert step.substeps[0].start == pytest.approx(0.5)  # times from the run's start
        detail = report.critical_path_detail()
        assert detail[0] == "prepare"
        assert "answer/t1.fetch#1" in detail  # c (2 s) is the long tool
        assert detail[-1] == "answer/t2.model"
        text = report.to_text()
        assert "t1.fetch#1" in text
        from pathlib import Path

        html = report.save_html(Path(str(tmp_path)) / "t.html").read_text()
        assert "answer/t1.fetch#1" in html
        # Saved and loaded, the sub-steps survive.
        from critpath import RunReport

        again = RunReport.model_validate_json(report.model_dump_json())
        assert again.step("answer").substeps == step.substeps

    run_virtual(main())


def test_bench_agent_compares_the_arms_side_by_side() -> None:
    import argparse

    from critpath.bench.registry import load

    bench = load("agent")
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    argv = ["--trials", "5", "--sweep-trials", "2", "--sweep-sigmas", "0.5"]
    r = bench.execute(parser.parse_args([*argv, "--sweep-arg-tokens", "5"]))
    assert r["react_ms"] > r["parallel_ms"] >= r["streamed_ms"]
    assert r["streamed_ms"] == pytest.approx(r["critical_path_ms"])  # virtual time: no overhead
    assert r["streamed_slower_than_parallel"] == 0
    assert r["speedup_vs_react"] == pytest.approx(r["react_ms"] / r["streamed_ms"])
    assert len(r["sweep"]) == 1
    assert "streamed" in bench.render(r)
