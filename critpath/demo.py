"""``critpath demo``: an example agent graph with modelled durations, run twice.

The graph answers a question: it plans, searches three sources at once (a fan-out),
reads every hit (a map), routes the question to a quick or a thorough answer, and
writes the answer. Model calls share two slots of a simulated endpoint, so when more
steps are ready than may run, the one with least slack goes first. The first run
schedules with default estimates; the second with what the first measured.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

from critpath.orchestrator.graph import Graph
from critpath.orchestrator.runtime import RunResult

__all__ = ["build_demo_graph", "run_demo"]

# Modelled durations in seconds (a stand-in until the simulated fleet lands).
_SEARCH = {"web": 0.120, "docs": 0.050, "tickets": 0.080}
_DURATIONS = {
    "plan": 0.060,
    "read": 0.030,
    "classify": 0.040,
    "quick_answer": 0.080,
    "thorough_answer": 0.220,
    "answer": 0.050,
}


def build_demo_graph(*, seed: int = 7, scale: float = 1.0) -> Graph:
    """The demo graph; ``scale`` multiplies every modelled duration."""
    rng = random.Random(seed)
    g = Graph("support-agent", inputs=["question"], output="answer")

    async def work(seconds: float) -> None:
        await asyncio.sleep(seconds * scale * rng.uniform(0.9, 1.1))

    @g.step(resource="llm")
    async def plan(question: str) -> list[str]:
        await work(_DURATIONS["plan"])
        return ["web", "docs", "tickets"]

    @g.map(over="plan")
    async def search(source: str, question: str) -> list[str]:
        await work(_SEARCH[source])
        return [f"{source}:{i}" for i in range(2)]

    @g.step
    def hits(search: list[list[str]]) -> list[str]:
        return [h for group in search for h in group]

    @g.map(over="hits", resource="llm")
    async def read(hit: str) -> str:
        await work(_DURATIONS["read"])
        return f"summary of {hit}"

    @g.route(branches=["quick_answer", "thorough_answer"], resource="llm")
    async def classify(question: str) -> str:
        await work(_DURATIONS["classify"])
        return "thorough_answer" if "why" in question.lower() else "quick_answer"

    @g.step(resource="llm")
    async def quick_answer(question: str) -> str:
        await work(_DURATIONS["quick_answer"])
        return "short answer"

    @g.step(resource="llm")
    async def thorough_answer(question: str, read: list[str]) -> str:
        await work(_DURATIONS["thorough_answer"])
        return f"long answer citing {len(read)} sources"

    @g.step(resource="llm")
    async def answer(
        read: list[str], quick_answer: str | None = None, thorough_answer: str | None = None
    ) -> str:
        await work(_DURATIONS["answer"])
        return thorough_answer or quick_answer or "no answer"

    return g


async def run_demo(
    question: str = "Why does my deploy fail after the upgrade?",
    *,
    runs: int = 2,
    llm_slots: int = 2,
    scale: float = 1.0,
    timeline: Path | None = Path("critpath-demo-timeline.html"),
    report_json: Path | None = None,
) -> dict[str, Any]:
    """Run the demo graph ``runs`` times; return a JSON-able summary of each run."""
    graph = build_demo_graph(scale=scale)
    results: list[RunResult] = []
    for _ in range(runs):
        results.append(await graph.run({"question": question}, resources={"llm": llm_slots}))
    last = results[-1].report
    if timeline is not None:
        last.save_html(timeline)
    if report_json is not None:
        last.save_json(report_json)
    return {
        "graph": graph.name,
        "question": question,
        "answer": results[-1].output,
        "runs": [
            {
                "makespan_ms": r.report.makespan * 1000,
                "span_ms": r.report.span * 1000,
                "work_ms": r.report.work * 1000,
                "parallelism": r.report.parallelism,
                "efficiency": r.report.efficiency,
                "critical_path": r.report.critical_path,
            }
            for r in results
        ],
        "report": json.loads(last.model_dump_json()),
        "timeline": str(timeline) if timeline is not None else None,
    }
