"""``critpath bench runtime``: scheduling overhead, efficiency, and the superstep barrier.

Three measurements, in one process, one run:

1. ``overhead_us_per_step``: wall time of a whole run of a ~1,000-step DAG of no-op
   async steps, divided by its step count (median over repetitions, after one warm-up
   run). The same DAG is built in LangGraph (``StateGraph``, a join edge where a step
   has several parents) and timed the same way.
2. ``efficiency_random_dags``: random DAGs whose steps sleep for known durations, so the
   critical path is known exactly; efficiency = critical path / measured makespan.
   Steps sleep with ``precise_sleep`` (asyncio.sleep oversleeps by up to 1 ms, which
   is the timer's error, not the scheduler's); the same DAGs with plain
   ``asyncio.sleep`` are reported beside it, and ``efficiency_measured_span`` divides
   the span of the measured step durations by the makespan.
3. ``barrier_dag``: a slow step beside a chain of fast steps, then a join. Under
   supersteps the chain waits for the slow step at every level; as-soon-as-ready it
   does not.

LangGraph is a peer, not a dependency: when it is not installed (or with
``--no-langgraph``) its side is reported as skipped (``"langgraph": {"skipped": ...}``)
and critpath's figures are measured alone.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from critpath import Graph
from critpath.bench import peers
from critpath.errors import ConfigError
from critpath.orchestrator.analysis import analyse

__all__ = [
    "VIRTUAL_TIME",
    "add_arguments",
    "barrier_dag",
    "critpath_graph",
    "langgraph_app",
    "layered_dag",
    "precise_sleep",
    "random_dag",
    "render",
    "run",
]

VIRTUAL_TIME = False  # real time: this measures the runtime's own overhead

Preds = dict[str, list[str]]


def layered_dag(layers: int, width: int, seed: int) -> Preds:
    """``layers`` x ``width`` steps; each depends on 1-3 random steps of the layer above."""
    rng = random.Random(seed)
    names = [[f"s{layer}_{i}" for i in range(width)] for layer in range(layers)]
    preds: Preds = {}
    for layer in range(layers):
        for n in names[layer]:
            preds[n] = [] if layer == 0 else rng.sample(names[layer - 1], rng.randint(1, 3))
    return preds


def random_dag(n: int, seed: int) -> tuple[Preds, dict[str, float]]:
    """``n`` steps, each depending on up to 3 of the 6 steps before it; 20-80 ms each."""
    rng = random.Random(seed)
    preds: Preds = {}
    durations: dict[str, float] = {}
    for i in range(n):
        name = f"t{i}"
        window = [f"t{j}" for j in range(max(0, i - 6), i)]
        preds[name] = rng.sample(window, min(len(window), rng.randint(0, 3)))
        durations[name] = rng.uniform(0.020, 0.080)
    return preds, durations


def barrier_dag(
    chain: int, fast: float, slow: float, join: float
) -> tuple[Preds, dict[str, float]]:
    preds: Preds = {"slow": []}
    durations = {"slow": slow}
    prev: str | None = None
    for i in range(chain):
        name = f"fast{i}"
        preds[name] = [prev] if prev else []
        durations[name] = fast
        prev = name
    preds["join"] = ["slow", prev] if prev else ["slow"]
    durations["join"] = join
    return preds, durations


# ---- critpath -------------------------------------------------------------------------


def critpath_graph(
    preds: Preds, durations: dict[str, float] | None = None, *, precise: bool = False
) -> Graph:
    g = Graph("bench")
    for name, ps in preds.items():
        d = (durations or {}).get(name, 0.0)
        g.step(_sleeper(d, precise), name=name, after=ps)
    return g.validate()


async def precise_sleep(seconds: float) -> None:
    """Sleep ``seconds`` to within a few microseconds.

    ``asyncio.sleep`` wakes up to ~1 ms late (epoll's timeout is in whole
    milliseconds), so a chain of sleeping steps runs longer than its nominal critical
    path whatever the scheduler does. This sleeps to 1.5 ms short of the target, then
    yields to the event loop (letting every other step run) until the target passes.
    """
    end = time.perf_counter() + seconds
    if seconds > 0.0015:
        await asyncio.sleep(seconds - 0.0015)
    while time.perf_counter() < end:  # noqa: ASYNC110 - a timed spin, not a wait for an event
        await asyncio.sleep(0)


def _sleeper(seconds: float, precise: bool) -> Callable[[], Awaitable[None]]:
    if seconds <= 0:

        async def noop() -> None:
            return None

        return noop

    async def sleep() -> None:
        await (precise_sleep(seconds) if precise else asyncio.sleep(seconds))

    return sleep


# ---- LangGraph ------------------------------------------------------------------------


def langgraph_app(
    preds: Preds, durations: dict[str, float] | None = None, *, precise: bool = False
) -> Any:
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict, total=False):
        unused: int

    def node(seconds: float) -> Callable[[State], Awaitable[None]]:
        async def run(state: State) -> None:
            if seconds > 0:
                await (precise_sleep(seconds) if precise else asyncio.sleep(seconds))

        return run

    g = StateGraph(State)
    has_child = {p for ps in preds.values() for p in ps}
    for name in preds:
        g.add_node(name, cast(Any, node((durations or {}).get(name, 0.0))))
    for name, ps in preds.items():
        if not ps:
            g.add_edge(START, name)
        elif len(ps) == 1:
            g.add_edge(ps[0], name)
        else:
            g.add_edge(list(ps), name)  # waits for every parent
        if name not in has_child:
            g.add_edge(name, END)
    return g.compile()


async def _time(fn: Callable[[], Awaitable[Any]]) -> float:
    gc.collect()
    t = time.perf_counter()
    await fn()
    return time.perf_counter() - t


# ---- the benchmark ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1000, help="no-op DAG size (~)")
    parser.add_argument("--reps", type=int, default=21, help="critpath repetitions")
    parser.add_argument("--langgraph-reps", type=int, default=7)
    parser.add_argument("--dags", type=int, default=20, help="random DAGs for efficiency (>= 1)")
    parser.add_argument("--dag-steps", type=int, default=30)
    parser.add_argument("--no-langgraph", action="store_true", help="skip the LangGraph side")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dags < 1 or args.reps < 1 or args.steps < 1 or args.dag_steps < 1:
        raise ConfigError("--dags, --reps, --steps and --dag-steps must be >= 1")
    width = 40
    preds = layered_dag(max(1, args.steps // width), width, args.seed)
    n = len(preds)
    result: dict[str, Any] = {"steps": n, "python": _python()}

    # Interleaved rounds (critpath runs, then a LangGraph run), so that both sides see the
    # same machine conditions; one warm-up run each first.
    if args.no_langgraph:
        result["langgraph"] = peers.skipped("--no-langgraph")
    elif not peers.installed("langgraph"):
        result["langgraph"] = peers.skipped(peers.NOT_INSTALLED)
    else:
        result["langgraph"] = {"version": peers.version("langgraph")}
    use_lg = "skipped" not in result["langgraph"]
    g = critpath_graph(preds)
    await g.run()
    cfg = {"recursion_limit": 100_000}
    lg_call: Callable[[], Awaitable[Any]] | None = None
    if use_lg:
        lg_call = functools.partial(langgraph_app(preds).ainvoke, {}, cfg)
        await lg_call()
    rounds = max(args.langgraph_reps, 1) if use_lg else 1
    per_round = max(1, -(-args.reps // rounds))
    cp_times: list[float] = []
    lg_times: list[float] = []
    for _ in range(rounds):
        cp_times += [await _time(g.run) for _ in range(per_round)]
        if lg_call is not None:
            lg_times.append(await _time(lg_call))
    result["overhead_us_per_step"] = statistics.median(cp_times) / n * 1e6
    result["runs"] = {"critpath": len(cp_times), "langgraph": len(lg_times)}
    if lg_times:
        lg = statistics.median(lg_times) / n * 1e6
        result["langgraph_overhead_us_per_step"] = lg
        result["overhead_ratio_vs_langgraph"] = lg / result["overhead_us_per_step"]

    effs: dict[bool, list[float]] = {True: [], False: []}
    effs_measured: list[float] = []
    cps: list[float] = []
    for i in range(args.dags):
        dag, durations = random_dag(args.dag_steps, args.seed * 1000 + i)
        cp = analyse(dag, durations).span
        cps.append(cp)
        for precise in (True, False):
            graph = critpath_graph(dag, durations, precise=precise)
            t = time.perf_counter()
            res = await graph.run()
            makespan = time.perf_counter() - t
            effs[precise].append(cp / makespan)
            if not precise:
                effs_measured.append(res.report.efficiency)
    result["efficiency_random_dags"] = statistics.median(effs[True])
    result["efficiency_random_dags_min"] = min(effs[True])
    result["efficiency_random_dags_asyncio_sleep"] = statistics.median(effs[False])
    result["efficiency_measured_span"] = statistics.median(effs_measured)
    result["random_dag_critical_path_ms"] = {"min": min(cps) * 1e3, "max": max(cps) * 1e3}

    dag, durations = barrier_dag(chain=5, fast=0.100, slow=0.500, join=0.050)
    cp = analyse(dag, durations).span
    barrier: dict[str, float] = {"critical_path_ms": cp * 1e3}
    graph = critpath_graph(dag, durations, precise=True)
    barrier["critpath_ms"] = await _time(graph.run) * 1e3
    if use_lg:
        barrier_app = langgraph_app(dag, durations, precise=True)
        barrier["langgraph_ms"] = await _time(functools.partial(barrier_app.ainvoke, {})) * 1e3
    barrier["critpath_over_critical_path"] = barrier["critpath_ms"] / barrier["critical_path_ms"]
    result["barrier_dag"] = barrier
    return result


def _python() -> str:
    import platform

    return platform.python_version()


def render(r: dict[str, Any]) -> str:
    lines = [
        f"no-op DAG of {r['steps']} steps: critpath {r['overhead_us_per_step']:.1f} us/step",
    ]
    if "langgraph_overhead_us_per_step" in r:
        lines.append(
            f"  LangGraph {r['langgraph_overhead_us_per_step']:.1f} us/step "
            f"-> critpath is {r['overhead_ratio_vs_langgraph']:.1f}x lower"
        )
    elif "skipped" in r.get("langgraph", {}):
        lines.append(f"  LangGraph: skipped ({r['langgraph']['skipped']})")
    lines.append(
        f"random DAGs: efficiency (critical path / makespan) median "
        f"{r['efficiency_random_dags']:.4f}, min {r['efficiency_random_dags_min']:.4f}; "
        f"with plain asyncio.sleep {r['efficiency_random_dags_asyncio_sleep']:.4f}"
    )
    b = r["barrier_dag"]
    lines.append(
        f"barrier DAG: critical path {b['critical_path_ms']:.1f} ms, critpath "
        f"{b['critpath_ms']:.1f} ms"
        + (f", LangGraph {b['langgraph_ms']:.1f} ms" if "langgraph_ms" in b else "")
    )
    return "\n".join(lines)
