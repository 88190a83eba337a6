"""Concurrency limits: never more than allowed, least slack first, learned estimates."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from critpath import ConfigError, Estimates, Graph, Limiter, RunCancelled, StepFailedError
from critpath.orchestrator import RunEvent, StepQueued, StepStarted

TIMEOUT = 5.0


def started(events: list[RunEvent]) -> list[str]:
    return [e.step for e in events if isinstance(e, StepStarted)]


async def collect(run) -> list[RunEvent]:
    return [ev async for ev in run.events()]


class Gauge:
    """Counts steps inside a block; remembers the peak."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def hold(self, yields: int = 5) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            for _ in range(yields):  # give any other step the chance to overlap
                await asyncio.sleep(0)
        finally:
            self.now -= 1


async def test_max_concurrency_is_never_exceeded() -> None:
    g = Graph("global-limit")
    gauge = Gauge()
    for i in range(6):

        async def work() -> None:
            await gauge.hold()

        g.step(name=f"w{i}")(work)

    run = g.start(max_concurrency=2)
    await asyncio.wait_for(run, TIMEOUT)
    assert gauge.peak == 2  # the limit held, and was used
    assert run.limiter is not None
    stats = run.limiter.statistics()
    assert stats["peak_running"] == 2
    assert stats["granted"] == 6
    assert (stats["running"], stats["waiting"]) == (0, 0)
    assert any(isinstance(e, StepQueued) for e in await collect(run))


async def test_without_limits_steps_overlap() -> None:
    """Control for the test above: the gauge does see overlap when nothing limits it."""
    g = Graph("no-limit")
    gauge = Gauge()
    for i in range(4):

        async def work() -> None:
            await gauge.hold()

        g.step(name=f"w{i}")(work)

    await asyncio.wait_for(g.run(), TIMEOUT)
    assert gauge.peak == 4


async def test_map_items_are_limited_one_by_one() -> None:
    g = Graph("map-limit", inputs=["xs"])
    gauge = Gauge()

    @g.map(over="xs")
    async def work(x: int) -> int:
        await gauge.hold()
        return x

    result = await asyncio.wait_for(g.run({"xs": list(range(7))}, max_concurrency=3), TIMEOUT)
    assert result.output == list(range(7))
    assert gauge.peak == 3


async def test_resource_limit_bounds_only_its_steps() -> None:
    g = Graph("resource-limit")
    llm = Gauge()
    cpu_started = asyncio.Event()
    llm_started = asyncio.Event()

    for i in range(4):

        async def call() -> None:
            llm_started.set()
            await cpu_started.wait()  # a cpu step runs alongside the llm step
            await llm.hold()

        g.step(name=f"llm{i}", resource="llm")(call)

    @g.step
    async def cpu() -> None:
        cpu_started.set()
        await llm_started.wait()

    run = g.start(resources={"llm": 1})
    await asyncio.wait_for(run, TIMEOUT)
    assert llm.peak == 1
    report = run.report()
    assert report.step("llm0").resource == "llm"
    # llm steps ran one after the other
    spans = sorted((report.step(f"llm{i}").start, report.step(f"llm{i}").end) for i in range(4))
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end


async def test_waiting_step_with_least_slack_goes_first() -> None:
    """Three roots want the one llm slot; ``urgent`` heads a long chain, ``lazy`` a short one
    and ``hold`` none: they get it in that order, whatever the definition order."""
    g = Graph("least-slack")

    @g.step(resource="llm", estimate=0.1)
    async def hold() -> None:
        return None

    @g.step(resource="llm", estimate=0.1)
    async def lazy() -> str:  # defined first: FIFO would start it first
        return "lazy"

    @g.step(resource="llm", estimate=0.1)
    async def urgent() -> str:
        return "urgent"

    @g.step(estimate=5.0)
    async def long_tail(urgent: str) -> str:
        return urgent

    @g.step(estimate=0.1)
    async def short_tail(lazy: str) -> str:
        return lazy

    run = g.start(resources={"llm": 1})
    await asyncio.wait_for(run, TIMEOUT)
    order = started(await collect(run))
    assert order.index("urgent") < order.index("lazy") < order.index("hold")
    report = run.report()
    assert report.step("urgent").predicted_slack < report.step("lazy").predicted_slack


async def test_least_slack_first_among_steps_ready_at_the_same_time() -> None:
    """At run start both roots are ready and one slot is free: the critical one must win."""
    g = Graph("least-slack-roots")

    @g.step(estimate=0.1)
    async def lazy() -> str:  # defined first
        return "lazy"

    @g.step(estimate=0.1)
    async def urgent() -> str:
        return "urgent"

    @g.step(estimate=5.0)
    async def long_tail(urgent: str) -> str:
        return urgent

    run = g.start(max_concurrency=1)
    await asyncio.wait_for(run, TIMEOUT)
    order = started(await collect(run))
    assert order.index("urgent") < order.index("lazy"), order


async def test_least_slack_first_among_dependants_released_together() -> None:
    g = Graph("least-slack-release")

    @g.step(estimate=0.1)
    async def root() -> int:
        return 1

    @g.step(estimate=0.1)
    async def lazy(root: int) -> int:
        return root

    @g.step(estimate=0.1)
    async def urgent(root: int) -> int:
        return root

    @g.step(estimate=5.0)
    async def long_tail(urgent: int) -> int:
        return urgent

    run = g.start(max_concurrency=1)
    await asyncio.wait_for(run, TIMEOUT)
    order = started(await collect(run))
    assert order.index("urgent") < order.index("lazy"), order


def learned_graph() -> Graph:
    """``a`` and ``b`` look alike to the defaults; only measuring shows ``a``'s tail is long."""
    g = Graph("learned")

    @g.step(resource="llm")
    async def hold() -> None:
        return None

    @g.step(resource="llm")
    async def b() -> int:  # defined before a: wins the tie while estimates are equal
        return 1

    @g.step(resource="llm")
    async def a() -> int:
        return 1

    @g.step
    async def a_tail(a: int) -> int:
        await asyncio.sleep(0.1)  # >= 100x longer than any other step
        return a

    @g.step
    async def b_tail(b: int) -> int:
        return b

    return g


async def test_learned_estimates_change_the_order() -> None:
    g = learned_graph()
    assert len(g.estimates) == 0

    first = g.start(resources={"llm": 1})
    await asyncio.wait_for(first, TIMEOUT)
    order1 = started(await collect(first))
    assert order1.index("b") < order1.index("a")  # the default estimate misleads

    assert set(g.estimates) == {"hold", "a", "b", "a_tail", "b_tail"}
    assert g.estimates.get("a_tail").count == 1
    assert g.estimates.predict("a_tail") > 10 * g.estimates.predict("b_tail")
    assert g.estimates.predict("a_tail") >= 0.09

    second = g.start(resources={"llm": 1})
    await asyncio.wait_for(second, TIMEOUT)
    order2 = started(await collect(second))
    assert order2.index("a") < order2.index("b")  # the learned one fixes it
    assert g.estimates.get("a_tail").count == 2
    assert second.predicted_span < first.predicted_span


async def test_run_with_its_own_estimates_store() -> None:
    g = learned_graph()
    store = Estimates(default=0.5)
    run = g.start(estimates=store)
    await asyncio.wait_for(run, TIMEOUT)
    assert "a_tail" in store
    assert len(g.estimates) == 0
    assert run.predicted_span == pytest.approx(1.0)  # two steps of 0.5 on the longest chain


async def test_shared_limiter_across_two_runs() -> None:
    limiter = Limiter(resources={"llm": 1})
    gauge = Gauge()

    def build(name: str) -> Graph:
        g = Graph(name)
        for i in range(3):

            async def call() -> None:
                await gauge.hold()

            g.step(name=f"{name}{i}", resource="llm")(call)
        return g

    r1 = build("x").start(limiter=limiter)
    r2 = build("y").start(limiter=limiter)
    await asyncio.wait_for(asyncio.gather(r1, r2), TIMEOUT)
    assert gauge.peak == 1
    stats = limiter.statistics()
    assert stats["granted"] == 6
    assert stats["peak_running"] == 1
    assert (stats["running"], stats["waiting"]) == (0, 0)
    assert stats["by_resource"] == {"llm": 0}


async def test_shared_limiter_slot_is_freed_when_a_waiting_run_is_cancelled() -> None:
    """Run B waits for the slot held by run A; B is cancelled just as A's step frees it."""
    limiter = Limiter(max_concurrency=1)
    gate = asyncio.Event()

    ga = Graph("A")

    @ga.step
    async def holder() -> int:
        await gate.wait()
        return 1

    gb = Graph("B")

    @gb.step
    async def waiter() -> int:
        return 2

    ra = ga.start(limiter=limiter)
    await asyncio.sleep(0)  # holder takes the slot
    rb = gb.start(limiter=limiter)
    await asyncio.sleep(0)  # waiter queues behind it
    assert limiter.statistics()["waiting"] == 1
    gate.set()  # the slot frees on the next loop turn ...
    rb.cancel()  # ... in the same turn as B stops
    await asyncio.wait_for(ra, TIMEOUT)
    with pytest.raises(RunCancelled):
        await asyncio.wait_for(rb, TIMEOUT)
    stats = limiter.statistics()
    assert (stats["running"], stats["waiting"]) == (0, 0), stats

    gc = Graph("C")

    @gc.step
    async def later() -> int:
        return 3

    result = await asyncio.wait_for(gc.run(limiter=limiter), TIMEOUT)
    assert result.output == 3


async def test_failing_step_does_not_leak_a_shared_limiter_slot() -> None:
    """``a`` fails while ``b`` waits for the only slot: ``b`` must not start, nor keep it."""
    limiter = Limiter(max_concurrency=1)
    calls: list[str] = []
    g = Graph("fail-leak")

    @g.step
    async def a() -> int:
        raise ValueError("a failed")

    @g.step
    async def b() -> int:
        calls.append("b")
        return 1

    with pytest.raises(StepFailedError) as info:
        await asyncio.wait_for(g.run(limiter=limiter), TIMEOUT)
    stats = limiter.statistics()
    assert (stats["running"], stats["waiting"]) == (0, 0), stats
    assert calls == []
    assert info.value.report is not None
    assert info.value.report.step("b").status == "not_run"  # it never started


async def test_limit_options_are_checked() -> None:
    with pytest.raises(ConfigError):
        Limiter(max_concurrency=0)
    with pytest.raises(ConfigError):
        Limiter(resources={"llm": 0})
    g = Graph()

    @g.step
    async def a() -> int:
        return 1

    with pytest.raises(ConfigError):
        g.start(max_concurrency=2, limiter=Limiter(2))
    with pytest.raises(ConfigError):
        g.start(max_concurrency=0)
