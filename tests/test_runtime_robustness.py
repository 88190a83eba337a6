"""Runs end cleanly whatever their steps do: deadlines reached through a model call,
iterables that raise, decorated async steps, owners that leave early."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from fault_server import FaultServer, stall_before_first_token

import critpath
from critpath import DeadlineExceeded, Graph, RunCancelled, StepContext, StepFailedError
from critpath.adapters import OpenAICompatible, Timeouts, complete, make_request
from critpath.orchestrator.events import RunFinished

TIMEOUT = 30.0


async def test_model_timeout_at_the_run_deadline_is_the_deadline(fault_server: FaultServer) -> None:
    fault_server.scenario = stall_before_first_token()
    model = OpenAICompatible(
        fault_server.base_url, "m", retry=None, timeouts=Timeouts(first_token=10)
    )
    g = Graph("deadline-via-model", output="ask")

    @g.step
    async def ask(ctx: StepContext) -> str:
        ctx.set_partial("draft answer")
        return (await complete(model, make_request(messages="hi", max_tokens=5))).text

    result = await asyncio.wait_for(g.run(deadline=0.3), TIMEOUT)
    await model.aclose()
    assert result.status == "partial"
    assert result.output == "draft answer"
    assert result.report.step("ask").status == "cancelled"

    g2 = Graph("deadline-via-model-no-partial")

    @g2.step(fallback="fallback")
    async def ask2() -> str:
        async with OpenAICompatible(fault_server.base_url, "m", retry=None) as m:
            return (await complete(m, make_request(messages="hi", max_tokens=5))).text

    with pytest.raises(DeadlineExceeded):  # the deadline, not the fallback of a failure
        await asyncio.wait_for(g2.run(deadline=0.3), TIMEOUT)


def _raising() -> Iterator[int]:
    yield 1
    raise ValueError("boom while iterating")


@pytest.mark.parametrize("root", [True, False])
async def test_an_iterable_that_raises_fails_the_map_step(root: bool) -> None:
    g = Graph("bad-iterable", inputs=["items"] if root else [])
    if not root:

        @g.step
        def items() -> Any:
            return _raising()

    @g.map(over="items")
    async def each(item: int) -> int:
        return item

    run = g.start({"items": _raising()} if root else {})
    with pytest.raises(StepFailedError) as info:
        await asyncio.wait_for(run, TIMEOUT)
    assert info.value.step == "each"
    assert isinstance(info.value.__cause__, ValueError)
    assert run.report().step("each").status == "failed"
    events = [e async for e in run.events()]  # the stream ends: the run is finished
    assert isinstance(events[-1], RunFinished)


def passthrough(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Awaitable[Any]:  # sync, returns the coroutine
        return fn(*args, **kwargs)

    return wrapper


async def test_a_sync_decorator_around_an_async_step_is_awaited() -> None:
    g = Graph("decorated")

    @g.step
    @passthrough
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert (await asyncio.wait_for(g.run(), TIMEOUT)).output == 42


async def test_async_with_waits_for_the_run_even_if_the_owner_is_cancelled_twice() -> None:
    g = Graph("slow-cleanup")
    cleaned = asyncio.Event()
    started = asyncio.Event()

    @g.step
    async def slow() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(asyncio.sleep(0.2))  # takes a while to clean up
            cleaned.set()

    holder: dict[str, Any] = {}

    async def owner() -> None:
        async with g.start() as run:
            holder["run"] = run
            await started.wait()
            await asyncio.Event().wait()

    task = asyncio.create_task(owner())
    await asyncio.wait_for(started.wait(), TIMEOUT)
    task.cancel()
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert holder["run"].done()  # the block did not exit before the run ended
    assert cleaned.is_set()


async def test_async_with_raises_the_runs_error() -> None:
    g = Graph("fails")

    @g.step
    async def bad() -> None:
        raise KeyError("nope")

    async def watch_only() -> None:
        async with g.start() as run:
            async for _ in run.events():
                pass

    with pytest.raises(StepFailedError):
        await watch_only()
    # leaving early cancels the run, and that cancellation is not an error
    g2 = Graph("left-early")

    @g2.step
    async def forever() -> None:
        await asyncio.Event().wait()

    async with g2.start() as run2:
        pass
    with pytest.raises(RunCancelled):
        await run2


class _BrokenProbe:
    """A replica whose load probe has a bug (raises something not a ModelError)."""

    name = "broken"

    def stream(self, request: Any) -> Any:  # pragma: no cover - never called here
        raise NotImplementedError

    async def load(self) -> Any:
        raise RuntimeError("probe bug")


async def test_pool_watch_reports_a_probe_bug_without_masking_the_block() -> None:
    from critpath.adapters import Pool

    pool = Pool([_BrokenProbe()])  # type: ignore[list-item]

    async def until_probed() -> None:
        async with asyncio.timeout(TIMEOUT):
            while pool.statistics().load_errors < 1:  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.005)

    async def watch_only() -> None:
        async with pool.watch(interval=0.01):
            await until_probed()

    async def watch_and_fail() -> None:
        async with pool.watch(interval=0.01):
            await until_probed()
            raise KeyError("the body's own error")

    with pytest.raises(RuntimeError, match="probe bug"):  # raised at the end, unwrapped
        await watch_only()
    with pytest.raises(KeyError):  # the block's own error is not replaced
        await watch_and_fail()


async def test_a_run_inside_a_deadline_scope_can_still_end_partial() -> None:
    g = Graph("scoped", output="slow")

    @g.step
    async def slow(ctx: StepContext) -> str:
        ctx.set_partial("best so far")
        await asyncio.Event().wait()
        return "never"

    async with critpath.deadline(0.2):
        result = await g.run()  # ends on its own clock, just before the scope
    assert result.status == "partial"
    assert result.output == "best so far"
