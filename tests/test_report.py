"""Run reports: invariants on a real run, text, JSON and HTML."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from critpath import Graph, RunReport, StepContext

TIMEOUT = 5.0


def sample_graph() -> Graph:
    g = Graph("sample", inputs=["q"])

    @g.step
    async def fetch(q: str) -> list[str]:
        await asyncio.sleep(0.02)
        return [q, q + q]

    @g.map(over="fetch")
    async def read(doc: str) -> int:
        await asyncio.sleep(0.005)
        return len(doc)

    @g.step
    async def side(q: str) -> str:
        return q

    @g.step(resource="llm")
    async def answer(read: list[int], side: str, ctx: StepContext) -> str:
        await asyncio.sleep(0.01)
        return f"{side}:{sum(read)}"

    return g


@pytest.fixture
async def report() -> RunReport:
    result = await asyncio.wait_for(sample_graph().run({"q": "ab"}), TIMEOUT)
    assert result.output == "ab:6"
    return result.report


def test_report_invariants(report: RunReport) -> None:
    durations = [s.duration for s in report.steps]
    assert all(d is not None and d >= 0 for d in durations)
    assert report.work == pytest.approx(sum(d for d in durations if d is not None))
    assert 0 < report.span <= report.makespan + 1e-9
    assert report.efficiency == pytest.approx(report.span / report.makespan)
    assert 0 < report.efficiency <= 1.0
    assert report.parallelism == pytest.approx(report.work / report.span)
    assert report.status == "ok"
    assert {s.name for s in report.steps} == {"fetch", "read[0]", "read[1]", "side", "answer"}
    for s in report.steps:
        assert s.status == "ok"
        assert s.start is not None
        assert s.end is not None
        assert s.ready is not None
        assert s.ready <= s.start <= s.end <= report.makespan
        assert s.queued == pytest.approx(s.start - s.ready)


def test_critical_path_is_a_dependency_chain_with_zero_slack(report: RunReport) -> None:
    path = report.critical_path
    assert path[0] == "fetch"
    assert path[-1] == "answer"
    assert path[1] in {"read[0]", "read[1]"}
    for before, after in itertools.pairwise(path):
        assert before in report.step(after).deps
    assert not report.step(path[0]).deps  # starts at a root
    for name in path:
        assert report.step(name).critical
        assert report.step(name).slack == pytest.approx(0.0, abs=1e-9)
    assert sum(report.step(n).duration or 0 for n in path) == pytest.approx(report.span)
    assert not report.step("side").critical
    assert report.step("side").slack > 0
    # every step's slack fits in the span
    for s in report.steps:
        assert s.slack is not None
        assert 0 <= s.slack <= report.span + 1e-9


def test_deps_are_recorded_per_unit(report: RunReport) -> None:
    assert report.step("read[0]").deps == ["fetch"]
    assert sorted(report.step("answer").deps) == ["read[0]", "read[1]", "side"]
    assert report.step("answer").resource == "llm"
    assert report.step("read[1]").item == 1
    assert report.step("read[1]").step == "read"
    with pytest.raises(KeyError):
        report.step("nope")


def test_to_text_names_the_critical_path(report: RunReport) -> None:
    text = report.to_text()
    assert str(report) == text
    assert "critical path: " + " -> ".join(report.critical_path) in text
    assert report.run_id in text
    for s in report.steps:
        assert s.name in text


def test_json_round_trip(report: RunReport, tmp_path) -> None:
    path = report.save_json(tmp_path / "run.json")
    assert path.exists()
    loaded = RunReport.load_json(path)
    assert loaded == report
    assert loaded.critical_path == report.critical_path
    assert loaded.step("answer").duration == report.step("answer").duration


def test_save_html_draws_a_timeline(report: RunReport, tmp_path) -> None:
    path = report.save_html(tmp_path / "run.html")
    html = path.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "<svg" in html
    assert "</svg>" in html
    for s in report.steps:
        assert s.name in html
    assert html.count('class="bar"') == len(report.steps)
    svg = report.to_svg()
    assert svg.startswith("<svg")
    assert svg.rstrip().endswith("</svg>")


async def test_html_escapes_step_names(tmp_path) -> None:
    g = Graph("escape")

    async def f() -> int:
        return 1

    g.step(name="a<b&c")(f)
    result = await g.run()
    html = result.report.save_html(tmp_path / "x.html").read_text(encoding="utf-8")
    assert "a&lt;b&amp;c" in html
    assert "a<b&c" not in html


async def test_report_of_skipped_and_failed_steps(tmp_path) -> None:
    g = Graph("mixed")

    @g.route(branches=["yes", "no"])
    def pick() -> str:
        return "yes"

    @g.step
    async def yes() -> int:
        return 1

    @g.step
    async def no() -> int:
        return 2

    @g.step(fallback=0)
    async def shaky() -> int:
        raise ValueError("shaky")

    result = await g.run()
    report = result.report
    skipped = report.step("no")
    assert skipped.status == "skipped"
    assert (skipped.start, skipped.duration, skipped.slack) == (None, None, None)
    assert not skipped.critical
    assert "no" not in report.critical_path
    assert report.step("shaky").status == "fallback"
    assert report.step("shaky").slack is not None
    assert "skipped" in report.to_text()
    loaded = RunReport.load_json(report.save_json(tmp_path / "r.json"))
    assert loaded == report
    assert math.isfinite(loaded.efficiency)
