"""Model calls, tools, cascades and votes as spans in the OpenTelemetry GenAI conventions,
and the metrics recorded beside them.

An agent run goes to a real ``critpath sim-server`` on loopback through
``OpenAICompatible``; simulated models answer in process at a small time scale. Spans
are read from an in-memory exporter on the process's one SDK tracer provider
(``otel_support``), filtered to the trace of the run under test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from contextlib import aclosing
from typing import Any

import pytest
from fault_server import FaultServer, ok, status
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from otel_support import in_memory_spans, metric_points, metric_reader

from critpath import Graph, telemetry, telemetry_genai
from critpath.adapters import OpenAICompatible, complete, make_request
from critpath.adapters.sim import Fleet, SimulatedModel
from critpath.adapters.sim.profiles import PROFILES
from critpath.adapters.sim.server import SimServer
from critpath.cascades import Cascade, FunctionScorer, Score, Tier, Vote
from critpath.errors import ModelError, ServerError, is_retryable
from critpath.orchestrator.policy import RetryPolicy
from critpath.telemetry_genai import CAPTURE_CONTENT_ENV, tool_span
from critpath.tracelog import TraceContextFilter, add_trace_ids

FAST = 0.01


def trace_of(span: ReadableSpan) -> list[ReadableSpan]:
    assert span.context is not None
    tid = span.context.trace_id
    return [s for s in in_memory_spans().get_finished_spans() if s.context.trace_id == tid]


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def run_span(run_id: str) -> ReadableSpan:
    return next(
        s
        for s in in_memory_spans().get_finished_spans()
        if s.name.startswith("critpath.run") and attrs(s).get("critpath.run_id") == run_id
    )


def agent_graph(llm: OpenAICompatible) -> Graph:
    g = Graph("agent")

    @g.step
    async def plan() -> str:
        r = make_request(messages="Plan the trip.", max_tokens=8, temperature=0.5, top_p=0.9)
        return (await complete(llm, r)).text

    @g.step
    async def search(plan: str) -> str:
        with tool_span("search", call_id="call-1", arguments={"q": plan[:10]}) as tool:
            tool.result("3 hits")
        return "hits"

    @g.step
    async def answer(plan: str, search: str) -> str:
        return (await complete(llm, make_request(prompt="Answer:", max_tokens=4))).text

    return g


async def test_agent_run_against_sim_server_follows_genai_conventions() -> None:
    in_memory_spans()
    reader = metric_reader()
    async with SimServer(Fleet.synthetic(["small"], time_scale=FAST)) as server:
        llm = OpenAICompatible(server.base_url, "small", retry=None)
        try:
            result = await asyncio.wait_for(agent_graph(llm).run(run_id="genai-1"), 30)
        finally:
            await llm.aclose()
    root = run_span("genai-1")
    spans = trace_of(root)
    steps = {s.name: s for s in children(spans, root)}
    assert set(steps) == {"critpath.step plan", "critpath.step search", "critpath.step answer"}

    (chat,) = children(spans, steps["critpath.step plan"])
    assert chat.name == "chat small"
    assert chat.kind == trace.SpanKind.CLIENT
    a = attrs(chat)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "small"
    assert a["gen_ai.request.max_tokens"] == 8
    assert a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.usage.input_tokens"] >= 1
    assert 1 <= a["gen_ai.usage.output_tokens"] <= 8
    assert a["gen_ai.response.finish_reasons"] in (("stop",), ("length",))
    assert a["server.address"] == "127.0.0.1"
    assert a["server.port"] == server.port
    assert a["critpath.priority"] == result.report.step("plan").priority
    assert "gen_ai.input.messages" not in a
    assert "gen_ai.output.messages" not in a
    assert "error.type" not in a
    (attempt,) = children(spans, chat)
    assert attempt.name == "critpath.model small"

    (completion,) = children(spans, steps["critpath.step answer"])
    assert completion.name == "text_completion small"
    assert attrs(completion)["gen_ai.operation.name"] == "text_completion"

    (tool,) = children(spans, steps["critpath.step search"])
    assert tool.name == "execute_tool search"
    t = attrs(tool)
    assert (t["gen_ai.operation.name"], t["gen_ai.tool.name"]) == ("execute_tool", "search")
    assert t["gen_ai.tool.call.id"] == "call-1"
    assert "gen_ai.tool.call.arguments" not in t
    assert "gen_ai.tool.call.result" not in t

    # the same calls as GenAI metrics
    durations = [
        p
        for p in metric_points(reader, "gen_ai.client.operation.duration")
        if p.attributes.get("server.port") == server.port
    ]
    assert {p.attributes["gen_ai.operation.name"] for p in durations} == {
        "chat",
        "text_completion",
    }
    assert sum(p.count for p in durations) == 2
    usage = [
        p
        for p in metric_points(reader, "gen_ai.client.token.usage")
        if p.attributes.get("server.port") == server.port
    ]
    assert {p.attributes["gen_ai.token.type"] for p in usage} == {"input", "output"}
    ttft = [
        p
        for p in metric_points(reader, "gen_ai.client.operation.time_to_first_chunk")
        if p.attributes.get("server.port") == server.port
    ]
    assert sum(p.count for p in ttft) == 2
    makespans = [
        p
        for p in metric_points(reader, "critpath.run.makespan")
        if p.attributes.get("critpath.graph") == "agent"
    ]
    assert sum(p.count for p in makespans) >= 1
    steps_done = [
        p
        for p in metric_points(reader, "critpath.step.duration")
        if p.attributes.get("critpath.graph") == "agent"
    ]
    assert {p.attributes["critpath.step"] for p in steps_done} == {"plan", "search", "answer"}


async def test_content_is_recorded_only_when_the_user_opts_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    in_memory_spans()
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "true")
    model = SimulatedModel("tiny", time_scale=FAST)
    tracer = telemetry.tracer()
    with tracer.start_as_current_span("content-root") as root:
        await complete(model, make_request(messages="What is 2+2?", max_tokens=3))
        with tool_span("calc", arguments={"x": 2}) as tool:
            tool.result({"y": 4})
    spans = trace_of(root)  # type: ignore[arg-type]
    chat = next(s for s in spans if s.name == "chat tiny")
    a = attrs(chat)
    assert a["gen_ai.provider.name"] == "critpath.sim"
    assert '"What is 2+2?"' in a["gen_ai.input.messages"]
    assert '"role": "assistant"' in a["gen_ai.output.messages"]
    tool_attrs = attrs(next(s for s in spans if s.name == "execute_tool calc"))
    assert tool_attrs["gen_ai.tool.call.arguments"] == '{"x": 2}'
    assert tool_attrs["gen_ai.tool.call.result"] == '{"y": 4}'


async def test_a_failed_call_has_error_type_and_a_failed_tool_too() -> None:
    in_memory_spans()

    failing = SimulatedModel(
        "broken", profile=dataclasses.replace(PROFILES["small"], error_p=1.0), time_scale=FAST
    )
    tracer = telemetry.tracer()
    with tracer.start_as_current_span("errors-root") as root:
        with pytest.raises(ServerError):
            await complete(failing, make_request(messages="hi", max_tokens=3))
        with pytest.raises(KeyError), tool_span("lookup"):
            raise KeyError("nope")
    spans = trace_of(root)  # type: ignore[arg-type]
    chat = next(s for s in spans if s.name == "chat broken")
    assert attrs(chat)["error.type"] == "ServerError"
    assert chat.status.status_code == trace.StatusCode.ERROR
    tool = next(s for s in spans if s.name == "execute_tool lookup")
    assert attrs(tool)["error.type"] == "KeyError"
    assert tool.status.status_code == trace.StatusCode.ERROR


async def test_a_call_closed_early_is_cancelled_not_failed() -> None:
    in_memory_spans()
    model = SimulatedModel("chatty", time_scale=FAST)
    with telemetry.tracer().start_as_current_span("close-root") as root:
        stream = model.stream(make_request(messages="hi", max_tokens=20))
        async for chunk in stream:
            if chunk.text:
                break
        await stream.aclose()
    chat = next(s for s in trace_of(root) if s.name == "chat chatty")  # type: ignore[arg-type]
    assert attrs(chat)["critpath.cancelled"] is True
    assert "error.type" not in attrs(chat)
    assert chat.status.status_code != trace.StatusCode.ERROR


async def test_cascades_and_votes_are_parents_of_their_tier_and_voter_calls() -> None:
    in_memory_spans()
    reader = metric_reader()
    cheap = SimulatedModel("cheap", time_scale=FAST)
    big = SimulatedModel("big", time_scale=FAST)

    async def never(_: Any) -> Score:
        return Score(0.1)

    cascade = Cascade(
        [Tier(cheap, FunctionScorer(never), threshold=0.5, hedge=False), Tier(big)],
        name="casc",
    )
    vote = Vote([SimulatedModel(f"v{i}", time_scale=FAST) for i in range(3)], name="ballot")
    with telemetry.tracer().start_as_current_span("decisions-root") as root:
        decided = await cascade.decide(make_request(messages="q", max_tokens=4))
        voted = await vote.decide(make_request(messages="q", max_tokens=4))
    assert decided.tier == 1
    spans = trace_of(root)  # type: ignore[arg-type]
    casc = next(s for s in spans if s.name == "critpath.cascade casc")
    assert sorted(s.name for s in children(spans, casc)) == ["chat big", "chat cheap"]
    c = attrs(casc)
    assert c["critpath.cascade.tier"] == 1
    assert c["critpath.cascade.escalations"] == ("0: low_confidence",)
    ballot = next(s for s in spans if s.name == "critpath.vote ballot")
    assert sorted(s.name for s in children(spans, ballot)) == ["chat v0", "chat v1", "chat v2"]
    v = attrs(ballot)
    assert v["critpath.vote.voters"] == 3
    assert v["critpath.vote.stopped_early"] is voted.stopped_early
    assert "critpath.vote.answers" not in v  # content: opt-in
    escalations = [
        p
        for p in metric_points(reader, "critpath.cascade.escalations")
        if p.attributes.get("critpath.model") == "casc"
    ]
    assert [(p.attributes["critpath.reason"], p.value) for p in escalations] == [
        ("low_confidence", 1)
    ]
    votes = [
        p
        for p in metric_points(reader, "critpath.vote.decided")
        if p.attributes.get("critpath.model") == "ballot"
    ]
    assert sum(p.value for p in votes) == 1


async def test_model_errors_are_still_model_errors_through_the_instrumentation() -> None:
    # the wrapper must not change what the caller sees
    in_memory_spans()

    failing = SimulatedModel(
        "broken2", profile=dataclasses.replace(PROFILES["small"], error_p=1.0), time_scale=FAST
    )
    with pytest.raises(ModelError) as info:
        await complete(failing, make_request(messages="hi", max_tokens=3))
    assert info.value.model == "broken2"


async def test_log_records_carry_the_trace_and_span_of_the_call(
    fault_server: FaultServer,
) -> None:
    in_memory_spans()
    fault_server.push(status(503))
    fault_server.scenario = ok(("Hi",))
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = add_trace_ids(Keep())
    log = logging.getLogger("critpath.adapters.openai_http")
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.INFO)
    retry = RetryPolicy(attempts=2, initial=0, maximum=0, jitter=0, retry_if=is_retryable)
    llm = OpenAICompatible(fault_server.base_url, "m", retry=retry)
    try:
        with telemetry.tracer().start_as_current_span("log-root") as root:
            await complete(llm, make_request(messages="hi", max_tokens=2))
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        await llm.aclose()
    chat = next(s for s in trace_of(root) if s.name == "chat m")  # type: ignore[arg-type]
    (retried,) = [r for r in records if r.getMessage().startswith("retrying")]
    assert chat.context is not None
    assert retried.otelTraceID == format(chat.context.trace_id, "032x")
    assert retried.otelSpanID == format(chat.context.span_id, "016x")
    assert f"trace_id={retried.otelTraceID}" in handler.format(retried)
    outside = logging.LogRecord("critpath.x", logging.INFO, __file__, 1, "m", None, None)
    assert TraceContextFilter().filter(outside)
    assert outside.otelTraceID == "0"


@pytest.mark.parametrize("tracing", [True, False])
async def test_a_stream_closed_early_is_aborted_at_the_instrumented_server(
    tracing: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_memory_spans()
    metric_reader()  # metrics on: calls are instrumented even with tracing off
    if not tracing:
        monkeypatch.setattr(telemetry_genai, "_tracing_on", lambda: False)
    async with SimServer(Fleet.synthetic(["small"], time_scale=0.05)) as server:
        llm = OpenAICompatible(server.base_url, "small", retry=None)
        try:
            async with aclosing(llm.stream(make_request(prompt="long", max_tokens=200))) as s:
                await anext(s)  # the server accepted it and is generating
            replica = server.fleet.models["small"][0]
            deadline = time.monotonic() + 10
            while replica.aborted == 0:  # the server notices the disconnect on its own
                assert time.monotonic() < deadline, "the closed stream was not aborted"
                await asyncio.sleep(0.01)
        finally:
            await llm.aclose()
    assert replica.aborted == 1


async def test_the_agent_loop_traces_each_tool_call_as_execute_tool() -> None:
    from critpath.adapters.sim.tools import PlannedCall, WavesScript
    from critpath.agents import Agent, tool

    @tool
    async def lookup(city: str) -> str:
        """Look a city up."""
        return f"{city}: sunny"

    in_memory_spans()
    script = WavesScript([[PlannedCall("lookup", {"city": "Oslo"}, tokens=4)]])
    llm = SimulatedModel("m", profile="7b", tool_script=script, time_scale=0.001)
    g = Graph("agentic")

    @g.step
    async def answer() -> str:
        result = await Agent(llm, [lookup]).run("weather?")
        return result.text

    run = await g.run()
    spans = trace_of(run_span(run.report.run_id))
    tools = [s for s in spans if s.name == "execute_tool lookup"]
    assert len(tools) == 1
    t = attrs(tools[0])
    assert t["gen_ai.tool.name"] == "lookup"
    assert t["gen_ai.tool.call.id"]
    (step,) = [s for s in spans if s.name == "critpath.step answer"]
    assert tools[0].parent is not None
    assert step.context is not None
    ancestors = {s.context.span_id: s for s in spans if s.context is not None}
    parent = ancestors.get(tools[0].parent.span_id)
    while parent is not None and parent is not step:
        parent = ancestors.get(parent.parent.span_id) if parent.parent is not None else None
    assert parent is step  # nested under the step that ran the agent
