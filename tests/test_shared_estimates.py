"""``SharedEstimates``: processes start from the fleet's latency estimates and add theirs."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from redis_server import RedisServer, redis_fixture

from critpath.adapters.stats import EndpointStats, Timings
from critpath.errors import ConfigError
from critpath.estimates import Estimates
from critpath.serve.redis_estimates import SharedEstimates


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    yield from redis_fixture()


async def test_a_new_process_starts_from_the_fleet_and_contributes(redis: RedisServer) -> None:
    first, second = Estimates(default=5.0), Estimates(default=5.0)
    for _ in range(4):
        first.observe("plan", 0.1)
    async with SharedEstimates(redis.url, interval=60) as a:
        a.track(first, "g")
        assert await a.sync()
        b = SharedEstimates(redis.url, interval=60)
        b.track(second, "g")
        async with b:  # entering pulls the fleet's estimates
            assert second.predict("plan") == pytest.approx(0.1)
            assert second.get("plan") is not None
            assert second.get("plan").count == 0  # type: ignore[union-attr]  # learned elsewhere
            for _ in range(4):
                second.observe("plan", 0.5)
            assert await b.sync()
        assert await a.sync()
        merged = first.get("plan")
        assert merged is not None
        assert merged.samples() == (0.1,) * 4 + (0.5,) * 4  # both processes' samples
        assert 0.1 < first.predict("plan") < 0.5
        assert merged.count == 4  # counts stay local


async def test_endpoint_stats_are_shared(redis: RedisServer) -> None:
    mine, theirs = EndpointStats(), EndpointStats()
    theirs.ttft.observe(0.2)
    theirs.record(Timings(queued=None, ttft=0.2, e2e=1.2, gaps=(), tokens=11))
    other = SharedEstimates(redis.url)
    other.track_stats("vllm-a", theirs)
    assert await other.sync()
    shared = SharedEstimates(redis.url)
    shared.track_stats("vllm-a", mine)
    assert await shared.sync()
    assert mine.ttft.p50 == pytest.approx(0.2)
    assert mine.tpot.p50 == pytest.approx(0.1)
    assert mine.e2e.p50 == pytest.approx(1.2)


async def test_missing_or_unreachable_store_keeps_local_estimates(redis: RedisServer) -> None:
    local = Estimates()
    local.observe("x", 0.3)
    with socket.socket() as s:  # a port where nothing answers
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
        shared = SharedEstimates(dead, interval=60)
        shared.track(local, "g")
        async with shared:  # no error: local estimates only
            assert local.predict("x") == pytest.approx(0.3)
            assert shared.statistics()["failures"] >= 1
    # a store that lost (or expired) the data: adopting nothing keeps ours
    from redis.asyncio import Redis

    fresh = SharedEstimates(redis.url, interval=60)
    other = Estimates()
    other.observe("x", 0.7)
    fresh.track(other, "g")
    assert await fresh.sync()
    async with Redis.from_url(redis.url) as client:
        await client.flushall()
    assert await fresh.sync()
    assert other.predict("x") == pytest.approx(0.7)
    assert other.get("x").samples() == (0.7,)  # type: ignore[union-attr]


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        SharedEstimates("redis://127.0.0.1:1/0", interval=0)
    shared = SharedEstimates("redis://127.0.0.1:1/0")
    shared.track(Estimates(), "g")
    with pytest.raises(ConfigError):
        shared.track(Estimates(), "g")
    with pytest.raises(ConfigError):
        shared.track_stats("a/b", EndpointStats())
