"""``critpath bench priority``: critical-path priority vs FIFO on a contended server.

Many concurrent agent graphs — a fan-out of four LLM calls of unequal lengths, a join,
then a final LLM call — share one simulated model server that decodes at most
``--slots`` sequences at once and queues the rest by request priority (as vLLM's
``--scheduling-policy priority`` does). Graphs arrive as a Poisson process at
``--rate`` per second, the same arrivals (same seed) for both arms, one run:

- ``fifo``: every request has priority 0, so the server serves them in arrival order;
- ``critpath``: every request carries its step's critical-path priority (its slack in
  milliseconds: the fan-out call that heads the critical path and the steps of late
  graphs go first).

Both arms use the same graph, whose step estimates are learned in a warm-up first.
Reported: graph makespans (arrival to answer) p50/p99 for each arm.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

from critpath import Graph, StepContext
from critpath.adapters import complete, make_request
from critpath.adapters.sim import Answer, FunctionAnswers, SimulatedModel
from critpath.adapters.sim.profiles import PROFILES

__all__ = ["FANOUT", "FINAL", "add_arguments", "build_graph", "render", "run"]

FANOUT = {"search": 20, "lookup": 40, "analyse": 80, "draft": 160}  # output tokens
FINAL = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--graphs", type=int, default=120, help="graphs per arm")
    parser.add_argument("--rate", type=float, default=4.0, help="graph arrivals per second")
    parser.add_argument("--slots", type=int, default=4, help="sequences the server decodes at once")
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=7)


def _answers() -> FunctionAnswers:
    def fn(model: str, request: Any) -> Answer:
        n = request.max_tokens
        return Answer(" ".join(["tok"] * n), n, None, 1.0)

    return FunctionAnswers(fn)


def build_graph(server: SimulatedModel, use_priority: list[bool]) -> Graph:
    """The agent graph; ``use_priority[0]`` switches between the two arms."""
    g = Graph("agent", inputs=["question"], output="final")

    async def call(ctx: StepContext, tokens: int, question: str) -> str:
        priority = None if use_priority[0] else 0  # None: the step's critical-path priority
        req = make_request(messages=question, max_tokens=tokens, priority=priority)
        return (await complete(server, req)).text

    def fan_out(tokens: int) -> Any:
        async def fan(question: str, ctx: StepContext) -> str:
            return await call(ctx, tokens, question)

        return fan

    for name, tokens in FANOUT.items():
        g.step(fan_out(tokens), name=name)

    @g.step
    def join(search: str, lookup: str, analyse: str, draft: str) -> str:
        return " ".join((search[:10], lookup[:10], analyse[:10], draft[:10]))

    @g.step
    async def final(join: str, ctx: StepContext) -> str:
        return await call(ctx, FINAL, join)

    return g


async def _arm(graph: Graph, arrivals: list[float]) -> list[float]:
    makespans: list[float] = []

    async def one(i: int, at: float, t0: float) -> None:
        await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
        start = time.perf_counter()
        await graph.run({"question": f"question {i}"}, run_id=f"g{i}")
        makespans.append(time.perf_counter() - start)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for i, at in enumerate(arrivals):
            tg.create_task(one(i, at, t0))
    return makespans


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    profile = PROFILES["7b"].with_(max_num_seqs=args.slots)
    server = SimulatedModel(
        "server", profile=profile, answers=_answers(), seed=args.seed, time_scale=args.time_scale
    )
    use_priority = [False]
    graph = build_graph(server, use_priority)
    for i in range(5):  # warm-up on an idle server: learn each step's duration
        await graph.run({"question": f"warm-up {i}"})
    idle = [graph.estimates.predict(n) * 1000 for n in (*FANOUT, "final")]
    rng = random.Random(args.seed)
    arrivals, t = [], 0.0
    for _ in range(args.graphs):
        t += rng.expovariate(args.rate)
        arrivals.append(t)
    out: dict[str, Any] = {
        "graphs": args.graphs, "rate_per_s": args.rate, "slots": args.slots,
        "time_scale": args.time_scale, "seed": args.seed,
        "calls": {**FANOUT, "final": FINAL},
    }  # fmt: skip
    for arm, flag in (("fifo", False), ("critpath", True)):
        use_priority[0] = flag
        spans = [m * 1000 for m in await _arm(graph, arrivals)]
        out[f"{arm}_p50_ms"] = statistics.median(spans)
        out[f"{arm}_p99_ms"] = _pct(spans, 0.99)
        out[f"{arm}_mean_ms"] = statistics.fmean(spans)
    out["p50_reduction"] = 1 - out["critpath_p50_ms"] / out["fifo_p50_ms"]
    out["p99_reduction"] = 1 - out["critpath_p99_ms"] / out["fifo_p99_ms"]
    out["idle_critical_path_ms"] = max(idle[:4]) + idle[4]
    return out


def render(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"{r['graphs']} graphs at {r['rate_per_s']}/s on a server with {r['slots']} slots "
            f"(idle critical path {r['idle_critical_path_ms']:.0f} ms)",
            f"FIFO:     p50 {r['fifo_p50_ms']:.0f} ms, p99 {r['fifo_p99_ms']:.0f} ms",
            f"critpath: p50 {r['critpath_p50_ms']:.0f} ms, p99 {r['critpath_p99_ms']:.0f} ms",
            f"reduction: p50 {r['p50_reduction']:.0%}, p99 {r['p99_reduction']:.0%}",
        ]
    )
