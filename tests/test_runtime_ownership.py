"""What a run owns and how it lets go: contexts by annotation, stuck steps, scopes
that refuse work once closed, limiter slots given back, hooks and predictors that
fail, and the logging of each. Ordered by events and gates, not sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from critpath import StepStatus
from critpath._tasks import abandoned_tasks
from critpath.errors import (
    DeadlineExceeded,
    ScopeClosedError,
    StepFailedError,
    UnknownDependencyError,
)
from critpath.orchestrator import Graph, Limiter, RetryPolicy, StepContext
from critpath.orchestrator.events import SpeculationStarted, StepFinished, StepStarted
from critpath.orchestrator.speculation import Speculative, Speculator

TIMEOUT = 5.0


def _no_stray_tasks() -> None:
    me = asyncio.current_task()
    stray = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    assert stray == [], stray


async def test_a_graph_input_named_ctx_stays_an_input() -> None:
    g = Graph("g", inputs=["ctx"])

    @g.step
    def echo(ctx: str) -> str:
        return ctx.upper()

    assert (await g.run({"ctx": "hello"})).output == "HELLO"


async def test_the_context_comes_by_annotation_whatever_its_name() -> None:
    g = Graph("g", inputs=["q"])

    @g.step
    def echo(q: str, here: StepContext) -> str:
        return f"{q}:{here.step}"

    assert (await g.run({"q": "x"})).output == "x:echo"


def test_an_unannotated_ctx_parameter_is_an_unknown_input_with_a_hint() -> None:
    g = Graph("g", inputs=["q"])

    @g.step
    def echo(q: str, ctx) -> str:  # type: ignore[no-untyped-def]
        return q

    with pytest.raises(UnknownDependencyError, match="annotate the parameter StepContext"):
        g.validate()


async def test_a_step_that_swallows_cancellation_is_reported_stuck(
    caplog: pytest.LogCaptureFixture,
) -> None:
    g = Graph("g")
    swallowed = asyncio.Event()
    release = asyncio.Event()

    @g.step
    async def stubborn() -> int:
        while True:
            try:
                await release.wait()
                return 1
            except asyncio.CancelledError:
                swallowed.set()  # ignores it and keeps going

    loop = asyncio.get_running_loop()
    caplog.set_level(logging.WARNING, logger="critpath.runtime")
    t0 = loop.time()
    with pytest.raises(DeadlineExceeded) as info:
        await asyncio.wait_for(g.run(deadline=0.05, cancel_grace=0.1), TIMEOUT)
    took = loop.time() - t0
    assert swallowed.is_set()
    assert took < 1.0  # deadline + grace, not for ever
    report = info.value.report
    assert report is not None
    rec = report.step("stubborn")
    assert rec.status == StepStatus.STUCK
    assert rec.error is not None
    assert "StepStuckError" in rec.error
    assert any("stubborn" in r.getMessage() and "abandoned" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert len(abandoned_tasks()) == 1
    release.set()  # it ends on its own: nothing stays abandoned
    for _ in range(100):
        if not abandoned_tasks():
            break
        await asyncio.sleep(0)
    assert abandoned_tasks() == set()


async def test_a_slow_clean_up_is_bounded_by_the_grace_period() -> None:
    g = Graph("g")
    cleaned = asyncio.Event()

    @g.step
    async def slow_cleanup() -> int:
        try:
            await asyncio.Event().wait()
        finally:
            while not cleaned.is_set():  # a clean-up that takes its time
                with contextlib.suppress(asyncio.CancelledError):
                    await cleaned.wait()
        return 1

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(DeadlineExceeded) as info:
        await g.run(deadline=0.05, cancel_grace=0.05)
    assert loop.time() - t0 < 1.0
    assert info.value.report is not None
    assert info.value.report.step("slow_cleanup").status == StepStatus.STUCK
    cleaned.set()
    for _ in range(100):
        if not abandoned_tasks():
            break
        await asyncio.sleep(0)
    assert abandoned_tasks() == set()


async def test_speculator_refuses_work_once_its_block_has_ended() -> None:
    async def call() -> int:
        return 1

    spec = Speculator()
    with pytest.raises(ScopeClosedError):
        spec.start("early", call)
    async with spec as s:
        assert s.start("a", call)
        assert await s.commit("a", call) == 1
    with pytest.raises(ScopeClosedError):
        spec.start("late", call)
    with pytest.raises(ScopeClosedError):
        await spec.commit("late", call)
    _no_stray_tasks()


async def test_a_slot_freed_after_the_waiting_run_ended_goes_back() -> None:
    """Run B queues behind A's slot; B hits its deadline; A's slot must not start B's step."""
    limiter = Limiter(max_concurrency=1)
    gate = asyncio.Event()
    ga, gb = Graph("A"), Graph("B")
    started_b: list[str] = []

    @ga.step
    async def holder() -> int:
        await gate.wait()
        return 1

    @gb.step
    async def waiter() -> int:
        started_b.append("waiter")
        return 2

    ra = ga.start(limiter=limiter)
    await asyncio.sleep(0)
    with pytest.raises(DeadlineExceeded):
        await gb.run(limiter=limiter, deadline=0.01)
    gate.set()
    await asyncio.wait_for(ra, TIMEOUT)
    assert started_b == []
    stats = limiter.statistics()
    assert (stats["running"], stats["waiting"]) == (0, 0), stats


async def test_a_queued_speculation_cancelled_before_it_starts_gives_its_slot_back() -> None:
    g = Graph("g", inputs=["q"])
    decide = asyncio.Event()
    ran: list[str] = []

    @g.route(branches=["b", "c"], predict=lambda q: "b", resource="llm")
    async def r(q: str) -> str:
        await decide.wait()
        return "c"

    @g.step(speculative=True, resource="llm")
    async def b(q: str) -> str:
        ran.append("b")
        return "b"

    @g.step(resource="llm")
    async def c(q: str) -> str:
        ran.append("c")
        return "c"

    limiter = Limiter(resources={"llm": 1})
    run = g.start({"q": "x"}, limiter=limiter)
    async for e in run.events():
        if isinstance(e, SpeculationStarted):
            decide.set()  # b~spec is queued behind the router: cancel it there
    result = await run
    assert result.outputs["c"] == "c"
    assert ran == ["c"]
    assert result.report.step("b~spec").status == StepStatus.NOT_RUN
    stats = limiter.statistics()
    assert (stats["running"], stats["waiting"]) == (0, 0), stats


async def test_a_failing_commit_hook_fails_the_run() -> None:
    g = Graph("g", inputs=["q"])

    def commit(value: Any) -> None:
        raise RuntimeError("commit broke")

    @g.route(branches=["b"], predict=lambda q: "b")
    async def r(q: str) -> str:
        return "b"

    @g.step(speculative=Speculative(commit=commit))
    async def b(q: str) -> int:
        return 1

    run = g.start({"q": "x"})
    async for e in run.events():
        if isinstance(e, StepStarted) and e.step == "b~spec":
            break
    with pytest.raises(StepFailedError, match="commit broke"):
        await run
    _no_stray_tasks()


async def test_a_failing_undo_hook_fails_a_run_that_otherwise_ended_ok(
    caplog: pytest.LogCaptureFixture,
) -> None:
    g = Graph("g", inputs=["q"])
    started = asyncio.Event()

    async def undo(value: Any) -> None:
        raise RuntimeError("undo broke")

    @g.route(branches=["b", "c"], predict=lambda q: "b")
    async def r(q: str) -> str:
        await started.wait()
        return "c"

    @g.step(speculative=Speculative(undo=undo))
    async def b(q: str) -> int:
        started.set()
        await asyncio.Event().wait()
        return 1

    @g.step
    async def c(q: str) -> int:
        return 2

    caplog.set_level(logging.ERROR, logger="critpath.speculation")
    with pytest.raises(StepFailedError, match="undo broke"):
        await g.run({"q": "x"})
    assert any("hook" in r.getMessage() for r in caplog.records)
    _no_stray_tasks()


async def test_a_predictor_that_raises_is_logged_and_costs_only_the_speculation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    g = Graph("g", inputs=["q"])

    def predictor(q: str) -> str:
        return q.nonexistent  # type: ignore[attr-defined, no-any-return]  # a typo

    @g.route(branches=["b"], predict=predictor)
    async def r(q: str) -> str:
        return "b"

    @g.step(speculative=True)
    async def b(q: str) -> int:
        return 1

    caplog.set_level(logging.WARNING, logger="critpath.speculation")
    result = await g.run({"q": "x"})
    assert result.outputs["b"] == 1
    assert result.report.speculation is None or result.report.speculation["started"] == 0
    warned = [r for r in caplog.records if "predictor" in r.getMessage()]
    assert warned
    assert warned[0].exc_info is not None
    assert "nonexistent" in str(warned[0].exc_info[1])


async def test_retries_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    g = Graph("g")
    tries: list[int] = []

    @g.step(retry=RetryPolicy(attempts=3, initial=0.0, jitter=0.0))
    async def flaky() -> int:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("try again")
        return 7

    caplog.set_level(logging.INFO, logger="critpath.retry")
    assert (await g.run()).output == 7
    messages = [r.getMessage() for r in caplog.records if r.name == "critpath.retry"]
    assert len(messages) == 2
    assert "flaky" in messages[0]
    assert "ConnectionError" in messages[0]


def test_critpath_logs_nothing_by_default() -> None:
    root = logging.getLogger("critpath")
    assert any(isinstance(h, logging.NullHandler) for h in root.handlers)


async def test_records_say_what_released_them() -> None:
    """``released_by`` names the dependency that finished last; ``slot_from`` the step
    whose slot a queued step took, even when it is not a dependency."""
    g = Graph("g")
    gate_a = asyncio.Event()

    @g.step(resource="r")
    async def a() -> int:
        await gate_a.wait()
        return 1

    @g.step
    async def quick() -> int:
        return 0

    @g.step(resource="r")
    async def b(quick: int) -> int:  # ready early, waits for a's slot
        return quick + 1

    @g.step
    async def c(a: int, b: int) -> int:
        return a + b

    run = g.start(resources={"r": 1})
    async for e in run.events():
        if isinstance(e, StepFinished) and e.step == "quick":
            gate_a.set()
    report = (await run).report
    assert report.step("b").released_by == "quick"
    assert report.step("b").slot_from == "a"
    assert report.step("c").released_by == "b"
    assert report.step("a").released_by is None
    assert report.step("a").slot_from is None
