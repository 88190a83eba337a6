"""The observed path and the makespan's breakdown, on hand-built step reports."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from critpath import RunReport
from critpath.orchestrator.observed import (
    OTHER_RUN,
    ObservedPath,
    PathStep,
    Release,
    observed_path,
)
from critpath.orchestrator.report import StepReport


def rec(
    name: str,
    start: float | None,
    end: float | None,
    *,
    deps: tuple[str, ...] = (),
    ready: float | None = None,
    released_by: str | None = None,
    slot_from: str | None = None,
    resource: str | None = None,
    status: str = "ok",
    critical: bool = False,
    speculative: bool = False,
) -> StepReport:
    if ready is None and start is not None:
        ready = start
    return StepReport(
        name=name, step=name.split("[")[0].removesuffix("~spec"), kind="step",
        status=status, deps=list(deps), ready=ready, released_by=released_by,
        slot_from=slot_from, start=start, end=end, resource=resource, critical=critical,
        speculative=speculative,
        queued=None if start is None or ready is None else start - ready,
        duration=None if start is None or end is None else end - start,
    )  # fmt: skip


def walk(steps: list[StepReport], makespan: float, span: float = 0.0) -> ObservedPath:
    """The observed path, with the properties every path must have checked."""
    o = observed_path(steps, makespan, span)
    b = o.breakdown
    assert b.path_work + b.resource_wait + b.overhead == makespan  # exactly
    assert min(b.path_work, b.resource_wait) >= 0
    assert b.overhead >= -1e-12
    assert b.path_work == pytest.approx(sum(p.work for p in o.path))
    tail = makespan - (o.path[-1].end or makespan) if o.path else makespan
    assert b.overhead == pytest.approx(sum(p.gap for p in o.path) + tail if o.path else tail)
    for before, after in itertools.pairwise(o.path):
        assert after.by is not None or after.released is Release.RESOURCE
        if after.start is None:
            continue
        assert before.end is not None
        # consecutive records touch: the later starts when the earlier ends, after the
        # overhead and (a slot freed by no record on the path) the wait between them
        wait = after.wait if after.by != before.name else 0.0
        assert after.start == pytest.approx(before.end + after.gap + wait)
    return o


def names(o: ObservedPath) -> list[str]:
    return [p.name for p in o.path]


def released(o: ObservedPath) -> list[tuple[str, str | None]]:
    return [(p.released.value, p.by) for p in o.path]


def test_a_dependency_chain_with_overhead_between_steps() -> None:
    steps = [
        rec("a", 0.0, 1.0, ready=0.0),
        rec("b", 1.1, 2.0, deps=("a",), ready=1.0, released_by="a"),
        rec("c", 2.0, 3.3, deps=("b",), ready=2.0, released_by="b"),
    ]
    o = walk(steps, 3.5, span=3.2)
    assert names(o) == ["a", "b", "c"]
    assert released(o) == [("run start", None), ("dependency", "a"), ("dependency", "b")]
    assert [p.gap for p in o.path] == pytest.approx([0.0, 0.1, 0.0])
    b = o.breakdown
    assert b.path_work == pytest.approx(3.2)
    assert b.resource_wait == 0.0
    assert b.overhead == pytest.approx(0.3)  # 0.1 between a and b, 0.2 after c
    assert (b.makespan, b.span) == (3.5, 3.2)


def test_the_last_dependency_to_end_releases_a_join() -> None:
    steps = [
        rec("a", 0.0, 1.0),
        rec("long", 0.0, 4.0),
        rec("join", 4.0, 5.0, deps=("a", "long"), ready=4.0, released_by="long"),
    ]
    o = walk(steps, 5.0)
    assert names(o) == ["long", "join"]
    assert o.breakdown.path_work == 5.0


def test_a_slot_freed_by_a_non_dependency_puts_it_on_the_path() -> None:
    # x holds the only `r` slot; e is ready at 1 (after d) but starts when x ends.
    steps = [
        rec("x", 0.0, 10.0, resource="r"),
        rec("d", 0.0, 1.0),
        rec("e", 10.0, 11.0, deps=("d",), ready=1.0, released_by="d", slot_from="x",
            resource="r"),
    ]  # fmt: skip
    o = walk(steps, 11.0, span=10.0)
    assert names(o) == ["x", "e"]
    assert released(o)[1] == ("resource", "x")
    e = o.path[1]
    assert (e.wait, e.ready, e.resource) == (9.0, 1.0, "r")
    b = o.breakdown
    # the path: x runs alone until e is ready (1), then e waits for x's slot (9), runs (1)
    assert (b.path_work, b.resource_wait, b.overhead) == (2.0, 9.0, 0.0)
    assert [p.work for p in o.path] == [1.0, 1.0]


def test_a_slot_freed_by_another_run_is_a_wait_after_the_dependency() -> None:
    steps = [
        rec("d", 0.0, 1.0),
        rec("e", 4.0, 5.0, deps=("d",), ready=1.0, released_by="d", slot_from=OTHER_RUN,
            resource="r"),
    ]  # fmt: skip
    o = walk(steps, 5.0, span=2.0)
    assert names(o) == ["d", "e"]
    assert released(o) == [("run start", None), ("resource", OTHER_RUN)]
    assert o.path[1].wait == 3.0
    b = o.breakdown
    assert (b.path_work, b.resource_wait, b.overhead) == (2.0, 3.0, 0.0)


def demo_like(annotated: bool) -> list[StepReport]:
    """plan -> 3 searches -> hits -> 4 reads (two `small` slots) -> answer."""

    def a(**kw: Any) -> dict[str, Any]:
        return kw if annotated else {}

    s = ("s[0]", "s[1]", "s[2]")
    r = ("read[0]", "read[1]", "read[2]", "read[3]")
    return [
        rec("plan", 0.0, 1.0, resource="small"),
        rec("s[0]", 1.0, 9.0, deps=("plan",), **a(released_by="plan")),
        rec("s[1]", 1.0, 4.0, deps=("plan",), **a(released_by="plan")),
        rec("s[2]", 1.0, 6.0, deps=("plan",), **a(released_by="plan")),
        rec("hits", 9.0, 9.0, deps=s, **a(released_by="s[0]")),
        rec("read[0]", 9.0, 10.0, deps=("hits",), resource="small", **a(released_by="hits")),
        rec("read[1]", 9.0, 10.5, deps=("hits",), resource="small", critical=True,
            **a(released_by="hits")),
        rec("read[2]", 10.0, 12.0, deps=("hits",), ready=9.0, resource="small",
            **a(released_by="hits", slot_from="read[0]")),
        rec("read[3]", 10.5, 11.0, deps=("hits",), ready=9.0, resource="small",
            **a(released_by="hits", slot_from="read[1]")),
        rec("intent", 0.0, 2.0),
        rec("answer", 12.0, 15.0, deps=(*r, "intent"), **a(released_by="read[2]")),
    ]  # fmt: skip


@pytest.mark.parametrize("annotated", [True, False], ids=["recorded", "inferred"])
def test_map_items_waiting_for_slots(annotated: bool) -> None:
    o = walk(demo_like(annotated), 15.0, span=14.0)
    assert names(o) == ["plan", "s[0]", "hits", "read[0]", "read[2]", "answer"]
    assert released(o) == [
        ("run start", None),
        ("dependency", "plan"),
        ("dependency", "s[0]"),
        ("dependency", "hits"),
        ("resource", "read[0]"),
        ("dependency", "read[2]"),
    ]
    b = o.breakdown
    # read[0]'s run is under read[2]'s wait for its slot
    assert (b.path_work, b.resource_wait, b.overhead) == (14.0, 1.0, 0.0)
    assert o.path[3].work == 0.0


def test_a_committed_speculation_and_a_skipped_branch() -> None:
    steps = [
        rec("pick", 0.0, 1.0),
        rec("yes~spec", 0.0, 3.0, speculative=True),  # started before `pick` decided
        rec("no", None, None, deps=("pick",), status="skipped"),
        rec("out", 3.0, 4.0, deps=("yes~spec", "no"), released_by="yes~spec"),
    ]
    o = walk(steps, 4.0)
    assert names(o) == ["yes~spec", "out"]
    assert released(o) == [("run start", None), ("dependency", "yes~spec")]


def test_a_releaser_that_never_ran_stands_for_its_own_dependencies() -> None:
    steps = [
        rec("pick", 0.0, 2.0),
        rec("no", None, None, deps=("pick",), status="skipped"),
        rec("after", 2.0, 3.0, deps=("no",), ready=2.0, released_by="no"),
    ]
    o = walk(steps, 3.0)
    assert names(o) == ["pick", "after"]
    assert released(o)[1] == ("dependency", "pick")


def test_a_run_cut_off_by_its_deadline() -> None:
    # b was still running when the run ended (no end): it counts up to the run's end.
    steps = [
        rec("a", 0.0, 1.0),
        rec("b", 1.0, None, deps=("a",), released_by="a", status="stuck"),
        rec("c", 1.0, 2.0, deps=("a",), released_by="a", status="cancelled"),
        rec("d", None, None, deps=("b",), status="not_run"),
    ]
    o = walk(steps, 3.0)
    assert names(o) == ["a", "b"]
    assert o.path[-1].end == 3.0
    assert o.breakdown.path_work == 3.0


def test_a_run_that_ended_while_its_step_waited_for_a_slot() -> None:
    steps = [
        rec("a", 0.0, 1.0),
        rec("q", None, None, deps=("a",), ready=1.0, released_by="a", resource="r",
            status="not_run"),
    ]  # fmt: skip
    o = walk(steps, 3.0)
    assert names(o) == ["a", "q"]
    q = o.path[1]
    assert (q.start, q.end, q.released, q.wait) == (None, None, Release.RESOURCE, 2.0)
    b = o.breakdown
    assert (b.path_work, b.resource_wait, b.overhead) == (1.0, 2.0, 0.0)


def test_a_failure_decides_the_finish_over_steps_cancelled_by_it() -> None:
    steps = [
        rec("bad", 0.0, 1.0, status="failed"),
        rec("other", 0.0, 1.001, status="cancelled"),
    ]
    o = walk(steps, 1.002)
    assert names(o) == ["bad"]


def test_ties_prefer_the_critical_path_then_the_recorded_releaser() -> None:
    steps = [
        rec("a", 0.0, 2.0),
        rec("b", 0.0, 2.0, critical=True),
        rec("c", 2.0, 3.0, deps=("a", "b"), critical=True),
    ]
    assert names(walk(steps, 3.0)) == ["b", "c"]  # inferred: a tie goes to the critical one
    steps[2] = rec("c", 2.0, 3.0, deps=("a", "b"), released_by="a", critical=True)
    assert names(walk(steps, 3.0)) == ["a", "c"]  # recorded: the runtime knows
    # two records end last together: the critical one is the finish
    ends = [rec("x", 0.0, 1.0), rec("y", 0.5, 1.0, critical=True)]
    assert names(walk(ends, 1.0)) == ["y"]


def test_bad_releasers_cannot_loop_the_walk() -> None:
    steps = [
        rec("a", 0.0, 1.0, released_by="b"),
        rec("b", 1.0, 2.0, released_by="a"),
    ]
    assert names(walk(steps, 2.0)) == ["a", "b"]


def test_nothing_ran() -> None:
    o = walk([rec("s", None, None, status="skipped")], 0.25)
    assert o.path == []
    assert o.breakdown.overhead == 0.25


def test_the_breakdown_adds_up_to_the_last_bit() -> None:
    for makespan, end in [(0.1 + 0.2, 0.1), (2265.9e-3, 1452.8e-3), (1e-9, 3e-10)]:
        o = walk([rec("a", 0.0, end), rec("b", end, makespan * 0.7, deps=("a",))], makespan)
        b = o.breakdown
        assert b.path_work + b.resource_wait + b.overhead == makespan


def _old_report_json(tmp_path: Path) -> Path:
    steps = [s.model_dump(mode="json", exclude={"released_by", "slot_from"})
             for s in demo_like(annotated=False)]  # fmt: skip
    data = {
        "graph": "old", "run_id": "r0", "started_at": 0.0, "status": "ok",
        "makespan": 15.0, "work": 30.0, "span": 14.0, "critical_path": ["plan"],
        "parallelism": 2.0, "efficiency": 14 / 15, "predicted_span": 14.0, "steps": steps,
    }  # fmt: skip
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_a_report_saved_before_the_observed_path_loads_with_it(tmp_path: Path) -> None:
    report = RunReport.load_json(_old_report_json(tmp_path))
    assert [p.name for p in report.observed_path][-2:] == ["read[2]", "answer"]
    assert report.breakdown is not None
    assert report.breakdown.resource_wait == 1.0
    assert "observed path: plan -> s[0] -> hits -> read[0] -> read[2] -> answer" in str(report)
    again = RunReport.load_json(report.save_json(tmp_path / "new.json"))
    assert again == report


def test_path_steps_serialise_their_release_as_text() -> None:
    p = PathStep(name="x", start=0.0, end=1.0, released=Release.RUN_START)
    assert json.loads(p.model_dump_json())["released"] == "run start"
