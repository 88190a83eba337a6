"""The OpenAI-compatible adapter against a real vLLM server (tiny random-weight Llama)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from critpath import Graph, StepContext
from critpath.adapters import OpenAICompatible, Timeouts, complete, make_request
from critpath.errors import ContextLengthExceeded, FirstTokenTimeout, ModelNotFound

pytestmark = pytest.mark.timeout(300)

# The model's words are random: tests check the serving path, not the text.
LONG = {"ignore_eos": True}


@pytest.fixture
async def model(vllm_url: str, vllm_model: str) -> AsyncIterator[OpenAICompatible]:
    async with OpenAICompatible(vllm_url, vllm_model, vllm=True, retry=None) as m:
        yield m


async def wait_idle(model: OpenAICompatible, within: float) -> float:
    """Poll /metrics until no request runs or waits; return how long it took."""
    start = time.perf_counter()
    while True:
        load = await model.load()
        assert load is not None, "vLLM exports running/waiting metrics"
        if load.running == 0 and load.waiting == 0:
            return time.perf_counter() - start
        if time.perf_counter() - start > within:
            pytest.fail(f"server still busy after {within}s: {load}")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("chat", [True, False])
async def test_answers_with_usage_and_logprobs(
    model: OpenAICompatible, chat: bool, streaming: bool
) -> None:
    model.streaming = streaming
    fields = {"messages": "hello"} if chat else {"prompt": "hello"}
    req = make_request(
        **fields, max_tokens=12, logprobs=True, top_logprobs=2, extra_body=LONG, seed=1
    )
    c = await complete(model, req)
    assert c.usage is not None
    assert c.usage.completion_tokens == 12
    assert c.usage.prompt_tokens >= 1
    assert c.finish_reason == "length"
    assert c.logprobs is not None
    assert len(c.logprobs) == 12
    assert all(lp.logprob <= 0.0 for lp in c.logprobs)
    assert all(len(lp.top) == 2 for lp in c.logprobs)
    assert c.timings.ttft is not None
    assert c.timings.ttft <= c.timings.e2e
    if streaming:
        assert len(c.timings.gaps) >= 1
        assert model.stats.tpot.count >= 1
    assert model.stats.ttft.count >= 1


async def test_priority_and_request_id_are_accepted(model: OpenAICompatible) -> None:
    req = make_request(prompt="hi", max_tokens=4, priority=7, request_id="critpath-test-1")
    c = await complete(model, req)
    assert c.usage is not None
    assert c.usage.completion_tokens >= 1


async def test_step_priority_reaches_the_server(model: OpenAICompatible) -> None:
    g = Graph("llm")
    seen: list[int] = []

    @g.step
    async def ask(ctx: StepContext) -> str:
        seen.append(ctx.priority)
        return (await complete(model, make_request(prompt="hi", max_tokens=4))).text

    result = await g.run()
    assert result.status == "ok"
    assert seen
    assert seen[0] >= 0


async def test_priority_orders_queued_requests(vllm_url: str, vllm_model: str) -> None:
    """The server runs at most 2 sequences (--max-num-seqs 2): with the slots busy and
    low-priority requests queued, a high-priority request sent last finishes before
    the low-priority requests queued ahead of it."""
    async with OpenAICompatible(vllm_url, vllm_model, vllm=True, retry=None) as m:
        finished: list[str] = []

        async def ask(tag: str, priority: int, tokens: int) -> None:
            req = make_request(prompt="x", max_tokens=tokens, priority=priority, extra_body=LONG)
            await complete(m, req)
            finished.append(tag)

        async def until(running: int, waiting: int) -> None:
            for _ in range(500):
                load = await m.load()
                assert load is not None
                if load.running >= running and load.waiting >= waiting:
                    return
                await asyncio.sleep(0.01)
            pytest.fail(f"the server never reached running={running}, waiting={waiting}")

        async with asyncio.TaskGroup() as tg:
            for i in range(2):
                tg.create_task(ask(f"busy{i}", 10, 400))
            await until(running=2, waiting=0)
            for i in range(3):
                tg.create_task(ask(f"low{i}", 10, 60))
            await until(running=2, waiting=3)
            tg.create_task(ask("high", 0, 60))
        assert finished.index("high") < max(finished.index(f"low{i}") for i in range(3))


async def test_cancel_aborts_on_the_server(model: OpenAICompatible) -> None:
    req = make_request(prompt="tell me everything", max_tokens=480, extra_body=LONG)
    got = asyncio.Event()
    chunks = 0

    async def consume() -> None:
        nonlocal chunks
        async for _ in model.stream(req):
            chunks += 1
            if chunks >= 3:
                got.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got.wait(), 60)
    load = await model.load()
    assert load is not None
    assert load.running >= 1  # the generation is in progress on the server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    took = await wait_idle(model, within=1.0)
    assert took < 1.0
    assert model.stats.in_flight == 0


async def test_ttft_watchdog_fires_and_the_server_aborts(vllm_url: str, vllm_model: str) -> None:
    timeouts = Timeouts(first_token=0.002)  # far below any real TTFT
    async with OpenAICompatible(
        vllm_url, vllm_model, vllm=True, retry=None, timeouts=timeouts
    ) as m:
        req = make_request(prompt="hello", max_tokens=400, extra_body=LONG)
        with pytest.raises(FirstTokenTimeout):
            await complete(m, req)
        await wait_idle(m, within=1.0)


async def test_server_errors_are_typed(model: OpenAICompatible, vllm_url: str) -> None:
    with pytest.raises(ContextLengthExceeded):
        await complete(model, make_request(prompt="hello " * 600, max_tokens=8))
    async with OpenAICompatible(vllm_url, "no-such-model", retry=None) as other:
        with pytest.raises(ModelNotFound):
            await complete(other, make_request(prompt="hi", max_tokens=2))


async def test_models_and_load(model: OpenAICompatible, vllm_model: str) -> None:
    assert vllm_model in await model.models()
    load = await model.load()
    assert load is not None
    assert load.kv_cache_usage is not None
    assert 0.0 <= load.kv_cache_usage <= 1.0
