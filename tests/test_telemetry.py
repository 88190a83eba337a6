"""OpenTelemetry spans: one per run, one per step, children of the run's.

OpenTelemetry allows one global tracer provider per process, so this module installs
(at most once) an SDK provider with an in-memory exporter. Every other test module
passes whether or not that has happened.
"""

from __future__ import annotations

import asyncio

import pytest
from fault_server import FaultServer, ok
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from critpath import ConfigError, Graph, StepContext, StepFailedError, telemetry
from critpath.adapters import OpenAICompatible, complete, make_request

_EXPORTER: InMemorySpanExporter | None = None


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    global _EXPORTER
    if _EXPORTER is None:
        exp = InMemorySpanExporter()
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):  # nobody installed one yet
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
            provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        provider.add_span_processor(SimpleSpanProcessor(exp))
        _EXPORTER = exp
    return _EXPORTER


def spans_of(exporter: InMemorySpanExporter, run_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if (s.attributes or {}).get("critpath.run_id") == run_id
    ]


def build() -> Graph:
    g = Graph("traced")

    @g.step(resource="llm")
    async def first() -> int:
        await asyncio.sleep(0.01)
        return 1

    @g.step
    async def side() -> int:
        return 2

    @g.step
    async def last(first: int, side: int) -> int:
        # spans opened inside a step nest under the step's span
        with telemetry.tracer().start_as_current_span("inner"):
            return first + side

    return g


async def test_run_and_step_spans(exporter: InMemorySpanExporter) -> None:
    assert telemetry.tracing_enabled()
    run = build().start(run_id="trace-ok")
    result = await asyncio.wait_for(run, 5.0)
    assert result.output == 3
    spans = spans_of(exporter, "trace-ok")
    runs = [s for s in spans if s.name.startswith("critpath.run")]
    steps = [s for s in spans if s.name.startswith("critpath.step")]
    assert len(runs) == 1
    assert sorted(s.name for s in steps) == [
        "critpath.step first",
        "critpath.step last",
        "critpath.step side",
    ]
    run_span = runs[0]
    assert run_span.parent is None  # no span was current where the run started
    for s in steps:
        assert s.parent is not None
        assert s.parent.span_id == run_span.context.span_id
        assert s.context.trace_id == run_span.context.trace_id
        attrs = s.attributes or {}
        assert isinstance(attrs["critpath.critical"], bool)
        assert attrs["critpath.slack_ms"] >= 0
        assert isinstance(attrs["critpath.priority"], int)
        assert attrs["critpath.status"] == "ok"
        assert s.start_time <= s.end_time
    report = result.report
    by_step = {s.name.removeprefix("critpath.step "): s for s in steps}
    for name, s in by_step.items():
        attrs = s.attributes or {}
        assert attrs["critpath.critical"] == report.step(name).critical
        assert attrs["critpath.slack_ms"] == pytest.approx(report.step(name).slack * 1000)
        assert attrs["critpath.priority"] == report.step(name).priority
    assert by_step["first"].attributes["critpath.critical"] is True
    assert by_step["first"].attributes["critpath.resource"] == "llm"
    assert by_step["side"].attributes["critpath.critical"] is False
    run_attrs = run_span.attributes or {}
    assert list(run_attrs["critpath.critical_path"]) == report.critical_path
    assert run_attrs["critpath.status"] == "ok"
    # the observed path and the makespan's breakdown along it
    observed = [p.name for p in report.observed_path]
    assert list(run_attrs["critpath.observed_path"]) == observed
    assert observed[-1] == "last"
    assert observed[0] == "first"  # ``side`` ended at once: ``first`` released ``last``
    parts = ("path_work", "resource_wait", "overhead")
    assert sum(run_attrs[f"critpath.{k}_ms"] for k in parts) == pytest.approx(
        run_attrs["critpath.makespan_ms"]
    )
    for name, s in by_step.items():
        attrs = s.attributes or {}
        assert attrs["critpath.on_observed_path"] is (name in observed)
        assert attrs["critpath.wait_ms"] == pytest.approx(report.step(name).queued * 1000)
    last = by_step["last"].attributes or {}
    assert (last["critpath.released"], last["critpath.released_by"]) == ("dependency", "first")
    assert by_step["first"].attributes["critpath.released"] == "run start"
    assert "critpath.released" not in (by_step["side"].attributes or {})
    inner = [s for s in exporter.get_finished_spans() if s.name == "inner"]
    assert any(
        s.parent is not None and s.parent.span_id == by_step["last"].context.span_id for s in inner
    )


async def test_failed_run_marks_spans(exporter: InMemorySpanExporter) -> None:
    g = Graph("traced-fail")

    @g.step
    async def bad() -> int:
        raise RuntimeError("no")

    with pytest.raises(StepFailedError):
        await asyncio.wait_for(g.run(run_id="trace-fail"), 5.0)
    spans = spans_of(exporter, "trace-fail")
    assert len(spans) == 2
    step = next(s for s in spans if s.name == "critpath.step bad")
    run_span = next(s for s in spans if s.name.startswith("critpath.run"))
    assert step.attributes["critpath.status"] == "failed"
    assert step.status.status_code == trace.StatusCode.ERROR
    assert run_span.status.status_code == trace.StatusCode.ERROR


def test_unknown_exporter_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        telemetry.enable_tracing("zipkin")  # type: ignore[arg-type]


async def test_model_calls_nest_under_their_step_span(
    exporter: InMemorySpanExporter, fault_server: FaultServer
) -> None:
    fault_server.scenario = ok(("Hello", " there"))
    model = OpenAICompatible(fault_server.base_url, "m", retry=None, vllm=True, api_key="sk-secret")
    g = Graph("traced-model")

    @g.step
    async def ask() -> str:
        return (await complete(model, make_request(messages="hi", max_tokens=5))).text

    result = await g.run()
    await model.aclose()
    assert result.output == "Hello there"
    run_id = result.report.run_id
    step = next(s for s in spans_of(exporter, run_id) if s.name == "critpath.step ask")
    calls = [s for s in exporter.get_finished_spans() if s.name == "critpath.model m"]
    mine = [s for s in calls if s.parent is not None and s.parent.span_id == step.context.span_id]
    assert len(mine) == 1
    attrs = dict(mine[0].attributes or {})
    assert attrs["critpath.completion_tokens"] == 2
    assert "critpath.ttft_ms" in attrs
    assert attrs["critpath.priority"] == result.report.step("ask").priority
    assert all("sk-secret" not in str(v) for v in attrs.values())  # never the API key


async def test_sub_steps_are_spans_under_their_step(exporter: InMemorySpanExporter) -> None:
    from critpath.orchestrator.substeps import SubStepKind

    g = Graph("with-substeps")

    @g.step
    async def agent(ctx: StepContext) -> int:
        with ctx.substeps.record("turn", SubStepKind.MODEL):
            await asyncio.sleep(0.01)
        with ctx.substeps.record("tool", SubStepKind.TOOL, after=["turn"]):
            await asyncio.sleep(0.01)
        side = ctx.substeps.begin("aside", SubStepKind.TOOL)
        ctx.substeps.end(side)
        return 1

    result = await asyncio.wait_for(g.start(run_id="trace-sub"), 5.0)
    step_span = next(s for s in spans_of(exporter, "trace-sub") if s.name == "critpath.step agent")
    subs = {
        s.name.removeprefix("critpath.substep "): s
        for s in exporter.get_finished_spans()
        if s.name.startswith("critpath.substep ")
        and s.parent is not None
        and s.parent.span_id == step_span.context.span_id
    }
    assert set(subs) == {"turn", "tool", "aside"}
    assert (subs["tool"].attributes or {})["critpath.kind"] == "tool"
    assert (subs["turn"].attributes or {})["critpath.critical"] is True
    assert (subs["aside"].attributes or {})["critpath.critical"] is False
    assert subs["turn"].end_time <= subs["tool"].start_time
    assert result.report.critical_path_detail() == ["agent/turn", "agent/tool"]
