"""``Pool`` and ``Hedge``: balancing, live load, hedge timing, budget, failover, cleanup.

Ordering is controlled by events, not sleeps: ``Scripted`` replicas hold their first
token until the test sets their gate, and record whether their stream finished, failed,
was cancelled or was closed. Timers appear only as lower bounds (a hedge never goes
out before its delay) or generous upper bounds. Every test also checks that no task
it started is left behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from fault_server import FaultServer, ok, stall_before_first_token
from scripted import Scripted

from critpath.adapters import (
    Chunk,
    EndpointStats,
    Model,
    OpenAICompatible,
    complete,
    make_request,
)
from critpath.adapters import hedge as hedge_module
from critpath.adapters import pool as pool_module
from critpath.adapters.hedge import Hedge, HedgeBudget, hedge_delay, is_first_token
from critpath.adapters.pool import Pool
from critpath.adapters.prometheus import ServerLoad
from critpath.adapters.sim import PROFILES, SimulatedModel
from critpath.adapters.sim.clock import run_virtual
from critpath.errors import BadRequest, ConfigError, ModelConnectionError, ServerError

REQ = make_request(messages="hi", max_tokens=16, request_id="req-1")
WORDS = ("Hello", " hedged", " world", ".")


# ---- helpers --------------------------------------------------------------------------


class Loaded(Scripted):
    """A scripted replica that reports server load (or fails to)."""

    def __init__(self, name: str, outstanding: float, *, probe_error: bool = False) -> None:
        super().__init__(name, open_gate=True)
        self.outstanding = outstanding
        self.probe_error = probe_error
        self.probes = 0
        self.probed = asyncio.Event()

    async def load(self) -> ServerLoad | None:
        self.probes += 1
        self.probed.set()
        if self.probe_error:
            raise ModelConnectionError("cannot read /metrics", model=self.name)
        return ServerLoad(self.outstanding, 0.0, None)


def leftover(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() - before if not t.done() and t is not current}


@pytest.fixture
async def no_leftover_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    assert leftover(before) == set()


pytestmark = pytest.mark.usefixtures("no_leftover_tasks")


def outstanding(pool: Pool) -> list[int]:
    return [r.outstanding for r in pool.statistics().replicas]


def picks(pool: Pool) -> list[int]:
    return [r.picks for r in pool.statistics().replicas]


def hedge_stats(h: Hedge) -> dict[str, float | int]:
    return h.statistics().as_dict()


async def wait_for(event: asyncio.Event) -> None:
    async with asyncio.timeout(10):  # generous: only a hang trips it
        await event.wait()


def text(words: tuple[str, ...] = WORDS) -> str:
    return "".join(words)


# ---- modules --------------------------------------------------------------------------


@pytest.mark.parametrize("module", [pool_module, hedge_module])
def test_modules_export_what_they_say(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert names
    assert all(hasattr(module, n) for n in names)
    assert module.__doc__


def test_pool_and_hedge_are_models() -> None:
    replicas = [Scripted("m"), Scripted("m")]
    pool = Pool(replicas)
    assert isinstance(pool, Model)
    assert isinstance(Hedge(pool), Model)
    assert Hedge(replicas).name == "m"
    assert Pool(replicas, name="p").name == "p"


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigError):
        Pool([])
    with pytest.raises(ConfigError):
        Pool([Scripted()], strategy="random")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Hedge([Scripted()], budget=1.5)
    with pytest.raises(ConfigError):
        Hedge([Scripted()], quantile=1.0)
    with pytest.raises(ConfigError):
        Hedge([Scripted()], delay=-1.0)
    with pytest.raises(ConfigError):
        HedgeBudget(0.1, burst=0.5)


# ---- pool: balancing ------------------------------------------------------------------


async def test_least_outstanding_spreads_concurrent_requests_evenly() -> None:
    replicas = [Scripted(f"r{i}") for i in range(4)]
    pool = Pool(replicas)
    streams = [pool.stream(REQ) for _ in range(8)]
    for s in streams:  # each stream starts (and is counted) at its first read
        assert await anext(s) == Chunk()
    assert outstanding(pool) == [2, 2, 2, 2]
    assert [len(r.calls) for r in replicas] == [2, 2, 2, 2]
    for r in replicas:
        r.gate.set()
    for s in streams:
        assert "".join([c.text async for c in s]) == text()
    assert outstanding(pool) == [0, 0, 0, 0]
    assert picks(pool) == [2, 2, 2, 2]
    assert pool.statistics().outstanding == 0
    assert pool.statistics().picks == 8


async def test_least_outstanding_prefers_the_less_loaded_replica() -> None:
    replicas = [Scripted(f"r{i}") for i in range(3)]
    pool = Pool(replicas)
    held = [pool.acquire(), pool.acquire(), pool.acquire(), pool.acquire()]
    assert [h.index for h in held] == [0, 1, 2, 0]
    held[1].release()
    held[1].release()  # idempotent
    assert pool.acquire().index == 1
    assert outstanding(pool) == [2, 1, 1]


async def test_ties_go_to_the_lowest_learned_ttft() -> None:
    replicas = [Scripted("a", ttft=0.3), Scripted("b", ttft=0.1), Scripted("c", ttft=0.2)]
    for r in replicas:
        r.gate.set()
    pool = Pool(replicas)
    for _ in range(3):  # one at a time: every pick is a tie at zero outstanding
        assert (await complete(pool, REQ)).text == text()
    assert picks(pool) == [0, 3, 0]
    with pool.acquire() as first:
        assert first.index == 1
        assert pool.acquire(exclude=[1]).index == 2  # avoided: next fastest


async def test_p2c_is_deterministic_under_a_seed_and_balances() -> None:
    def sequence(seed: int) -> list[int]:
        pool = Pool([Scripted(f"r{i}") for i in range(6)], strategy="p2c", seed=seed)
        return [pool.acquire().index for _ in range(300)]

    assert sequence(7) == sequence(7)
    assert sequence(7) != sequence(8)
    counts = [sequence(7).count(i) for i in range(6)]
    assert max(counts) - min(counts) <= 2  # leases held: p2c keeps loads within a step

    two = Pool([Scripted("a"), Scripted("b")], strategy="p2c", seed=1)
    first = two.acquire()
    assert two.acquire().index != first.index  # with two replicas: always the less loaded


async def test_counts_return_to_zero_after_errors_cancellation_and_early_close() -> None:
    good = Scripted("good", open_gate=True)
    failing = Scripted("bad", fail=ServerError("boom", model="bad"), open_gate=True)
    mid = Scripted("mid", fail=ModelConnectionError("reset", model="mid"), fail_mid_stream=True)
    mid.gate.set()
    stuck = Scripted("stuck")

    pool = Pool([failing])
    with pytest.raises(ServerError):
        await complete(pool, REQ)
    assert outstanding(pool) == [0]

    pool = Pool([mid])
    with pytest.raises(ModelConnectionError):
        await complete(pool, REQ)
    assert outstanding(pool) == [0]

    pool = Pool([good])
    async with aclosing(pool.stream(REQ)) as s:
        await anext(s)
        await anext(s)
        assert outstanding(pool) == [1]
    assert outstanding(pool) == [0]
    assert good.calls[-1].outcome == "closed"

    never_started = pool.stream(REQ)
    await never_started.aclose()
    assert outstanding(pool) == [0]
    assert picks(pool) == [1]  # a stream is counted only once it starts

    pool = Pool([stuck])
    task = asyncio.create_task(complete(pool, REQ))
    await wait_for(stuck.started)
    assert outstanding(pool) == [1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outstanding(pool) == [0]
    assert stuck.calls[0].outcome == "cancelled"


# ---- pool: live load ------------------------------------------------------------------


async def test_refresh_load_uses_the_server_reported_load() -> None:
    busy, idle = Loaded("busy", 5.0), Loaded("idle", 0.0)
    plain = Scripted("plain", open_gate=True)  # reports nothing: judged by our own count
    pool = Pool([busy, idle, plain])
    loads = await pool.refresh_load()
    assert loads == [ServerLoad(5.0, 0.0, None), ServerLoad(0.0, 0.0, None), None]
    assert (busy.probes, idle.probes) == (1, 1)
    leases = [pool.acquire() for _ in range(9)]
    # busy starts at 5 (its server's count): idle and plain get every request.
    assert [sum(1 for lease in leases if lease.index == i) for i in range(3)] == [0, 5, 4]
    for lease in leases:
        lease.release()
    # A server-reported load holds until the next refresh, plus what was sent since...
    assert pool.replica_load(0) == 5.0
    assert pool.replica_load(1) == 5.0
    assert pool.replica_load(2) == 0.0  # ...while a replica without a signal is live
    idle.outstanding = 1.0
    await pool.refresh_load()
    assert [pool.replica_load(i) for i in range(3)] == [5.0, 1.0, 0.0]


async def test_refresh_load_sees_other_clients_on_simulated_replicas() -> None:
    a = SimulatedModel("m", time_scale=0.02, replica="a")
    b = SimulatedModel("m", time_scale=0.02, replica="b")
    pool = Pool([a, b])
    others = [a.stream(REQ) for _ in range(3)]  # another client's requests, not the pool's
    for s in others:
        await anext(s)  # accepted: running on replica a
    assert pool.replica_load(0) == 0.0  # the pool cannot know yet
    await pool.refresh_load()
    assert pool.replica_load(0) == 3.0
    with pool.acquire() as lease:
        assert lease.model is b
    for s in others:
        await s.aclose()
    assert a.stats.in_flight == 0


async def test_a_failed_probe_falls_back_to_the_pools_count() -> None:
    broken = Loaded("broken", 9.0, probe_error=True)
    pool = Pool([broken, Loaded("fine", 2.0)])
    loads = await pool.refresh_load()
    assert loads == [None, ServerLoad(2.0, 0.0, None)]
    assert pool.statistics().load_errors == 1
    assert pool.acquire().index == 0  # judged by our count (0), not the stale 9


async def test_watch_refreshes_in_a_task_it_owns() -> None:
    before = asyncio.all_tasks()
    replica = Loaded("r", 3.0)
    pool = Pool([replica, Loaded("s", 0.0)])
    async with pool.watch(interval=0.001) as watched:
        assert watched is pool
        for _ in range(3):  # several refreshes: it polls periodically
            replica.probed.clear()
            await wait_for(replica.probed)
        assert len(leftover(before)) == 1
    assert leftover(before) == set()
    assert replica.probes >= 3
    assert pool.replica_load(0) == 3.0

    with pytest.raises(ValueError, match="body"):  # the block's own error, unchanged
        async with pool.watch(interval=10):
            raise ValueError("body")
    assert leftover(before) == set()
    with pytest.raises(ConfigError):
        async with pool.watch(interval=0):
            pass


# ---- hedge: pure parts ----------------------------------------------------------------


def test_budget_is_a_token_bucket() -> None:
    b = HedgeBudget(0.25, burst=2.0)
    assert not b.spend()  # starts empty
    for _ in range(4):
        b.deposit()
    assert b.spend()
    assert not b.spend()
    for _ in range(100):
        b.deposit()
    assert b.tokens == 2.0  # capped
    assert b.spend()
    assert b.spend()
    assert not b.spend()


def test_hedge_delay_learns_the_ttft_quantile() -> None:
    stats = EndpointStats()
    args = {"quantile": 0.95, "min_samples": 20, "initial": 0.7, "min_delay": 0.01}
    assert hedge_delay(None, **args) == 0.7  # type: ignore[arg-type]
    for i in range(19):
        stats.ttft.observe(0.1 + i * 0.01)
    assert hedge_delay(stats, **args) == 0.7  # type: ignore[arg-type]
    stats.ttft.observe(0.29)
    assert hedge_delay(stats, **args) == pytest.approx(stats.ttft.p95)  # type: ignore[arg-type]
    assert hedge_delay(stats, **{**args, "min_delay": 1.0}) == 1.0  # type: ignore[arg-type]

    fixed = Hedge([Scripted(ttft=0.2)], delay=0.05)
    assert fixed.delay_for(fixed.pool.replicas[0]) == 0.05
    learned = Hedge([Scripted(ttft=0.2)])
    assert learned.delay_for(learned.pool.replicas[0]) == pytest.approx(0.2)


def test_only_content_counts_as_a_first_token() -> None:
    assert not is_first_token(Chunk())
    assert is_first_token(Chunk(text="a", tokens=1))
    assert is_first_token(Chunk(finish_reason="stop"))


# ---- hedge: racing --------------------------------------------------------------------


async def test_hedge_fires_after_the_delay_and_wins_when_the_primary_never_answers() -> None:
    slow, fast = Scripted("m"), Scripted("m", open_gate=True)
    h = Hedge([slow, fast], delay=0.05, budget=1.0)
    h.budget.tokens = 1.0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with aclosing(h.stream(REQ)) as s:
        chunks = [c async for c in s]
    assert fast.calls[0].started_at - t0 >= 0.05 - 1e-3  # not before the delay
    assert chunks[0] == Chunk()  # one accepted marker, then the winner's answer, exactly
    assert [c.text for c in chunks[1:]] == list(WORDS)
    assert sum(1 for c in chunks if not is_first_token(c)) == 1
    assert slow.calls[0].outcome in ("cancelled", "closed")  # the loser saw it end
    assert slow.calls[0].ended.is_set()
    assert fast.calls[0].request.request_id == "req-1-hedge"
    assert slow.calls[0].request.request_id == "req-1"
    stats = hedge_stats(h)
    assert (stats["requests"], stats["hedges_fired"], stats["hedges_won"]) == (1, 1, 1)
    assert stats["extra_request_fraction"] == 1.0
    assert outstanding(h.pool) == [0, 0]


async def test_no_hedge_when_the_primary_answers_first() -> None:
    primary, other = Scripted("m", open_gate=True), Scripted("m", open_gate=True)
    h = Hedge([primary, other], delay=5.0, budget=1.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    answer = await complete(h, REQ)
    assert loop.time() - t0 < 5.0  # did not wait for the hedge timer
    assert answer.text == text()
    assert other.calls == []
    assert hedge_stats(h)["hedges_fired"] == 0
    assert primary.calls[0].outcome == "finished"


async def test_primary_wins_after_the_hedge_was_sent() -> None:
    primary, hedge_replica = Scripted("m"), Scripted("m")
    h = Hedge([primary, hedge_replica], delay=0.001, budget=1.0)
    h.budget.tokens = 1.0
    task = asyncio.create_task(complete(h, REQ))
    await wait_for(hedge_replica.started)  # the hedge is out; neither has answered
    primary.gate.set()
    answer = await task
    assert answer.text == text()
    await wait_for(hedge_replica.calls[0].ended)
    assert hedge_replica.calls[0].outcome in ("cancelled", "closed")
    stats = hedge_stats(h)
    assert (stats["hedges_fired"], stats["hedges_won"]) == (1, 0)
    assert outstanding(h.pool) == [0, 0]


async def test_budget_bounds_the_hedges_over_many_requests() -> None:
    # Every request wants a hedge: its delay (0) runs out before any first token (1 ms).
    a, b = (Scripted("m", open_gate=True, pause=0.001) for _ in range(2))
    h = Hedge([a, b], delay=0.0, budget=0.1, burst=2.0)
    for i in range(200):
        request = make_request(messages="hi", request_id=f"r{i}")
        assert (await complete(h, request)).text == text()
    stats = hedge_stats(h)
    assert stats["requests"] == 200
    fired = stats["hedges_fired"]
    assert fired <= 0.1 * 200
    assert fired == 20  # one every 10 requests: the bucket starts empty
    assert stats["hedges_skipped_budget"] == 180
    assert stats["extra_request_fraction"] == pytest.approx(0.1)
    assert outstanding(h.pool) == [0, 0]
    assert len(a.calls) + len(b.calls) == 220


async def test_a_failing_hedge_copy_falls_back_to_the_other() -> None:
    bad = Scripted("m", fail=ServerError("boom", model="m"))
    good = Scripted("m")
    h = Hedge([bad, good], delay=0.001, budget=1.0)
    h.budget.tokens = 1.0
    task = asyncio.create_task(complete(h, REQ))
    await wait_for(good.started)
    bad.gate.set()
    await wait_for(bad.calls[0].ended)  # the primary failed; the hedge still runs
    assert bad.calls[0].outcome == "failed"
    assert not task.done()
    good.gate.set()
    assert (await task).text == text()
    assert hedge_stats(h)["hedges_won"] == 1


async def test_primary_failing_before_the_delay_sends_the_hedge_at_once() -> None:
    bad = Scripted("m", fail=ServerError("boom", model="m"), open_gate=True)
    good = Scripted("m", open_gate=True)
    h = Hedge([bad, good], delay=30.0, budget=1.0)
    async with asyncio.timeout(10):  # far less than the 30 s delay
        answer = await complete(h, REQ)
    assert answer.text == text()
    stats = hedge_stats(h)
    assert (stats["hedges_fired"], stats["hedges_won"], stats["failovers"]) == (1, 1, 1)


async def test_errors_propagate_when_no_hedge_can_help() -> None:
    # Not retryable: sending it again would fail the same way.
    refused = Scripted("m", fail=BadRequest("no", model="m"), open_gate=True)
    h = Hedge([refused, Scripted("m", open_gate=True)], delay=30.0, budget=1.0)
    with pytest.raises(BadRequest):
        await complete(h, REQ)
    assert hedge_stats(h)["hedges_fired"] == 0

    # Retryable, but no budget left.
    failing = Scripted("m", fail=ServerError("boom", model="m"), open_gate=True)
    h = Hedge([failing, Scripted("m", open_gate=True)], delay=30.0, budget=0.0)
    with pytest.raises(ServerError):
        await complete(h, REQ)
    assert hedge_stats(h)["hedges_skipped_budget"] == 1

    # Both copies fail: the first error propagates.
    first = Scripted("m", fail=ServerError("first", model="m"), open_gate=True)
    second = Scripted("m", fail=ServerError("second", model="m"), open_gate=True)
    h = Hedge([first, second], delay=30.0, budget=1.0)
    with pytest.raises(ServerError, match="first"):
        await complete(h, REQ)
    assert outstanding(h.pool) == [0, 0]


async def test_an_error_after_the_first_token_is_not_hedged() -> None:
    mid = Scripted("m", fail=ModelConnectionError("reset", model="m"), fail_mid_stream=True)
    mid.gate.set()
    h = Hedge([mid, Scripted("m", open_gate=True)], delay=30.0, budget=1.0)
    with pytest.raises(ModelConnectionError):
        await complete(h, REQ)
    assert hedge_stats(h)["hedges_fired"] == 0
    assert outstanding(h.pool) == [0, 0]


async def test_cancelling_the_hedged_call_cancels_both_copies() -> None:
    a, b = Scripted("m"), Scripted("m")
    h = Hedge([a, b], delay=0.001, budget=1.0)
    h.budget.tokens = 1.0
    before = asyncio.all_tasks()
    task = asyncio.create_task(complete(h, REQ))
    await wait_for(b.started)  # both copies racing
    assert len(leftover(before)) == 3  # the caller and its two copies
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftover(before) == set()  # the copies were awaited, not just cancelled
    assert a.calls[0].outcome == "cancelled"
    assert b.calls[0].outcome == "cancelled"
    assert outstanding(h.pool) == [0, 0]


async def test_closing_the_hedged_stream_early_closes_the_winner() -> None:
    a, b = Scripted("m"), Scripted("m", open_gate=True)
    h = Hedge([a, b], delay=0.001, budget=1.0)
    h.budget.tokens = 1.0
    async with aclosing(h.stream(REQ)) as s:
        assert await anext(s) == Chunk()
        assert (await anext(s)).text == WORDS[0]
        assert a.calls[0].outcome in ("cancelled", "closed")  # the loser: at once
        assert b.calls[0].outcome == "running"
    assert b.calls[0].outcome == "closed"
    assert outstanding(h.pool) == [0, 0]

    # Closed while the copies still race: both are cancelled and awaited.
    c, d = Scripted("m"), Scripted("m")
    h = Hedge([c, d], delay=0.001, budget=1.0)
    h.budget.tokens = 1.0
    stream = h.stream(REQ)

    async def first_chunk() -> Chunk:
        return await anext(stream)

    reader = asyncio.create_task(first_chunk())
    await wait_for(d.started)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await stream.aclose()
    assert [c.calls[0].outcome, d.calls[0].outcome] == ["cancelled", "cancelled"]
    assert outstanding(h.pool) == [0, 0]


async def test_a_single_replica_is_hedged_onto_itself() -> None:
    only = Scripted("m")
    h = Hedge([only], delay=0.001, budget=1.0)
    h.budget.tokens = 1.0
    task = asyncio.create_task(complete(h, REQ))
    while len(only.calls) < 2:
        only.started.clear()
        await wait_for(only.started)
    only.gate.set()
    assert (await task).text == text()
    assert sorted(c.outcome for c in only.calls) in (
        ["cancelled", "finished"],
        ["closed", "finished"],
    )


# ---- over simulated replicas ----------------------------------------------------------


def test_hedging_simulated_stragglers_keeps_answers_exact() -> None:
    """On virtual time: the hedge delay and the stragglers are exact, whatever the load."""
    run_virtual(_hedging_simulated_stragglers())


async def _hedging_simulated_stragglers() -> None:
    profile = PROFILES["7b"].with_(straggler_p=0.2, straggler_x=20.0)

    def replicas() -> list[SimulatedModel]:
        return [
            SimulatedModel("m", profile=profile, seed=3, time_scale=0.01, replica=str(i))
            for i in range(3)
        ]

    plain, hedged = replicas(), replicas()
    expected = plain[0].answer_for(REQ).text
    h = Hedge(hedged, delay=0.01, budget=0.5)
    pool = Pool(plain)

    async def one(model: Model, i: int) -> tuple[str, float]:
        answer = await complete(model, make_request(messages="hi", request_id=f"q{i}"))
        return answer.text, answer.timings.e2e

    async with asyncio.TaskGroup() as tg:
        runs = [tg.create_task(one(h, i)) for i in range(40)]
        runs += [tg.create_task(one(pool, i)) for i in range(40)]
    results = [r.result() for r in runs]
    assert all(t == expected for t, _ in results)
    stats = hedge_stats(h)
    fired, won = stats["hedges_fired"], stats["hedges_won"]
    assert 0 < fired <= 0.5 * 40
    assert 0 < won <= fired
    assert sum(r.aborted for r in hedged) == fired  # every loser was closed, none kept
    assert sum(r.aborted for r in plain) == 0
    assert all(r.stats.in_flight == 0 for r in hedged + plain)
    assert outstanding(h.pool) == [0, 0, 0]


# ---- over HTTP ------------------------------------------------------------------------


async def test_the_losing_http_stream_is_aborted_on_the_server(fault_server: FaultServer) -> None:
    fault_server.push(stall_before_first_token(), ok(["Hel", "lo", " world"]))
    replicas = [OpenAICompatible(fault_server.base_url, "m", retry=None) for _ in range(2)]
    h = Hedge(replicas, delay=0.02, budget=1.0)
    h.budget.tokens = 1.0
    try:
        answer = await complete(h, REQ)
        assert answer.text == "Hello world"
        primary, hedged = fault_server.completion_requests
        async with asyncio.timeout(10):
            await primary.disconnected.wait()  # the server saw the loser hang up
        assert not hedged.disconnected.is_set()  # the winner's connection went back to the pool
        assert hedged.headers["x-request-id"] == "req-1-hedge"
        assert hedge_stats(h)["hedges_won"] == 1
        assert [r.stats.in_flight for r in replicas] == [0, 0]
    finally:
        for r in replicas:
            await r.aclose()


# ---- logging --------------------------------------------------------------------------


def records(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


async def test_hedge_logs_the_hedge_it_fires_and_the_copy_that_won(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow, fast = Scripted("r0"), Scripted("r1", open_gate=True)
    h = Hedge([slow, fast], delay=0.01, budget=1.0, name="h")
    h.budget.tokens = 1.0
    with caplog.at_level("DEBUG", logger="critpath.adapters.hedge"):
        assert (await complete(h, REQ)).text == text()
    lines = records(caplog, "critpath.adapters.hedge")
    assert len(lines) == 2, lines
    assert "request req-1: hedge fired on r1 (primary on r0)" in lines[0]
    assert "no first token within 0.010s" in lines[0]
    assert lines[1] == "hedge h: request req-1: the hedge copy on r1 won"
    assert all(r.levelname == "DEBUG" for r in caplog.records)


async def test_hedge_logs_a_hedge_the_budget_refused_and_is_quiet_without_hedges(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = Scripted("r0")
    h = Hedge([slow, Scripted("r1")], delay=0.001, budget=0.0, name="h")
    logged = asyncio.Event()

    class Notify(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.set()

    notify = Notify()
    logging.getLogger("critpath.adapters.hedge").addHandler(notify)
    try:
        with caplog.at_level("DEBUG", logger="critpath.adapters.hedge"):
            task = asyncio.create_task(complete(h, REQ))
            await wait_for(logged)  # the refusal, once the delay ran out
            slow.gate.set()
            await task
            quiet = Hedge([Scripted("q", open_gate=True)], delay=5.0)
            await complete(quiet, REQ)
    finally:
        logging.getLogger("critpath.adapters.hedge").removeHandler(notify)
    assert records(caplog, "critpath.adapters.hedge") == [
        "hedge h: request req-1: no hedge (budget spent) after no first token within 0.001s"
    ]


async def test_pool_logs_the_replica_it_picks_and_failed_probes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = Pool([Loaded("broken", 9.0, probe_error=True), Loaded("fine", 2.0)], name="p")
    with caplog.at_level("DEBUG", logger="critpath.adapters.pool"):
        await pool.refresh_load()
        await complete(pool, REQ)
    lines = records(caplog, "critpath.adapters.pool")
    assert lines[0].startswith("pool p: load probe of broken failed: ")
    assert "cannot read /metrics" in lines[0]
    assert lines[1] == (
        "pool p: replica broken chosen (least_outstanding, load 0.0; loads [0.0, 2.0])"
    )
    assert len(lines) == 2
    caplog.clear()
    with caplog.at_level("INFO", logger="critpath.adapters.pool"):
        await complete(pool, REQ)  # picks are DEBUG: nothing at INFO
    assert records(caplog, "critpath.adapters.pool") == []
