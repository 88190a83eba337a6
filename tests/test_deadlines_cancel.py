"""Cancellation and deadlines: nothing outlives its run; partial results beat errors."""

from __future__ import annotations

import asyncio

import pytest

import critpath
from critpath import (
    ConfigError,
    DeadlineExceeded,
    Graph,
    RetryPolicy,
    RunCancelled,
    StepContext,
    StepFailedError,
)
from critpath.orchestrator import RunFinished, StepCancelled, StepPartial

TIMEOUT = 5.0


def blocked_graph() -> tuple[Graph, asyncio.Event, list[str]]:
    """``fast`` finishes; ``stuck`` waits forever and records that it was cancelled."""
    g = Graph("blocked")
    started = asyncio.Event()
    log: list[str] = []

    @g.step
    async def fast() -> int:
        return 42

    @g.step
    async def stuck(fast: int) -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            log.append("stuck cancelled")
            raise
        return fast

    return g, started, log


def alive(before: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() - before if not t.done()}


# ---- cancellation ---------------------------------------------------------------------


async def test_run_cancel_raises_run_cancelled_and_leaves_no_task() -> None:
    g, started, log = blocked_graph()
    before = asyncio.all_tasks()
    run = g.start()
    await asyncio.wait_for(started.wait(), TIMEOUT)
    run.cancel()
    with pytest.raises(RunCancelled) as info:
        await asyncio.wait_for(run, TIMEOUT)
    assert log == ["stuck cancelled"]
    assert alive(before) == set()
    assert run.status == "cancelled"
    report = info.value.report
    assert report is not None
    assert report.status == "cancelled"
    assert report.step("fast").status == "ok"
    assert report.step("stuck").status == "cancelled"
    events = [e async for e in run.events()]
    assert any(isinstance(e, StepCancelled) and e.step == "stuck" for e in events)
    assert isinstance(events[-1], RunFinished)
    assert events[-1].status == "cancelled"


async def test_cancel_before_anything_ran() -> None:
    g, _, log = blocked_graph()
    before = asyncio.all_tasks()
    run = g.start()
    run.cancel()
    with pytest.raises(RunCancelled):
        await asyncio.wait_for(run, TIMEOUT)
    assert alive(before) == set()
    assert log == []


async def test_cancel_after_the_end_changes_nothing() -> None:
    g = Graph()

    @g.step
    async def a() -> int:
        return 1

    run = g.start()
    result = await run
    run.cancel()
    assert (await run).output == result.output == 1
    assert run.status == "ok"


async def test_cancelling_the_awaiting_task_propagates_cancelled_error() -> None:
    g, started, log = blocked_graph()
    before = asyncio.all_tasks()
    owner = asyncio.create_task(g.run())
    await asyncio.wait_for(started.wait(), TIMEOUT)
    owner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner
    assert owner.cancelled()
    assert log == ["stuck cancelled"]
    assert alive(before) == set()


async def test_async_with_exiting_early_cancels_the_run() -> None:
    g, started, log = blocked_graph()
    before = asyncio.all_tasks()
    async with g.start() as run:
        await asyncio.wait_for(started.wait(), TIMEOUT)
    assert run.done()
    assert run.status == "cancelled"
    assert log == ["stuck cancelled"]
    assert alive(before) == set()
    with pytest.raises(RunCancelled):
        await run


async def test_async_with_body_error_propagates_after_cleanup() -> None:
    g, started, log = blocked_graph()
    before = asyncio.all_tasks()

    async def body() -> None:
        async with g.start():
            await asyncio.wait_for(started.wait(), TIMEOUT)
            raise KeyError("from the body")

    with pytest.raises(KeyError, match="from the body"):
        await body()
    assert log == ["stuck cancelled"]
    assert alive(before) == set()


async def test_async_with_awaiting_inside_the_block() -> None:
    g = Graph()

    @g.step
    async def a() -> int:
        return 7

    async with g.start() as run:
        result = await run
    assert result.output == 7
    assert run.status == "ok"


# ---- run deadlines --------------------------------------------------------------------


async def test_deadline_exceeded_carries_report_and_partial_outputs() -> None:
    g, _started, log = blocked_graph()
    before = asyncio.all_tasks()
    with pytest.raises(DeadlineExceeded) as info:
        await asyncio.wait_for(g.run(deadline=0.05), TIMEOUT)
    err = info.value
    assert isinstance(err, TimeoutError)
    assert err.deadline_s == pytest.approx(0.05)
    assert err.partial_outputs == {"fast": 42}
    assert err.report is not None
    assert err.report.status == "deadline"
    assert err.report.step("stuck").status == "cancelled"
    assert err.report.makespan >= 0.04
    assert log == ["stuck cancelled"]
    assert alive(before) == set()


async def test_set_partial_turns_a_deadline_into_a_partial_result() -> None:
    g = Graph("partial")

    @g.step
    async def draft(ctx: StepContext) -> str:
        ctx.set_partial("rough answer")
        await asyncio.Event().wait()
        return "polished answer"

    run = g.start(deadline=0.05)
    result = await asyncio.wait_for(run, TIMEOUT)
    assert result.status == "partial"
    assert result.output == "rough answer"
    assert result.outputs == {"draft": "rough answer"}
    assert result.report.status == "partial"
    assert result.report.step("draft").status == "cancelled"
    partials = [e async for e in run.events() if isinstance(e, StepPartial)]
    assert [(e.step, e.value, e.best) for e in partials] == [("draft", "rough answer", True)]


async def test_partial_of_one_output_is_not_enough() -> None:
    g = Graph("half")

    @g.step
    async def one(ctx: StepContext) -> str:
        ctx.set_partial("p1")
        await asyncio.Event().wait()
        return "1"

    @g.step
    async def two() -> str:
        await asyncio.Event().wait()
        return "2"

    with pytest.raises(DeadlineExceeded) as info:
        await asyncio.wait_for(g.run(deadline=0.05), TIMEOUT)
    assert info.value.partial_outputs == {"one": "p1"}


async def test_steps_see_the_budget_shrink() -> None:
    g = Graph("budget")
    seen: list[tuple[float | None, float | None]] = []

    @g.step
    async def look(ctx: StepContext) -> None:
        seen.append((ctx.remaining(), critpath.remaining()))
        await asyncio.sleep(0.01)
        seen.append((ctx.remaining(), critpath.remaining()))

    await asyncio.wait_for(g.run(deadline=5.0), TIMEOUT)
    (a_ctx, a_mod), (b_ctx, b_mod) = seen
    assert a_ctx is not None
    assert a_mod is not None
    assert b_ctx is not None
    assert b_mod is not None
    assert 0 < b_ctx < a_ctx <= 5.0
    assert 0 < b_mod < a_mod <= 5.0
    assert a_ctx == pytest.approx(a_mod, abs=0.01)


async def test_no_deadline_means_no_budget() -> None:
    g = Graph("unbounded")
    seen: list[object] = []

    @g.step
    async def look(ctx: StepContext) -> None:
        seen.extend([ctx.remaining(), critpath.remaining(), ctx.deadline])

    await g.run()
    assert seen == [None, None, None]
    assert critpath.remaining() is None


async def test_outer_deadline_scope_bounds_the_run() -> None:
    g = Graph("outer")
    seen: list[float | None] = []

    @g.step
    async def look(ctx: StepContext) -> None:
        seen.extend([ctx.remaining(), critpath.remaining()])

    async with critpath.deadline(2.0):
        await g.run(deadline=100.0)  # cannot loosen the outer 2 s
    assert all(r is not None and 0 < r <= 2.0 for r in seen), seen


async def test_outer_deadline_scope_stops_a_stuck_run() -> None:
    g, _, log = blocked_graph()
    before = asyncio.all_tasks()
    with pytest.raises(TimeoutError):
        async with critpath.deadline(0.05):
            await g.run()
    assert log == ["stuck cancelled"]
    assert alive(before) == set()


async def test_deadline_inside_a_step_tightens_only() -> None:
    g = Graph("inner")
    seen: list[float | None] = []

    @g.step
    async def look() -> str:
        async with critpath.deadline(100.0):
            seen.append(critpath.remaining())  # still bounded by the run's 1 s
        try:
            async with critpath.deadline(0.01):
                await asyncio.Event().wait()
        except TimeoutError:
            return "inner timeout"
        return "unreachable"

    result = await asyncio.wait_for(g.run(deadline=1.0), TIMEOUT)
    assert result.output == "inner timeout"
    assert seen[0] is not None
    assert 0 < seen[0] <= 1.0


async def test_retry_does_not_sleep_past_the_deadline() -> None:
    g = Graph("retry-deadline")
    calls = 0

    @g.step(retry=RetryPolicy(attempts=5, initial=30, maximum=30, jitter=0))
    async def flaky() -> int:
        nonlocal calls
        calls += 1
        raise OSError("down")

    # the 30 s back-off would outlive the 1 s budget: give up at once with the real error
    with pytest.raises(StepFailedError) as info:
        await asyncio.wait_for(g.run(deadline=1.0), TIMEOUT)
    assert calls == 1
    assert isinstance(info.value.__cause__, OSError)


# ---- deadline scopes on their own ----------------------------------------------------


async def test_nested_deadline_scopes_tighten_only() -> None:
    loop = asyncio.get_running_loop()
    assert critpath.remaining() is None
    async with critpath.deadline(10.0) as outer:
        assert outer is not None
        async with critpath.deadline(100.0) as looser:
            assert looser == outer
            left = critpath.remaining()
            assert left is not None
            assert 0 < left <= 10.0
        async with critpath.deadline(1.0) as tighter:
            assert tighter is not None
            assert tighter < outer
            left = critpath.remaining()
            assert left is not None
            assert 0 < left <= 1.0
        async with critpath.deadline(None) as same:
            assert same == outer
        left = critpath.remaining()
        assert left is not None
        assert 1.0 < left <= 10.0
        assert outer - loop.time() == pytest.approx(left, abs=0.05)
    assert critpath.remaining() is None


async def test_deadline_scope_times_out() -> None:
    with pytest.raises(TimeoutError):
        async with critpath.deadline(0.01):
            await asyncio.Event().wait()
    assert critpath.remaining() is None


async def test_bad_deadlines() -> None:
    with pytest.raises(ConfigError):
        async with critpath.deadline(-1):
            pass
    with pytest.raises(ConfigError):
        async with critpath.deadline(float("nan")):
            pass
    g = Graph()

    @g.step
    async def a() -> int:
        return 1

    with pytest.raises(ConfigError):
        g.start(deadline=-0.5)
