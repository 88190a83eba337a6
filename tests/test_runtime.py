"""The runtime: dependencies respected, no barrier, map, routing, failures, retries, events."""

from __future__ import annotations

import asyncio

import pytest

from critpath import (
    Graph,
    RetryPolicy,
    RouteError,
    RunError,
    StepContext,
    StepFailedError,
    current_step,
)
from critpath.orchestrator import (
    RouteChosen,
    RunEvent,
    RunFinished,
    StepFailed,
    StepFinished,
    StepPartial,
    StepSkipped,
    StepStarted,
)
from critpath.orchestrator.context import priority_of

TIMEOUT = 5.0


def started(events: list[RunEvent]) -> list[str]:
    return [e.step for e in events if isinstance(e, StepStarted)]


def index_of(events: list[RunEvent], kind: type[RunEvent], step: str) -> int:
    return next(i for i, e in enumerate(events) if isinstance(e, kind) and e.step == step)


async def collect(run) -> list[RunEvent]:
    return [ev async for ev in run.events()]


# ---- dependencies and scheduling ------------------------------------------------------


async def test_values_flow_along_dependencies() -> None:
    g = Graph("flow", inputs=["x"])

    @g.step
    async def double(x: int) -> int:
        return 2 * x

    @g.step
    def inc(x: int) -> int:  # sync steps are fine too
        return x + 1

    @g.step(deps={"left": "double", "right": "inc"})
    async def add(left: int, right: int) -> int:
        return left + right

    result = await g.run({"x": 5})
    assert result.status == "ok"
    assert result.output == 10 + 6
    assert result.outputs == {"double": 10, "inc": 6, "add": 16}


async def test_no_step_starts_before_its_inputs_are_ready() -> None:
    g = Graph("diamond", inputs=["n"])

    @g.step
    async def root(n: int) -> list[int]:
        await asyncio.sleep(0)
        return list(range(n))

    @g.step
    async def left(root: list[int]) -> int:
        for _ in range(3):
            await asyncio.sleep(0)
        return sum(root)

    @g.step
    async def right(root: list[int]) -> int:
        return len(root)

    @g.map(over="root")
    async def square(x: int) -> int:
        for _ in range(x):
            await asyncio.sleep(0)
        return x * x

    @g.step(after=["right"])
    async def join(left: int, square: list[int]) -> int:
        return left + sum(square)

    run = g.start({"n": 4})
    result = await asyncio.wait_for(run, TIMEOUT)
    assert result.output == 6 + (0 + 1 + 4 + 9)
    events = await collect(run)
    plan_preds = {"left": ["root"], "right": ["root"], "join": ["left", "right", "square"]}
    for step, deps in plan_preds.items():
        for dep in deps:
            if dep == "square":
                for i in range(4):
                    assert index_of(events, StepFinished, f"square[{i}]") < index_of(
                        events, StepStarted, step
                    )
            else:
                assert index_of(events, StepFinished, dep) < index_of(events, StepStarted, step)
    for i in range(4):
        assert index_of(events, StepFinished, "root") < index_of(
            events, StepStarted, f"square[{i}]"
        )


async def test_fast_chain_is_not_held_back_by_a_slow_branch() -> None:
    """Under a superstep barrier f2 would wait for ``slow``, which waits for f3: deadlock."""
    g = Graph("no-barrier")
    gate = asyncio.Event()

    @g.step
    async def slow() -> str:
        await gate.wait()
        return "slow"

    @g.step
    async def f1() -> int:
        return 1

    @g.step
    async def f2(f1: int) -> int:
        return f1 + 1

    @g.step
    async def f3(f2: int) -> int:
        return f2 + 1

    @g.step
    async def end(slow: str, f3: int) -> str:
        return f"{slow}{f3}"

    async def drive() -> tuple[str, list[RunEvent]]:
        run = g.start()
        seen: list[RunEvent] = []
        async for ev in run.events():
            seen.append(ev)
            if isinstance(ev, StepFinished) and ev.step == "f3":
                gate.set()
        return (await run).output, seen

    output, events = await asyncio.wait_for(drive(), TIMEOUT)
    assert output == "slow3"
    # the whole fast chain finished while slow was still running
    assert index_of(events, StepFinished, "f3") < index_of(events, StepFinished, "slow")
    assert index_of(events, StepStarted, "slow") < index_of(events, StepStarted, "f2")


async def test_priority_reflects_predicted_slack() -> None:
    g = Graph("prio")
    seen: dict[str, StepContext] = {}

    @g.step(estimate=2.0)
    async def long(ctx: StepContext) -> None:
        seen["long"] = ctx

    @g.step(estimate=1.0)
    async def short(ctx: StepContext) -> None:
        seen["short"] = ctx
        assert current_step() is ctx

    run = g.start()
    await run
    # Same run, same due time (the predicted finish, 2 s after the start): the step
    # on the critical path has offset 0, short may start 1.0 s later (100 x 10 ms).
    assert seen["long"].priority == priority_of(run.started_at + 2.0, 0.0)
    assert seen["long"].slack <= 0.05
    assert seen["short"].priority - seen["long"].priority == 100
    assert 0.5 < seen["short"].slack <= 1.0
    assert run.predicted_span == pytest.approx(2.0)
    ev = next(e for e in await collect(run) if isinstance(e, StepStarted) and e.step == "short")
    assert ev.priority == seen["short"].priority
    assert current_step() is None


async def test_output_selection() -> None:
    def build(output: str | None) -> Graph:
        g = Graph("sinks", output=output)

        @g.step
        async def a() -> int:
            return 1

        @g.step
        async def b(a: int) -> int:
            return a + 1

        @g.step
        async def c(a: int) -> int:
            return a + 2

        return g

    assert (await build(None).run()).output == {"b": 2, "c": 3}
    assert (await build("a").run()).output == 1


async def test_changing_output_after_a_run_takes_effect() -> None:
    g = Graph("late-output")

    @g.step
    async def a() -> int:
        return 1

    @g.step
    async def b(a: int) -> int:
        return a + 1

    assert (await g.run()).output == 2
    g.output = "a"
    assert (await g.run()).output == 1


async def test_report_is_only_available_once_finished() -> None:
    g = Graph()
    gate = asyncio.Event()

    @g.step
    async def a() -> int:
        await gate.wait()
        return 1

    run = g.start()
    with pytest.raises(RunError):
        run.report()
    gate.set()
    result = await run
    assert result.report is run.report()
    assert run.done()


# ---- map ------------------------------------------------------------------------------


async def test_map_results_are_in_item_order() -> None:
    g = Graph("map", inputs=["items"])
    done: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(4)}
    finish_order: list[int] = []

    @g.map(over="items")
    async def work(x: int) -> str:
        if x + 1 in done:  # item i finishes only after item i+1: reverse completion
            await done[x + 1].wait()
        finish_order.append(x)
        done[x].set()
        return f"r{x}"

    @g.step
    async def gather(work: list[str]) -> str:
        return ",".join(work)

    result = await asyncio.wait_for(g.run({"items": [0, 1, 2, 3]}), TIMEOUT)
    assert finish_order == [3, 2, 1, 0]
    assert result.outputs["work"] == ["r0", "r1", "r2", "r3"]
    assert result.output == "r0,r1,r2,r3"
    names = [s.name for s in result.report.steps if s.step == "work"]
    assert names == ["work[0]", "work[1]", "work[2]", "work[3]"]
    assert [result.report.step(n).item for n in names] == [0, 1, 2, 3]


async def test_map_items_receive_context_and_other_params() -> None:
    g = Graph("map-ctx", inputs=["xs", "k"])

    @g.map(over="xs")
    async def mul(x: int, k: int, ctx: StepContext) -> tuple[str, int]:
        return ctx.name, x * k

    result = await g.run({"xs": [1, 2], "k": 10})
    assert result.output == [("mul[0]", 10), ("mul[1]", 20)]


async def test_map_over_empty_list() -> None:
    g = Graph("empty-map", inputs=["items"])
    calls: list[int] = []

    @g.map(over="items")
    async def work(x: int) -> int:
        calls.append(x)
        return x

    @g.step
    async def total(work: list[int]) -> tuple[int, list[int]]:
        return len(work), work

    result = await asyncio.wait_for(g.run({"items": []}), TIMEOUT)
    assert calls == []
    assert result.outputs["work"] == []
    assert result.output == (0, [])
    assert result.report.step("work").status == "ok"


async def test_map_over_non_iterable_fails_the_run() -> None:
    g = Graph("bad-map", inputs=["items"])

    @g.map(over="items")
    async def work(x: int) -> int:
        return x

    with pytest.raises(StepFailedError) as info:
        await asyncio.wait_for(g.run({"items": 7}), TIMEOUT)
    assert info.value.step == "work"
    assert isinstance(info.value.__cause__, TypeError)


# ---- routing --------------------------------------------------------------------------


def routed_graph(choice: object) -> tuple[Graph, list[str]]:
    g = Graph("route", inputs=["q"])
    ran: list[str] = []

    @g.route(branches=["easy", "hard"])
    def classify(q: str) -> object:
        return choice

    @g.step
    async def easy(q: str) -> str:
        ran.append("easy")
        return "E"

    @g.step
    async def hard(q: str) -> str:
        ran.append("hard")
        return "H"

    @g.step
    async def polish(hard: str) -> str:  # requires hard: skipped with it
        ran.append("polish")
        return hard.lower()

    @g.step
    async def answer(easy: str = "-", hard: str = "-") -> str:
        ran.append("answer")
        return easy + hard

    g.output = "answer"
    return g, ran


async def test_route_runs_the_chosen_branch_and_skips_the_rest() -> None:
    g, ran = routed_graph("easy")
    run = g.start({"q": "x"})
    result = await asyncio.wait_for(run, TIMEOUT)
    assert result.output == "E-"  # hard was skipped: answer got its default
    assert sorted(ran) == ["answer", "easy"]
    report = result.report
    assert report.step("hard").status == "skipped"
    assert report.step("polish").status == "skipped"
    assert report.step("easy").status == "ok"
    assert report.step("answer").status == "ok"
    assert "hard" not in result.outputs
    assert "polish" not in result.outputs
    events = await collect(run)
    assert {e.step for e in events if isinstance(e, StepSkipped)} == {"hard", "polish"}
    chosen = [e for e in events if isinstance(e, RouteChosen)]
    assert [(e.step, e.branches) for e in chosen] == [("classify", ("easy",))]


async def test_route_to_a_list_of_branches() -> None:
    g, ran = routed_graph(["easy", "hard"])
    result = await asyncio.wait_for(g.run({"q": "x"}), TIMEOUT)
    assert result.output == "EH"
    assert sorted(ran) == ["answer", "easy", "hard", "polish"]
    assert not [s for s in result.report.steps if s.status == "skipped"]


async def test_route_none_skips_every_branch() -> None:
    g, ran = routed_graph(None)
    result = await asyncio.wait_for(g.run({"q": "x"}), TIMEOUT)
    assert result.output == "--"
    assert ran == ["answer"]
    for name in ("easy", "hard", "polish"):
        assert result.report.step(name).status == "skipped"


async def test_route_to_unknown_branch_is_a_route_error() -> None:
    g, ran = routed_graph("medium")
    with pytest.raises(RouteError) as info:
        await asyncio.wait_for(g.run({"q": "x"}), TIMEOUT)
    assert info.value.step == "classify"
    assert info.value.chosen == "medium"
    assert info.value.report is not None
    assert info.value.report.status == "failed"
    assert ran == []


# ---- failures, retries, fallbacks -----------------------------------------------------


async def test_failing_step_fails_the_run_and_cancels_the_others() -> None:
    g = Graph("fail")
    slow_started = asyncio.Event()
    slow_cancelled = asyncio.Event()

    @g.step
    async def slow() -> int:
        slow_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            slow_cancelled.set()
            raise
        return 0

    @g.step
    async def boom() -> int:
        await slow_started.wait()
        raise ValueError("kaput")

    @g.step
    async def after(boom: int, slow: int) -> int:
        return boom + slow

    before = asyncio.all_tasks()
    run = g.start()
    with pytest.raises(StepFailedError) as info:
        await asyncio.wait_for(run, TIMEOUT)
    err = info.value
    assert err.step == "boom"
    assert "boom" in str(err)
    assert "kaput" in str(err)
    assert isinstance(err.__cause__, ValueError)
    assert err.error is err.__cause__
    assert slow_cancelled.is_set()
    report = err.report
    assert report is not None
    assert report.status == "failed"
    assert report.step("boom").status == "failed"
    assert "ValueError" in (report.step("boom").error or "")
    assert report.step("slow").status == "cancelled"
    assert report.step("after").status == "not_run"
    assert asyncio.all_tasks() - before == set()
    events = await collect(run)
    assert any(isinstance(e, StepFailed) and e.step == "boom" for e in events)


async def test_step_ended_by_a_foreign_cancellation_does_not_hang_the_run() -> None:
    """A step whose own await raises CancelledError (the run did not cancel it) must end
    the run with an error, as any other step failure does, instead of leaving it hanging."""
    g = Graph("foreign-cancel")

    @g.step
    async def victim() -> int:
        fut = asyncio.get_running_loop().create_future()
        fut.cancel()  # cancelled by someone else, e.g. a library's internal task
        await fut
        return 1

    @g.step
    async def after(victim: int) -> int:
        return victim

    # a hang shows up as the TimeoutError of wait_for (which also cleans the run up)
    with pytest.raises(RunError):
        await asyncio.wait_for(g.run(), 2.0)


async def test_retry_succeeds_on_the_third_attempt() -> None:
    g = Graph("retry")
    attempts: list[int] = []

    @g.step(retry=RetryPolicy(attempts=3, initial=0, maximum=0, jitter=0))
    async def flaky(ctx: StepContext) -> str:
        attempts.append(ctx.attempt)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    result = await asyncio.wait_for(g.run(), TIMEOUT)
    assert result.output == "ok"
    assert attempts == [1, 2, 3]
    assert result.report.step("flaky").attempts == 3
    assert result.report.step("flaky").status == "ok"


async def test_retry_gives_up_after_its_attempts() -> None:
    g = Graph("retry-out")
    calls = 0

    @g.step(retry=RetryPolicy(attempts=2, initial=0, maximum=0, jitter=0))
    def always() -> str:
        nonlocal calls
        calls += 1
        raise ConnectionError(f"fail {calls}")

    with pytest.raises(StepFailedError) as info:
        await asyncio.wait_for(g.run(), TIMEOUT)
    assert calls == 2
    assert str(info.value.__cause__) == "fail 2"  # the last error, unchanged
    assert info.value.report is not None
    assert info.value.report.step("always").attempts == 2


async def test_retry_only_on_listed_exceptions() -> None:
    g = Graph("retry-on")
    calls = 0

    @g.step(retry=RetryPolicy(attempts=5, initial=0, maximum=0, jitter=0, retry_on=(OSError,)))
    async def picky() -> str:
        nonlocal calls
        calls += 1
        raise KeyError("not retryable")

    with pytest.raises(StepFailedError):
        await asyncio.wait_for(g.run(), TIMEOUT)
    assert calls == 1


async def test_fallback_value_after_failure() -> None:
    g = Graph("fallback")

    @g.step(fallback="default")
    async def risky() -> str:
        raise RuntimeError("nope")

    @g.step
    async def use(risky: str) -> str:
        return risky.upper()

    run = g.start()
    result = await asyncio.wait_for(run, TIMEOUT)
    assert result.output == "DEFAULT"
    rep = result.report.step("risky")
    assert rep.status == "fallback"
    assert "nope" in (rep.error or "")
    finished = next(
        e for e in await collect(run) if isinstance(e, StepFinished) and e.step == "risky"
    )
    assert finished.fallback is True
    assert finished.value == "default"


async def test_fallback_fn_receives_the_error() -> None:
    g = Graph("fallback-fn")

    @g.step(fallback_fn=lambda exc: f"recovered from {type(exc).__name__}")
    async def risky() -> str:
        raise TimeoutError

    result = await asyncio.wait_for(g.run(), TIMEOUT)
    assert result.output == "recovered from TimeoutError"
    assert result.report.step("risky").status == "fallback"


async def test_fallback_after_retries() -> None:
    g = Graph("retry-fallback")
    calls = 0

    @g.step(retry=RetryPolicy(attempts=3, initial=0, maximum=0, jitter=0), fallback=-1)
    async def risky() -> int:
        nonlocal calls
        calls += 1
        raise OSError

    result = await asyncio.wait_for(g.run(), TIMEOUT)
    assert (result.output, calls) == (-1, 3)
    assert result.report.step("risky").attempts == 3


async def test_failing_fallback_fn_fails_the_run() -> None:
    g = Graph("bad-fallback")

    def fb(exc: BaseException) -> int:
        raise LookupError("fallback broke")

    @g.step(fallback_fn=fb)
    async def risky() -> int:
        raise OSError

    with pytest.raises(StepFailedError) as info:
        await asyncio.wait_for(g.run(), TIMEOUT)
    assert isinstance(info.value.__cause__, LookupError)


# ---- events ---------------------------------------------------------------------------


async def test_event_stream_live_and_replayed() -> None:
    g = Graph("events", inputs=["text"])

    @g.step
    async def tokens(text: str, ctx: StepContext) -> str:
        for word in text.split():
            ctx.emit(word)
            await asyncio.sleep(0)
        return text

    @g.step
    async def shout(tokens: str) -> str:
        return tokens.upper()

    run = g.start({"text": "a b c"})
    live = await asyncio.wait_for(collect(run), TIMEOUT)
    result = await run
    assert result.output == "A B C"
    kinds = [type(e) for e in live]
    assert StepStarted in kinds
    assert StepFinished in kinds
    assert isinstance(live[-1], RunFinished)
    assert live[-1].status == "ok"
    partials = [e for e in live if isinstance(e, StepPartial)]
    assert [(e.step, e.value, e.best) for e in partials] == [
        ("tokens", "a", False),
        ("tokens", "b", False),
        ("tokens", "c", False),
    ]
    assert index_of(live, StepStarted, "tokens") < live.index(partials[0])
    assert live.index(partials[-1]) < index_of(live, StepFinished, "tokens")
    finished = live[index_of(live, StepFinished, "shout")]
    assert finished.value == "A B C"
    times = [e.t for e in live]
    assert times == sorted(times)
    # a subscriber that arrives after the end gets the same events replayed
    assert await collect(run) == live


async def test_two_live_subscribers_see_the_same_events() -> None:
    g = Graph("two-subs")
    gate = asyncio.Event()

    @g.step
    async def a() -> int:
        await gate.wait()
        return 1

    @g.step
    async def b(a: int) -> int:
        return a + 1

    run = g.start()
    first = asyncio.create_task(collect(run))
    second = asyncio.create_task(collect(run))
    await asyncio.sleep(0)
    gate.set()
    one, two = await asyncio.wait_for(asyncio.gather(first, second), TIMEOUT)
    await run
    assert one == two
    assert started(one) == ["a", "b"]
