"""Prefix-cache-aware routing: the router's decisions, the simulated prefix cache, the
pool strategy on simulated replicas (virtual time), and the sim-server's metrics."""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest

from critpath.adapters import Fleet, Pool, complete, make_request, parse_metrics
from critpath.adapters.routing import PrefixRouter, prompt_of
from critpath.adapters.sim import SimServer
from critpath.adapters.sim.clock import run_virtual
from critpath.adapters.sim.model import SimulatedModel
from critpath.adapters.sim.prefix_cache import PrefixCache, prompt_text
from critpath.adapters.sim.profiles import LatencyProfile
from critpath.errors import ConfigError

SYSTEM = "You are a careful assistant. " * 40  # ~1,100 characters shared by everyone


def conversation(i: int, turns: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": SYSTEM}]
    for t in range(turns):
        msgs.append({"role": "user", "content": f"conversation {i} question {t} " * 8})
        if t < turns - 1:
            msgs.append({"role": "assistant", "content": f"answer {i}.{t} " * 20})
    return msgs


def blocks(router: PrefixRouter, msgs: list[dict[str, str]]) -> list[bytes]:
    return router.blocks_of(prompt_of(make_request(messages=msgs)))


# ---- the decision -------------------------------------------------------------------


def test_a_growing_conversation_stays_on_its_replica() -> None:
    router = PrefixRouter(4)
    idle = [0.0] * 4
    first = router.choose(blocks(router, conversation(1, 1)), idle)
    router.record(blocks(router, conversation(1, 1)), first)
    for turns in range(2, 6):
        b = blocks(router, conversation(1, turns))
        assert router.choose(b, idle) == first
        router.record(b, first)


def test_open_conversations_under_one_system_prompt_spread_over_the_replicas() -> None:
    router = PrefixRouter(4)
    loads = [0.0] * 4  # every conversation stays open: each adds to its replica's load
    for i in range(40):
        b = blocks(router, conversation(i, 1))
        chosen = router.choose(b, loads)
        router.record(b, chosen)
        loads[chosen] += 1
    assert max(loads) <= math.ceil(1.25 * 40 / 4), loads  # no hot spot
    # and each conversation's next turn still finds its replica
    stay = 0
    for i in range(40):
        b = blocks(router, conversation(i, 1))
        owner = next(r for r in range(4) if router.matched(b, r) == len(b))
        if router.choose(blocks(router, conversation(i, 2)), loads) == owner:
            stay += 1
    assert stay == 40


def test_an_overloaded_owner_sends_the_request_to_the_least_loaded() -> None:
    router = PrefixRouter(4, load_factor=1.25)
    b = blocks(router, conversation(7, 3))
    router.record(b, 2)
    assert router.choose(b, [1.0, 1.0, 1.0, 1.0]) == 2  # within the bound: the owner
    assert router.choose(b, [3.0, 0.0, 9.0, 3.0]) == 1  # over it: the least loaded
    assert router.spilled == 1
    unbounded = PrefixRouter(4, load_factor=math.inf)
    unbounded.record(b, 2)
    assert unbounded.choose(b, [3.0, 0.0, 9.0, 3.0]) == 2  # the hot spot a bound prevents


def test_exclusions_and_bad_options() -> None:
    router = PrefixRouter(3)
    b = blocks(router, conversation(1, 2))
    router.record(b, 0)
    assert router.choose(b, [0.0, 0.0, 0.0], exclude={0}) != 0
    with pytest.raises(ConfigError):
        PrefixRouter(2, load_factor=0.5)
    with pytest.raises(ConfigError):
        Pool([SimulatedModel("m")], strategy="prefix", router=PrefixRouter(2))


# ---- the simulated prefix cache -----------------------------------------------------


def test_prefix_cache_matches_whole_prefixes_and_evicts_lru() -> None:
    cache = PrefixCache(capacity_blocks=4, block_tokens=1)  # a block: 4 characters
    assert cache.lookup("aaaabbbb") == 0
    assert cache.lookup("aaaabbbbcccc") == 2
    assert cache.lookup("xxxxbbbb") == 0  # same second block, different prefix: no match
    assert len(cache) == 4  # 2 + 1 + 2 new blocks, capped at 4: the oldest went
    assert cache.evictions == 1
    assert cache.lookup("aaaa") == 0  # "aaaa" was the least recently used


def test_a_cached_prefix_skips_its_prefill() -> None:
    profile = LatencyProfile(queue_s=0.01, prefill_per_token_s=1e-3, ttft_sigma=0.0,
                             tpot_s=0.001, tpot_sigma=0.0)  # fmt: skip

    async def main() -> tuple[float, float, float]:
        model = SimulatedModel("m", profile=profile, prefix_cache=PrefixCache(1000))
        cold = await complete(model, make_request(messages=conversation(1, 2)))
        warm = await complete(model, make_request(messages=conversation(1, 2)))
        assert model.prefix_cache is not None
        return cold.timings.ttft or 0.0, warm.timings.ttft or 0.0, model.prefix_cache.hit_rate

    cold, warm, hit_rate = run_virtual(main())
    assert cold > 0.3  # ~400 prompt tokens at 1 ms each
    assert warm < 0.05  # only the last partial block is prefilled
    assert 0.45 < hit_rate < 0.5  # the second of two equal prompts: nearly all of it


def test_the_next_turn_reuses_the_answer_blocks() -> None:
    async def main() -> float:
        model = SimulatedModel("m", prefix_cache=PrefixCache(10_000))
        first = make_request(messages=conversation(3, 1), max_tokens=400)
        c = await complete(model, first)
        msgs = [*conversation(3, 1), {"role": "assistant", "content": c.text},
                {"role": "user", "content": "and then?"}]  # fmt: skip
        assert model.prefix_cache is not None
        before = model.prefix_cache.hits
        await complete(model, make_request(messages=msgs))
        tokens = len(prompt_text(make_request(messages=msgs))) // 4
        return (model.prefix_cache.hits - before) / tokens

    assert run_virtual(main()) > 0.9


# ---- the pool strategy ----------------------------------------------------------------


def test_prefix_pool_hits_the_cache_where_round_robin_misses() -> None:
    async def hit_rate(strategy: str) -> float:
        # Small caches: a replica holds about two conversations, so spreading each
        # conversation over every replica evicts what its next turn needs.
        fleet = Fleet.synthetic(["small"], replicas=4).with_prefix_caching(100)
        pool = Pool(fleet.replicas("small"), strategy=strategy)  # type: ignore[arg-type]

        async def talk(i: int) -> None:
            for turns in range(1, 5):
                await complete(pool, make_request(messages=conversation(i, turns), max_tokens=8))

        await asyncio.gather(*(talk(i) for i in range(8)))
        caches = [r.prefix_cache for r in fleet.replicas("small")]
        hits = sum(c.hits for c in caches if c is not None)
        queries = sum(c.queries for c in caches if c is not None)
        return hits / queries

    prefix = run_virtual(hit_rate("prefix"))
    p2c = run_virtual(hit_rate("p2c"))
    assert prefix > p2c + 0.1, (prefix, p2c)


# ---- the sim-server's metrics ---------------------------------------------------------


async def test_sim_server_reports_prefix_cache_queries_and_hits() -> None:
    fleet = Fleet.synthetic(["small"], time_scale=0.001).with_prefix_caching(1_000)
    body = {"model": "small", "max_tokens": 2, "messages": conversation(5, 2)}
    async with SimServer(fleet) as server, httpx.AsyncClient() as http:
        for _ in range(2):
            r = await http.post(server.base_url + "/chat/completions", json=body)
            assert r.status_code == 200
        text = (await http.get(server.url + "/metrics")).text
    parsed = parse_metrics(text)
    queries = parsed["vllm:prefix_cache_queries_total"][0]
    hits = parsed["vllm:prefix_cache_hits_total"][0]
    assert queries > 0
    assert 0.4 * queries < hits < 0.5 * queries  # the second request: nearly all cached
    assert "# TYPE vllm:prefix_cache_hits_total counter" in text
