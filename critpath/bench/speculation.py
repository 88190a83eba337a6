"""``critpath bench speculation``: speculative branches and streamed pipelines.

Both run critpath graphs over simulated models (llmperf-calibrated profiles) in
**virtual time** (``VIRTUAL_TIME``): the real runtime schedules real tasks, every wait
is simulated, and the figures are simulated milliseconds.

**Router graph.** ``classify`` (a 70B-profile LLM that reasons briefly, then names the
department: ``--router-tokens``) routes each request to one of three branches
(``billing`` 60%, ``tech`` 30%, ``sales`` 10%), each a 70B-profile LLM answer of
``--branch-tokens``. A predictor guesses the branch at once: right with probability
``predict_accuracy``, else one of the other two (a stand-in for a small classifier;
draws are per request, the same in both arms). Off: the branch waits for the router.
On: the predicted branch starts with the router (``Speculation()`` defaults: top 1,
25% waste budget); a wrong guess is cancelled when the router decides. Every run of
both arms uses the same requests, request ids and latency draws (``draw_by="request"``).
``waste_fraction`` = seconds of cancelled speculative work / all work of the arm.

**Planner graph** (LLMCompiler-style). A 70B-profile planner streams a plan of 8 tool
calls, one line each (``--plan-tokens`` a line): six searches and two comparisons of
two searches each (as in LLMCompiler's ParallelQA: fan out, then combine). Tools take
``--tool-s`` median (log-normal, sigma 0.4, drawn per run and task). Four executions of
the same plan with the same draws: ``sequential`` (whole plan, then one tool after
another), ``react`` (ReAct: an LLM call writes each action, one plan line, then its
tool runs — the baseline LLMCompiler reports its speedups against), ``parallel``
(whole plan, then every tool as soon as its dependencies are done), ``streamed``
(``Graph.stream`` + ``Graph.each``: each tool as soon as its line has arrived and its
dependencies are done). ``critical_path``
is the lower bound for that plan stream: each task no earlier than its line's arrival
and its dependencies' ends. Medians over ``--plans`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
from collections.abc import AsyncIterator
from typing import Any

from critpath.adapters import complete, make_request
from critpath.adapters.sim import FunctionAnswers, SimulatedModel
from critpath.adapters.sim.answers import Answer
from critpath.estimates import percentile
from critpath.orchestrator import Graph, StepContext
from critpath.orchestrator.speculation import Speculation

__all__ = [
    "BRANCHES",
    "PLAN",
    "VIRTUAL_TIME",
    "add_arguments",
    "render",
    "router_graph",
    "run",
    "run_planner",
    "run_router",
]

VIRTUAL_TIME = True

BRANCHES = {"billing": 0.6, "tech": 0.3, "sales": 0.1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=400, help="router runs per setting")
    parser.add_argument("--accuracies", default="0.5,0.8,0.95")
    parser.add_argument("--router-tokens", type=int, default=40)
    parser.add_argument("--branch-tokens", type=int, default=40)
    parser.add_argument("--plans", type=int, default=50, help="planner runs")
    parser.add_argument("--plan-tokens", type=int, default=10, help="tokens per plan line")
    parser.add_argument("--tool-s", type=float, default=2.0, help="median tool latency")
    parser.add_argument("--seed", type=int, default=0)


# ---- router -----------------------------------------------------------------------------


def _truth(seed: int, i: int) -> str:
    r = random.Random(f"{seed}:truth:{i}").random()
    acc = 0.0
    for name, p in BRANCHES.items():
        acc += p
        if r < acc:
            return name
    return "sales"


def _guess(seed: int, i: int, accuracy: float) -> str:
    rng = random.Random(f"{seed}:guess:{i}")
    truth = _truth(seed, i)
    if rng.random() < accuracy:
        return truth
    return rng.choice([b for b in BRANCHES if b != truth])


def router_graph(args: argparse.Namespace, speculate: bool, accuracy: float) -> Graph:
    def model(name: str) -> SimulatedModel:
        return SimulatedModel(name, profile="70b", seed=args.seed, draw_by="request")

    router_model = model("router")
    branch_models = {b: model(b) for b in BRANCHES}
    g = Graph("support", inputs=["i"])

    def predict(i: int) -> str:
        return _guess(args.seed, i, accuracy)

    @g.route(
        branches=list(BRANCHES),
        predict=predict if speculate else None,
        speculation=Speculation() if speculate else None,
    )
    async def classify(i: int) -> str:
        req = make_request(prompt="Which department?", max_tokens=args.router_tokens,
                           request_id=f"{i}:router")  # fmt: skip
        await complete(router_model, req)
        return _truth(args.seed, i)

    def branch(name: str) -> None:
        async def answer(i: int) -> str:
            req = make_request(prompt=f"Answer as {name}", max_tokens=args.branch_tokens,
                               request_id=f"{i}:{name}")  # fmt: skip
            return (await complete(branch_models[name], req)).text

        answer.__name__ = name
        g.step(answer, speculative=True)

    for b in BRANCHES:
        branch(b)
    return g


async def run_router(args: argparse.Namespace, accuracy: float) -> dict[str, Any]:
    arms: dict[str, Any] = {}
    for arm in ("off", "on"):
        g = router_graph(args, arm == "on", accuracy)
        lat, work, waste = [], 0.0, 0.0
        tokens_wasted = 0
        counts = {"started": 0, "committed": 0, "cancelled": 0, "refused": 0}
        for i in range(args.runs):
            result = await g.run({"i": i})
            report = result.report
            lat.append(report.makespan)
            work += report.work
            spec = report.speculation or {}
            waste += float(spec.get("waste_s", 0.0))
            tokens_wasted += int(spec.get("waste_tokens", 0))
            for k in counts:
                counts[k] += int(spec.get(k, 0))
        arms[arm] = {"lat": lat, "work": work, "waste": waste, "tokens": tokens_wasted,
                     "counts": counts}  # fmt: skip
    off, on = arms["off"], arms["on"]
    p50_off, p50_on = percentile(off["lat"], 0.5), percentile(on["lat"], 0.5)
    return {
        "predict_accuracy": accuracy,
        "p50_ms_off": round(p50_off * 1000, 1),
        "p50_ms_on": round(p50_on * 1000, 1),
        "p50_cut": round(1 - p50_on / p50_off, 4),
        "p95_ms_off": round(percentile(off["lat"], 0.95) * 1000, 1),
        "p95_ms_on": round(percentile(on["lat"], 0.95) * 1000, 1),
        "mean_ms_off": round(statistics.fmean(off["lat"]) * 1000, 1),
        "mean_ms_on": round(statistics.fmean(on["lat"]) * 1000, 1),
        "waste_fraction": round(on["waste"] / on["work"], 4) if on["work"] else 0.0,
        "waste_tokens_per_run": round(on["tokens"] / args.runs, 2),
        **on["counts"],
    }


# ---- planner ----------------------------------------------------------------------------

PLAN = [
    ("1", "search", []), ("2", "search", []), ("3", "compare", ["1", "2"]),
    ("4", "search", []), ("5", "search", []), ("6", "compare", ["4", "5"]),
    ("7", "search", []), ("8", "search", []),
]  # fmt: skip


def _plan_text(tokens_per_line: int) -> str:
    lines = []
    for tid, tool, deps in PLAN:
        words = [f"{tid}.", f"{tool}(", *(["arg"] * max(0, tokens_per_line - 3)),
                 f")deps={','.join(deps) or '-'}"]  # fmt: skip
        lines.append(" ".join(words))
    return "\n ".join(lines) + "\n"


def _parse(line: str) -> dict[str, Any]:
    words = line.split()
    deps = words[-1].split("=", 1)[1]
    return {"id": words[0].rstrip("."), "tool": words[1].rstrip("("),
            "deps": [] if deps == "-" else deps.split(",")}  # fmt: skip


def _tool_s(args: argparse.Namespace, run: int, tid: str) -> float:
    median: float = args.tool_s
    return median * random.Random(f"{args.seed}:tool:{run}:{tid}").lognormvariate(0.0, 0.4)


async def _plan_lines(model: SimulatedModel, run: int, text_tokens: int) -> AsyncIterator[str]:
    req = make_request(prompt="Plan the tool calls.", max_tokens=4096, request_id=f"plan:{run}")
    buf = ""
    async for chunk in model.stream(req):
        buf += chunk.text
        while "\n" in buf:
            line, buf = buf.split("\n", 1)
            if line.strip():
                yield line


async def run_planner(args: argparse.Namespace, run: int) -> dict[str, float]:
    text = _plan_text(args.plan_tokens)
    n_tokens = len(text.split(" "))

    def planner_model() -> SimulatedModel:
        answers = FunctionAnswers(lambda _m, _r: Answer(text, n_tokens, None, 1.0))
        return SimulatedModel("planner", profile="70b", answers=answers, seed=args.seed,
                              draw_by="request")  # fmt: skip

    async def tool(task: dict[str, Any]) -> str:
        await asyncio.sleep(_tool_s(args, run, task["id"]))
        return f"{task['tool']}#{task['id']}"

    loop = asyncio.get_running_loop()

    # sequential: the whole plan, then one tool after another
    t0 = loop.time()
    tasks = [_parse(line) async for line in _plan_lines(planner_model(), run, n_tokens)]
    for task in tasks:
        await tool(task)
    sequential = loop.time() - t0

    # ReAct: an LLM call decides each action (one plan line), then its tool runs
    t0 = loop.time()
    thinker = planner_model()
    for k, task in enumerate(tasks):
        req = make_request(prompt=f"Thought {k}", max_tokens=args.plan_tokens,
                           request_id=f"react:{run}:{k}")  # fmt: skip
        await complete(thinker, req)
        await tool(task)
    react = loop.time() - t0

    def graph(streamed: bool) -> tuple[Graph, dict[str, float]]:
        arrivals: dict[str, float] = {}
        g = Graph("planner", inputs=["run"])
        model = planner_model()

        @g.stream
        async def plan(run: int) -> AsyncIterator[dict[str, Any]]:
            start = loop.time()
            if streamed:
                async for line in _plan_lines(model, run, n_tokens):
                    task = _parse(line)
                    arrivals[task["id"]] = loop.time() - start
                    yield task
            else:
                whole = [_parse(line) async for line in _plan_lines(model, run, n_tokens)]
                for task in whole:
                    arrivals[task["id"]] = loop.time() - start
                    yield task

        @g.each(over="plan", key=lambda t: t["id"], needs=lambda t: t["deps"])
        async def execute(task: dict[str, Any], ctx: StepContext) -> str:
            return await tool(task)

        return g, arrivals

    g_par, _ = graph(streamed=False)
    parallel = (await g_par.run({"run": run})).report.makespan
    g_str, arrivals = graph(streamed=True)
    streamed = (await g_str.run({"run": run})).report.makespan
    # The lower bound for this plan stream: arrival and dependencies, no waiting.
    finish: dict[str, float] = {}
    for tid, _tool, deps in PLAN:
        start = max([arrivals[tid], *(finish[d] for d in deps)])
        finish[tid] = start + _tool_s(args, run, tid)
    critical = max(finish.values())
    return {"sequential": sequential, "react": react, "parallel": parallel,
            "streamed": streamed, "critical_path": critical}  # fmt: skip


async def run(args: argparse.Namespace) -> dict[str, Any]:
    accuracies = [float(a) for a in args.accuracies.split(",") if a]
    speculation = [await run_router(args, a) for a in accuracies]
    plans = [await run_planner(args, i) for i in range(args.plans)]

    def med(key: str) -> float:
        return round(statistics.median(p[key] for p in plans) * 1000, 1)

    pipeline = {
        "sequential_ms": med("sequential"),
        "react_ms": med("react"),
        "parallel_ms": med("parallel"),
        "streamed_ms": med("streamed"),
        "critical_path_ms": med("critical_path"),
    }
    pipeline["speedup_vs_sequential"] = round(
        pipeline["sequential_ms"] / pipeline["streamed_ms"], 3
    )
    pipeline["speedup_vs_react"] = round(pipeline["react_ms"] / pipeline["streamed_ms"], 3)
    pipeline["streamed_over_critical_path"] = round(
        statistics.median(p["streamed"] / p["critical_path"] for p in plans), 4
    )
    return {
        "runs": args.runs,
        "plans": args.plans,
        "speculation": speculation,
        "pipeline": pipeline,
        "parameters": {
            "router_tokens": args.router_tokens,
            "branch_tokens": args.branch_tokens,
            "plan_tokens": args.plan_tokens,
            "tool_s": args.tool_s,
            "seed": args.seed,
            "branches": BRANCHES,
        },
    }


def render(result: dict[str, Any]) -> str:
    lines = [f"router graph, {result['runs']} runs per arm (simulated ms):",
             f"{'accuracy':>9} {'p50 off':>9} {'p50 on':>9} {'cut':>7} {'p95 off':>9} "
             f"{'p95 on':>9} {'waste':>7} {'cancelled':>10}"]  # fmt: skip
    for s in result["speculation"]:
        lines.append(
            f"{s['predict_accuracy']:>9.2f} {s['p50_ms_off']:>9.0f} {s['p50_ms_on']:>9.0f} "
            f"{s['p50_cut']:>7.1%} {s['p95_ms_off']:>9.0f} {s['p95_ms_on']:>9.0f} "
            f"{s['waste_fraction']:>7.1%} {s['cancelled']:>10}"
        )
    p = result["pipeline"]
    lines += [
        f"\nplanner graph, median of {result['plans']} plans (simulated ms):",
        f"sequential {p['sequential_ms']:.0f}  react {p['react_ms']:.0f}  "
        f"parallel {p['parallel_ms']:.0f}  "
        f"streamed {p['streamed_ms']:.0f}  critical path {p['critical_path_ms']:.0f}",
        f"streamed is {p['speedup_vs_sequential']:.2f}x faster than sequential, "
        f"{p['speedup_vs_react']:.2f}x faster than ReAct, "
        f"{p['streamed_over_critical_path']:.4f}x the critical path",
    ]
    return "\n".join(lines)
