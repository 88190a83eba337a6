"""The observed path of real runs (virtual time, so timings are exact): slots freed by a
step of the same run or of another run sharing the limiter, a deadline, and the demo."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from critpath import DeadlineExceeded, Graph, Limiter, RunReport
from critpath.adapters.sim.clock import run_virtual
from critpath.demo import DemoOptions, run_demo
from critpath.orchestrator.observed import OTHER_RUN, Release

TOL = 1e-6


def assert_path_touches(report: RunReport) -> None:
    """Each record on the observed path starts when the previous one ends, or when the
    resource wait on the path ends; with no overhead on virtual time, the path runs
    from the run's start to its end."""
    b = report.breakdown
    assert b is not None
    assert b.path_work + b.resource_wait + b.overhead == report.makespan
    assert b.overhead == pytest.approx(0.0, abs=TOL)
    path = report.observed_path
    assert path
    first = path[0]
    assert (first.ready if first.released is Release.RESOURCE else first.start) == (
        pytest.approx(0.0, abs=TOL)
    )
    assert path[-1].end == pytest.approx(report.makespan, abs=TOL)
    for before, after in itertools.pairwise(path):
        assert before.end is not None
        assert after.start is not None
        wait = after.wait if after.by != before.name else 0.0
        assert after.start == pytest.approx(before.end + wait, abs=TOL)


def slot_graph() -> Graph:
    """``x`` holds the only ``r`` slot; ``e`` is ready after ``d`` but must wait for ``x``."""
    g = Graph("slots", output="e")

    @g.step(resource="r")
    async def x() -> int:
        await asyncio.sleep(1.0)
        return 1

    @g.step
    async def d() -> int:
        await asyncio.sleep(0.1)
        return 2

    @g.step(resource="r")
    async def e(d: int) -> int:
        await asyncio.sleep(0.5)
        return d

    return g


def slot_report() -> RunReport:
    async def main() -> RunReport:
        return (await slot_graph().run(resources={"r": 1})).report

    return run_virtual(main())


def test_the_observed_path_goes_through_the_slot_that_released_a_step() -> None:
    report = slot_report()
    assert report.critical_path == ["x"]  # on dependencies alone, x decides
    assert [p.name for p in report.observed_path] == ["x", "e"]
    e = report.observed_path[1]
    assert (e.released, e.by, e.resource) == ("resource", "x", "r")
    assert e.wait == pytest.approx(0.9)
    assert report.step("e").queued == pytest.approx(0.9)
    # what the runtime recorded: d made e ready, x's end gave it the slot
    assert (report.step("e").released_by, report.step("e").slot_from) == ("d", "x")
    b = report.breakdown
    assert b is not None
    assert b.makespan == pytest.approx(1.5)
    assert b.span == pytest.approx(1.0)
    # x alone until e is ready (0.1), e waits for x's slot (0.9), then runs (0.5)
    assert b.path_work == pytest.approx(0.6)
    assert b.resource_wait == pytest.approx(0.9)
    assert_path_touches(report)
    text = report.to_text()
    assert "observed path: x -> e" in text
    assert "waited 900.0 ms for a slot of r, freed by x" in text
    assert "breakdown: makespan 1500.0 = path work 600.0 + resource wait 900.0" in text


async def test_on_the_real_clock_the_path_touches_within_the_loop_lag() -> None:
    g = Graph("slots-real", output="e")

    @g.step(resource="r")
    async def x() -> int:
        await asyncio.sleep(0.05)
        return 1

    @g.step
    async def d() -> int:
        await asyncio.sleep(0.005)  # ends first: its timer is due first
        return 2

    @g.step(resource="r")
    async def e(d: int) -> int:
        return d

    report = (await asyncio.wait_for(g.run(resources={"r": 1}), 5.0)).report
    assert [p.name for p in report.observed_path] == ["x", "e"]
    assert (report.step("e").released_by, report.step("e").slot_from) == ("d", "x")
    b = report.breakdown
    assert b is not None
    assert b.path_work + b.resource_wait + b.overhead == report.makespan
    holder, waiter = report.observed_path
    assert holder.end is not None
    assert waiter.start is not None
    lag = waiter.start - holder.end
    assert 0 <= lag < 0.25  # only the loop's lag: counted as overhead
    assert lag == pytest.approx(waiter.gap)
    assert b.resource_wait == pytest.approx(holder.end - report.step("e").ready, abs=1e-9)


def test_the_timeline_draws_the_observed_path_and_its_waits(tmp_path) -> None:
    report = slot_report()
    html = report.save_html(tmp_path / "slots.html").read_text(encoding="utf-8")
    assert html.count('class="bar"') == len(report.steps)
    assert html.count('class="path-wait"') == 1
    assert 'class="path-wait" data-step="e"' in html
    assert html.count('class="path-link"') == len(report.observed_path) - 1
    assert "e waited 900.0 ms for a slot of r, freed by x" in html
    assert "Observed path (what the finish waited on): x → e" in html
    assert "stroke-dasharray" in html  # the dependency critical path, distinguishable


def test_a_saved_report_keeps_its_observed_path(tmp_path) -> None:
    report = slot_report()
    loaded = RunReport.load_json(report.save_json(tmp_path / "slots.json"))
    assert loaded == report
    assert loaded.observed_path == report.observed_path


def holder_graph() -> Graph:
    g = Graph("holder")

    @g.step(resource="r")
    async def x() -> int:
        await asyncio.sleep(1.0)
        return 1

    return g


def waiter_graph() -> Graph:
    g = Graph("waiter", output="e")

    @g.step
    async def d() -> int:
        await asyncio.sleep(0.1)
        return 2

    @g.step(resource="r")
    async def e(d: int) -> int:
        await asyncio.sleep(0.5)
        return d

    return g


def test_a_slot_freed_by_another_run_stays_a_wait_on_the_path() -> None:
    async def main() -> RunReport:
        limiter = Limiter(resources={"r": 1})
        holder = holder_graph().start(limiter=limiter)
        await asyncio.sleep(0)  # the holder takes the slot first
        waiter = waiter_graph().start(limiter=limiter)
        await holder
        return (await waiter).report

    report = run_virtual(main())
    assert [p.name for p in report.observed_path] == ["d", "e"]
    e = report.observed_path[1]
    assert e.released is Release.RESOURCE
    assert report.step("e").slot_from == OTHER_RUN  # the runtime names who freed it
    assert e.by == OTHER_RUN
    assert e.wait == pytest.approx(0.9)
    b = report.breakdown
    assert b is not None
    assert (b.path_work, b.resource_wait) == (pytest.approx(0.6), pytest.approx(0.9))
    assert_path_touches(report)
    assert "waited 900.0 ms for a slot of r" in report.to_text()


def test_a_run_cut_off_by_its_deadline_ends_its_path_at_the_deadline() -> None:
    g = Graph("slow", output="b")

    @g.step
    async def a() -> int:
        await asyncio.sleep(0.2)
        return 1

    @g.step
    async def b(a: int) -> int:
        await asyncio.sleep(5.0)
        return a

    async def main() -> None:
        await g.run(deadline=1.0)

    with pytest.raises(DeadlineExceeded) as info:
        run_virtual(main())
    report = info.value.report
    assert report is not None
    assert report.status == "deadline"
    assert [p.name for p in report.observed_path] == ["a", "b"]
    assert report.step("b").status == "cancelled"
    assert_path_touches(report)


def test_the_demo_reports_an_observed_path_whose_steps_touch() -> None:
    opts = DemoOptions(questions=4, timeline=None, progress=False)
    result = run_virtual(run_demo(opts))
    agent = result["agent"]
    report = RunReport.model_validate(agent["report"])
    assert agent["observed_path"] == [p.name for p in report.observed_path]
    assert agent["observed_path"][0] == "hits"  # the research agent's loop
    tools = [s for s in report.step("hits").substeps if s.kind == "tool"]
    assert len(tools) == 3  # one real search call per source, started as it closed
    assert all(t.speculative for t in tools)
    assert agent["observed_path"][-1] == "answer"
    # reads wait for the two `small` slots: the path goes through a slot holder
    resource = [p for p in report.observed_path if p.released is Release.RESOURCE]
    assert resource
    assert all(p.by in agent["observed_path"] for p in resource)
    assert_path_touches(report)
    assert any(s.slot_from for s in report.steps)  # the runtime named the releasers
    ms = agent["breakdown_ms"]
    assert ms["makespan"] == agent["makespan_ms"]
    assert ms["span"] == agent["span_ms"]
    assert ms["path_work"] + ms["resource_wait"] + ms["overhead"] == pytest.approx(
        ms["makespan"], abs=0.2
    )
    assert ms["resource_wait"] > 0
