"""Running the demo and printing it (see ``critpath.demo``)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from critpath.adapters.sim.clock import run_virtual
from critpath.bench.progress import Progress
from critpath.demo.agent import build_agent
from critpath.demo.table import compare, strategy_count
from critpath.demo.tiers import Tiers, real_tiers, simulated_tiers
from critpath.orchestrator.events import StepPartial
from critpath.strategies.evaluate import ROW_KEYS

__all__ = ["DemoOptions", "render", "run_demo", "run_demo_sync"]

_QUESTION = "Why does my deploy fail after the upgrade?"


@dataclass
class DemoOptions:
    """What ``critpath demo`` was asked to do."""

    questions: int | None = None
    base_url: str | None = None
    models: list[str] = field(default_factory=list)
    data: str | None = None
    timeline: Path | None = Path("critpath-demo-timeline.html")
    report_json: Path | None = None
    question: str = _QUESTION
    seed: int = 0
    progress: bool | None = None
    api_key_env: str | None = None


def _tiers(opts: DemoOptions) -> Tiers:
    if opts.base_url:
        n = opts.questions if opts.questions is not None else 20
        return real_tiers(opts.base_url, opts.models, n_questions=n,
                          seed=opts.seed, api_key_env=opts.api_key_env)  # fmt: skip
    if opts.models:
        raise ValueError("--model needs --base-url")
    return simulated_tiers(opts.questions if opts.questions is not None else 200, seed=opts.seed)


async def run_demo(opts: DemoOptions) -> dict[str, Any]:
    """The demo's results as a JSON-able dict (runs on the running event loop)."""
    tiers = _tiers(opts)
    try:
        out: dict[str, Any] = {
            "time": "simulated" if tiers.simulated else "real",
            "backend": opts.base_url or "embedded simulated fleet",
            "models": [m.name for m in tiers.models],
        }
        if opts.data is not None:
            out |= await _recorded_table(opts)
        else:
            n = len(tiers.questions) * strategy_count(tiers)
            bar = Progress(n, "strategies", enabled=opts.progress)
            try:
                out["strategies"] = await compare(tiers, lambda name: bar.advance(1, name))
            finally:
                bar.close()
            out["n_questions"] = len(tiers.questions)
            out["task"] = "synthetic multiple choice (critpath.adapters.sim.SyntheticTask)"
        out |= await _agent_run(tiers, opts)
        return out
    finally:
        await tiers.aclose()


async def _recorded_table(opts: DemoOptions) -> dict[str, Any]:
    from critpath.strategies import Replay, load_strategies
    from critpath.strategies.data import recorded_dir

    data = recorded_dir(opts.data)
    bar = Progress(1, "recorded answers", enabled=opts.progress)

    def progress(done: int, total: int, _label: str) -> None:
        bar.total = max(total, 1)
        bar.advance(done - bar.done)

    limit = opts.questions if opts.questions is not None else 1500
    replay = Replay(data, load_strategies(), limit=limit, seed=opts.seed, progress=progress)
    try:
        result = await replay.run()
    finally:
        bar.close()
    rows = [{k: r[k] for k in ("name", "kind", *ROW_KEYS)} for r in result["strategies"]]
    return {
        "strategies": rows,
        "n_questions": result["n_eval"],
        "task": str(data),
        "goals": result["goals"],
    }


async def _agent_run(tiers: Tiers, opts: DemoOptions) -> dict[str, Any]:
    graph = build_agent(tiers)
    run = graph.start({"question": opts.question}, resources={"small": 2})
    first_draft: float | None = None
    async for event in run.events():
        if isinstance(event, StepPartial) and event.step == "answer" and first_draft is None:
            first_draft = event.t
    result = await run
    report = result.report
    if opts.timeline is not None:
        report.save_html(opts.timeline)
    if opts.report_json is not None:
        report.save_json(opts.report_json)
    return {
        "agent": {
            "question": opts.question,
            "answer": result.output,
            "first_draft_ms": None if first_draft is None else round(first_draft * 1000, 1),
            "makespan_ms": round(report.makespan * 1000, 1),
            "span_ms": round(report.span * 1000, 1),
            "work_ms": round(report.work * 1000, 1),
            "parallelism": round(report.parallelism, 3),
            "critical_path": report.critical_path,
            "observed_path": [p.name for p in report.observed_path],  # details: report
            "breakdown_ms": {
                k: round(v * 1000, 1) for k, v in dict(report.breakdown or {}).items()
            },
            "report": json.loads(report.model_dump_json()),
            "report_text": report.to_text(),
        },
        "timeline": str(opts.timeline.resolve()) if opts.timeline is not None else None,
    }


def run_demo_sync(opts: DemoOptions) -> dict[str, Any]:
    """Run the demo: on virtual time for the simulated fleet, real time for a server."""
    if opts.base_url:
        return asyncio.run(run_demo(opts))
    return run_virtual(run_demo(opts))


def render(result: dict[str, Any]) -> str:
    unit = "simulated ms" if result["time"] == "simulated" else "ms"
    lines = [
        f"critpath demo — {result['backend']} ({result['time']} time)",
        f"task: {result['task']}, {result['n_questions']} questions",
        "",
        f"{'strategy':<34} {'accuracy':>8} {'p50':>8} {'p95':>8} {'TTFT p50':>9} "
        f"{'$ / 1k q':>9} {'calls':>6}   ({unit})",
    ]
    lines.append("-" * len(lines[-1]))
    for r in result["strategies"]:
        lat = r["latency_ms"]
        lines.append(
            f"{r['name'][:34]:<34} {r['accuracy']:>8.3f} {lat['p50']:>8.0f} {lat['p95']:>8.0f} "
            f"{r['ttft_ms']['p50']:>9.0f} {r['cost'] * 1000:>9.3f} {r['calls_per_query']:>6.2f}"
            + (f"  errors {r['errors']}" if r.get("errors") else "")
        )
    agent = result["agent"]
    lines += [
        "",
        f"agent run: {agent['question']!r}",
        f"answer: {str(agent['answer'])[:160]!r}",
        f"first draft token at {agent['first_draft_ms']} {unit}; "
        f"final at {agent['makespan_ms']} {unit}",
        "",
        agent["report_text"],
    ]
    if result.get("timeline"):
        lines.append(f"\ntimeline: {result['timeline']}")
    return "\n".join(lines)
