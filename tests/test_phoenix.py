"""An agent run's trace in a real Arize Phoenix: exported over OTLP/HTTP, read back.

Starts ``phoenix serve`` on 127.0.0.1 (free ports, a temporary working directory),
runs an agent graph whose steps call ``critpath sim-server`` through
``OpenAICompatible`` and a tool, with the application's tracer provider exporting to
Phoenix, then reads the spans back from Phoenix's REST API
(``GET /v1/projects/default/spans``) and checks the tree: run -> steps -> model calls
and the tool, with model, token usage and parentage as Phoenix understood them
(GenAI spans become LLM spans, tools TOOL spans).

Phoenix is found as ``$CRITPATH_PHOENIX`` (its ``phoenix`` executable), else on PATH;
without it the test is skipped, unless ``CRITPATH_REQUIRE_PHOENIX=1``. It is installed
apart from critpath's environment (its dependencies pin versions critpath's do not):
``python -m venv .ci-phoenix && .ci-phoenix/bin/pip install arize-phoenix``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from otel_support import Switch, tracer_provider

from critpath import Graph
from critpath.adapters import OpenAICompatible, complete, make_request
from critpath.adapters.sim import Fleet
from critpath.adapters.sim.server import SimServer
from critpath.telemetry import tool_span

STARTUP_S = float(os.environ.get("CRITPATH_PHOENIX_STARTUP_S", "180"))


def _phoenix() -> str | None:
    given = os.environ.get("CRITPATH_PHOENIX")
    if given:
        return given if Path(given).exists() else None
    return shutil.which("phoenix")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = _phoenix()
    if exe is None:
        if os.environ.get("CRITPATH_REQUIRE_PHOENIX") == "1":
            pytest.fail("CRITPATH_REQUIRE_PHOENIX=1 but no phoenix (set CRITPATH_PHOENIX)")
        pytest.skip("Arize Phoenix not installed (set CRITPATH_PHOENIX to its executable)")
    work = tmp_path_factory.mktemp("phoenix")
    port = _free_port()
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(_free_port()),
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = (work / "phoenix.log").open("wb")
    proc = subprocess.Popen([exe, "serve"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"phoenix exited with {proc.returncode}; see {work}/phoenix.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"phoenix not up within {STARTUP_S}s; see {work}/phoenix.log")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def agent(llm: OpenAICompatible) -> Graph:
    g = Graph("phoenix-agent")

    @g.step
    async def plan() -> str:
        return (await complete(llm, make_request(messages="Plan it.", max_tokens=6))).text

    @g.step
    async def lookup(plan: str) -> str:
        with tool_span("lookup", call_id="c1") as tool:
            tool.result("found")
        return "found"

    @g.step
    async def answer(plan: str, lookup: str) -> str:
        return (await complete(llm, make_request(messages="Answer.", max_tokens=4))).text

    return g


async def test_an_agent_runs_trace_reads_back_from_phoenix(phoenix: str) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    switch = Switch(BatchSpanProcessor(OTLPSpanExporter(endpoint=phoenix + "/v1/traces")))
    tracer_provider().add_span_processor(switch)
    try:
        async with SimServer(Fleet.synthetic(["small"], time_scale=0.01)) as server:
            llm = OpenAICompatible(server.base_url, "small", retry=None)
            try:
                result = await asyncio.wait_for(agent(llm).run(run_id="phoenix-run"), 60)
            finally:
                await llm.aclose()
        assert switch.force_flush(10_000)
    finally:
        switch.on = False
    assert result.report.status == "ok"

    spans = await _read_back(phoenix, "phoenix-run", expected=6)
    by_id = {s["context"]["span_id"]: s for s in spans}
    (root,) = [s for s in spans if s["name"] == "critpath.run phoenix-agent"]
    assert root["parent_id"] is None
    steps = {s["name"]: s for s in spans if s["parent_id"] == root["context"]["span_id"]}
    assert set(steps) == {
        "critpath.step plan",
        "critpath.step lookup",
        "critpath.step answer",
    }
    calls = [s for s in spans if s["name"] == "chat small"]
    assert len(calls) == 2
    assert {by_id[c["parent_id"]]["name"] for c in calls} == {
        "critpath.step plan",
        "critpath.step answer",
    }
    for call in calls:
        a = call["attributes"]
        assert call["span_kind"] == "LLM"  # Phoenix read the GenAI conventions
        assert a["gen_ai.request.model"] == "small"
        assert a["llm.model_name"] == "small"
        assert a["gen_ai.usage.input_tokens"] >= 1
        assert a["llm.token_count.completion"] == a["gen_ai.usage.output_tokens"] >= 1
    (tool,) = [s for s in spans if s["name"] == "execute_tool lookup"]
    assert by_id[tool["parent_id"]]["name"] == "critpath.step lookup"
    assert tool["attributes"]["gen_ai.tool.name"] == "lookup"


async def _read_back(url: str, run_id: str, *, expected: int) -> list[dict[str, Any]]:
    """The spans of the trace whose run span has ``run_id``, once Phoenix has stored at
    least ``expected`` of them (it ingests in the background)."""
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while True:
            resp = await client.get("/v1/projects/default/spans", params={"limit": 1000})
            resp.raise_for_status()
            spans: list[dict[str, Any]] = resp.json()["data"]
            runs = [s for s in spans if s["attributes"].get("critpath.run_id") == run_id]
            if runs:
                trace_id = runs[0]["context"]["trace_id"]
                mine = [s for s in spans if s["context"]["trace_id"] == trace_id]
                if len(mine) >= expected:
                    return mine
            if time.monotonic() > deadline:
                raise AssertionError(f"Phoenix has not stored the run's spans: {len(spans)} seen")
            await asyncio.sleep(0.25)
