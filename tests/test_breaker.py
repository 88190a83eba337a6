"""Outlier ejection: the ``Breaker`` state machine on a fake clock, and ``Pool`` ejecting,
probing, cooling and failing over — over scripted replicas and real loopback servers."""

from __future__ import annotations

import contextlib

import pytest
from fault_server import FaultServer, ok, reset, status
from scripted import Scripted

from critpath.adapters import OpenAICompatible, Pool, Timeouts, complete, make_request
from critpath.adapters.breaker import Breaker, BreakerPolicy, BreakerState, counts_as_failure
from critpath.errors import (
    BadRequest,
    ConfigError,
    IdleTimeout,
    ModelConnectionError,
    RateLimited,
    ServerError,
)

REQ = make_request(messages="hi", max_tokens=5)
POLICY = BreakerPolicy(failures=2, cooldown=10.0, max_cooldown=40.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_consecutive_failures_eject_then_a_probe_brings_it_back() -> None:
    clock = Clock()
    b = Breaker(POLICY, clock)
    b.failure()
    assert b.state is BreakerState.CLOSED
    b.success()  # resets the run of failures
    b.failure()
    assert b.available()
    b.failure()
    assert b.state is BreakerState.OPEN
    assert not b.available()
    clock.now = 9.9
    assert not b.available()
    clock.now = 10.0
    assert b.state is BreakerState.HALF_OPEN
    assert b.available()
    assert b.begin() is True  # the probe
    assert not b.available()  # one probe at a time
    b.success()
    assert b.state is BreakerState.CLOSED
    assert b.statistics().ejections == 1


def test_a_failed_probe_doubles_the_cooldown_up_to_the_maximum() -> None:
    clock = Clock()
    b = Breaker(POLICY, clock)
    b.failure()
    b.failure()  # ejected until 10
    for until in (10 + 20, 30 + 40, 70 + 40):
        clock.now = b.statistics().open_until or 0.0
        assert b.begin()
        b.failure()
        assert b.statistics().open_until == until
    assert b.statistics().ejections == 4


def test_cooling_bounded_by_max_cooldown_and_not_a_failure() -> None:
    clock = Clock()
    b = Breaker(POLICY, clock)
    b.cool(100_000.0)
    assert b.state is BreakerState.OPEN
    assert b.statistics().open_until == 40.0
    assert b.statistics().failures_in_row == 0
    b.cool(0.0)  # nothing to wait for
    assert b.statistics().cooled == 1


def test_a_stale_success_does_not_end_an_ejection_and_abandon_frees_the_probe() -> None:
    clock = Clock()
    b = Breaker(POLICY, clock)
    b.failure()
    b.failure()
    b.success()  # a request sent before the ejection
    assert b.state is BreakerState.OPEN
    clock.now = 10.0
    assert b.begin()
    b.abandon()
    assert b.available()


def test_policy_and_failure_kinds() -> None:
    with pytest.raises(ConfigError):
        BreakerPolicy(failures=0)
    with pytest.raises(ConfigError):
        BreakerPolicy(cooldown=5.0, max_cooldown=1.0)
    assert counts_as_failure(ServerError("x"))
    assert counts_as_failure(IdleTimeout("x"))
    assert not counts_as_failure(BadRequest("x"))
    assert not counts_as_failure(RateLimited("x", retry_after=1.0))
    assert not counts_as_failure(ValueError("x"))


async def test_pool_fails_over_before_the_first_token_and_ejects_the_failing_replica() -> None:
    bad = Scripted("bad", fail=ServerError("down"), open_gate=True)
    good = Scripted("good", open_gate=True)
    pool = Pool([bad, good], breaker=POLICY, failover=1)
    texts = [(await complete(pool, REQ)).text for _ in range(6)]
    assert set(texts) == {"Hello hedged world."}
    stats = pool.statistics()
    assert stats.failovers == 2  # two failures eject "bad"; nothing is sent to it after
    assert len(bad.calls) == 2
    bad_breaker = stats.replicas[0].breaker
    assert bad_breaker is not None
    assert bad_breaker.state is BreakerState.OPEN
    assert stats.outstanding == 0


async def test_pool_without_failover_reports_the_error() -> None:
    bad = Scripted("bad", fail=ServerError("down"), open_gate=True)
    good = Scripted("good", open_gate=True)
    pool = Pool([bad, good])
    with pytest.raises(ServerError):
        await complete(pool, REQ)


async def test_an_error_after_the_first_token_is_not_failed_over() -> None:
    bad = Scripted("bad", fail=ModelConnectionError("reset"), fail_mid_stream=True, open_gate=True)
    good = Scripted("good", open_gate=True)
    pool = Pool([bad, good], breaker=POLICY, failover=3)
    with pytest.raises(ModelConnectionError):
        await complete(pool, REQ)
    assert len(good.calls) == 0
    assert pool.statistics().replicas[0].breaker.failures_in_row == 1  # type: ignore[union-attr]


async def test_a_request_refused_as_bad_is_neither_failed_over_nor_a_failure() -> None:
    bad = Scripted("bad", fail=BadRequest("too long"), open_gate=True)
    good = Scripted("good", open_gate=True)
    pool = Pool([bad, good], breaker=POLICY, failover=3)
    with pytest.raises(BadRequest):
        await complete(pool, REQ)
    assert pool.statistics().replicas[0].breaker.failures_in_row == 0  # type: ignore[union-attr]


FAST = Timeouts(connect=2.0, first_token=2.0, idle=2.0, total=10.0)


async def test_pool_over_real_servers_resets_and_429_cool_one_replica() -> None:
    async with FaultServer() as one, FaultServer() as two:
        a = OpenAICompatible(one.base_url, "m", name="a", retry=None, timeouts=FAST)
        b = OpenAICompatible(two.base_url, "m", name="b", retry=None, timeouts=FAST)
        pool = Pool([a, b], breaker=POLICY, failover=1)
        try:
            # a resets before its first token: the request is answered by b
            one.scenario = reset(after=())
            done = await complete(pool, REQ)
            assert done.text == "Hello world"
            assert len(one.completion_requests) == 1
            assert len(two.completion_requests) == 1
            # b asks for 30 s of rest: cooled, every next request goes to a (healthy now)
            one.scenario = ok()
            two.push(status(429, headers=[("Retry-After", "30")]))
            for _ in range(4):
                assert (await complete(pool, REQ)).text == "Hello world"
            assert len(two.completion_requests) == 2
            breaker_b = pool.statistics().replicas[1].breaker
            assert breaker_b is not None
            assert breaker_b.state is BreakerState.OPEN
            assert breaker_b.cooled == 1
            assert pool.statistics().outstanding == 0
        finally:
            with contextlib.suppress(Exception):
                await a.aclose()
                await b.aclose()
