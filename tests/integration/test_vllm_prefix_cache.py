"""Against a real vLLM: repeated requests sharing a long prefix hit its prefix cache.

vLLM's automatic prefix caching keeps the KV blocks of prompts it has served; a new
request that starts with the same tokens skips their prefill. The test sends a cold
prompt of a few hundred tokens (the tiny model's context is 512), then requests that
share it, and checks vLLM's own counters (``vllm:prefix_cache_hits_total`` grows) and
that the shared-prefix requests reach their first token sooner than cold ones.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from critpath.adapters import OpenAICompatible, complete, make_request, parse_metrics

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def model(vllm_url: str, vllm_model: str) -> AsyncIterator[OpenAICompatible]:
    async with OpenAICompatible(vllm_url, vllm_model, vllm=True, retry=None) as m:
        yield m


async def counters(base_url: str) -> tuple[float, float]:
    root = base_url.rstrip("/").removesuffix("/v1")
    async with httpx.AsyncClient() as http:
        text = (await http.get(root + "/metrics")).text
    parsed = parse_metrics(text)
    return (
        sum(parsed.get("vllm:prefix_cache_queries_total", [0.0])),
        sum(parsed.get("vllm:prefix_cache_hits_total", [0.0])),
    )


def long_prefix() -> str:
    # A fresh prefix each run (the server may have cached an earlier one): ~300 tokens.
    return f"{uuid.uuid4().hex} " + " ".join(f"word{i % 50}" for i in range(60))


async def ttft(model: OpenAICompatible, prompt: str) -> float:
    # A few tokens, never cut short by EOS: a single token may decode to no text.
    req = make_request(prompt=prompt, max_tokens=4, temperature=0, extra_body={"ignore_eos": True})
    c = await complete(model, req)
    assert c.timings.ttft is not None
    return c.timings.ttft


async def test_a_shared_long_prefix_hits_the_prefix_cache_and_answers_sooner(
    model: OpenAICompatible, vllm_url: str
) -> None:
    queries0, hits0 = await counters(vllm_url)
    cold: list[float] = []
    warm: list[float] = []
    for i in range(4):
        prefix = long_prefix()
        cold.append(await ttft(model, prefix + f" question {i}"))  # nothing of it cached
        warm.append(await ttft(model, prefix + f" another question {i}"))  # shares the prefix
    queries1, hits1 = await counters(vllm_url)
    assert queries1 > queries0
    # Each warm request found most of its ~300-token prefix cached.
    assert hits1 - hits0 >= 4 * 200, (hits1 - hits0, queries1 - queries0)
    assert statistics.median(warm) < statistics.median(cold), (warm, cold)
