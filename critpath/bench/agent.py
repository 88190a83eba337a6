"""``critpath bench agent``: when an agent's tools start, side by side, on virtual time.

An agent answers a task in ``--waves`` waves of ``--calls`` independent tool calls
(each wave needs the previous wave's results), then answers. The model is a simulated
7B server (``critpath.adapters.sim``, the ``7b`` latency profile: TTFT and time per
output token measured on a real endpoint); each call's JSON arguments stream as
``--arg-tokens`` tokens. Tool latencies are log-normal with median ``--tool-median``
seconds and log-spread ``--tool-sigma`` (an assumed spread: critpath ships no
measured tool latencies, so the sweep covers a range of spreads). Every arm of a
trial sees the same tool latencies and the same model draws. The arms:

- ``react``: one call per message, one tool at a time (ReAct; ``ToolStart.SEQUENTIAL``);
- ``parallel``: a wave per message, its tools all started when the message ends
  (``ToolStart.AFTER_MESSAGE``);
- ``streamed``: a wave per message, each tool started the moment its call's arguments
  are complete (``ToolStart.STREAMED``, LLMCompiler-style).

``critical_path_ms`` is the critical path of the streamed run's sub-steps (model
parts and tool calls with their measured durations and true dependencies: a tool
needs its own arguments, a turn needs every result): no schedule of that work can
finish sooner. Reported: p50 and p99 makespans of each arm, the speedups, the
streamed arm's efficiency (critical path / makespan), how often it was slower than
``parallel`` (never, if the loop works), and a sweep over ``--sweep-sigmas`` and
``--sweep-arg-tokens``. Figures: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
from typing import Any

from critpath.adapters.sim import SimulatedModel
from critpath.adapters.sim.tools import PlannedCall, WavesScript
from critpath.agents import Agent, Tool, ToolStart
from critpath.estimates import percentile

__all__ = ["VIRTUAL_TIME", "add_arguments", "render", "run"]

VIRTUAL_TIME = True

_ARMS = {
    "react": ToolStart.SEQUENTIAL,
    "parallel": ToolStart.AFTER_MESSAGE,
    "streamed": ToolStart.STREAMED,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=200, help="agent runs per arm")
    parser.add_argument("--waves", type=int, default=2, help="dependent rounds of tool calls")
    parser.add_argument("--calls", type=int, default=6, help="independent calls per round")
    parser.add_argument("--arg-tokens", type=int, default=15, help="tokens of each call's args")
    parser.add_argument("--tool-median", type=float, default=0.8, help="seconds")
    parser.add_argument("--tool-sigma", type=float, default=0.9, help="log-normal spread")
    parser.add_argument("--profile", default="7b", help="simulated model latency profile")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep-trials", type=int, default=60, help="runs per sweep point")
    parser.add_argument("--sweep-sigmas", default="0.25,0.5,0.9,1.2")
    parser.add_argument("--sweep-arg-tokens", default="5,15,40")
    parser.add_argument("--no-sweep", action="store_true")


def _lookup_tool(latency: dict[int, float]) -> Tool:
    async def lookup(item: int) -> str:
        """Look up one item (a search, an API call)."""
        await asyncio.sleep(latency[item])
        return f"item {item}: found"

    return Tool(lookup)


async def _trial(
    args: argparse.Namespace, trial: int, sigma: float, arg_tokens: int
) -> dict[str, Any]:
    rng = random.Random(f"{args.seed}-{trial}-{sigma}")
    n = args.waves * args.calls
    latency = {i: args.tool_median * math.exp(rng.gauss(0.0, sigma)) for i in range(n)}
    script = WavesScript(
        [
            [PlannedCall("lookup", {"item": w * args.calls + k}, tokens=arg_tokens)
             for k in range(args.calls)]
            for w in range(args.waves)
        ]
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {}
    for arm, start in _ARMS.items():
        model = SimulatedModel("agent-model", profile=args.profile, tool_script=script,
                               seed=args.seed * 100_003 + trial)  # fmt: skip
        agent = Agent(model, [_lookup_tool(latency)], tool_start=start, max_turns=n + 2)
        t0 = loop.time()
        result = await agent.run("Find every item.")
        out[arm] = loop.time() - t0
        if result.status != "ok" or len(result.tool_runs) != n:
            raise RuntimeError(f"{arm}: the agent did not finish its task ({result.status})")
        if arm == "streamed":
            out["critical_path"] = result.substeps.analysis().span
    return out


async def _arms(
    args: argparse.Namespace, trials: int, sigma: float, arg_tokens: int
) -> dict[str, Any]:
    runs = [await _trial(args, t, sigma, arg_tokens) for t in range(trials)]
    res: dict[str, Any] = {}
    for key in (*_ARMS, "critical_path"):
        values = [r[key] for r in runs]
        res[f"{key}_ms"] = percentile(values, 0.5) * 1000
        res[f"{key}_p99_ms"] = percentile(values, 0.99) * 1000
    res["speedup_vs_react"] = res["react_ms"] / res["streamed_ms"]
    res["speedup_vs_parallel"] = res["parallel_ms"] / res["streamed_ms"]
    res["efficiency"] = percentile([r["critical_path"] / r["streamed"] for r in runs], 0.5)
    res["streamed_slower_than_parallel"] = sum(
        1 for r in runs if r["streamed"] > r["parallel"] + 1e-9
    )
    return res


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "trials": args.trials,
        "waves": args.waves,
        "calls_per_wave": args.calls,
        "arg_tokens": args.arg_tokens,
        "tool_median_s": args.tool_median,
        "tool_sigma": args.tool_sigma,
        "profile": args.profile,
    }
    result.update(await _arms(args, args.trials, args.tool_sigma, args.arg_tokens))
    if not args.no_sweep:
        sweep = []
        for sigma in (float(s) for s in args.sweep_sigmas.split(",")):
            for tokens in (int(t) for t in args.sweep_arg_tokens.split(",")):
                point = await _arms(args, args.sweep_trials, sigma, tokens)
                sweep.append({"tool_sigma": sigma, "arg_tokens": tokens, **{
                    k: point[k] for k in ("react_ms", "parallel_ms", "streamed_ms",
                                          "critical_path_ms", "speedup_vs_react",
                                          "speedup_vs_parallel", "efficiency")
                }})  # fmt: skip
        result["sweep"] = sweep
    return result


def render(r: dict[str, Any]) -> str:
    lines = [
        f"agent: {r['waves']} waves x {r['calls_per_wave']} tool calls, {r['arg_tokens']} "
        f"argument tokens a call, tools log-normal median {r['tool_median_s']} s "
        f"sigma {r['tool_sigma']}, model profile {r['profile']}, {r['trials']} trials",
        f"  p50 makespan: react {r['react_ms']:.0f} ms, parallel-after-message "
        f"{r['parallel_ms']:.0f} ms, streamed {r['streamed_ms']:.0f} ms; critical path "
        f"{r['critical_path_ms']:.0f} ms",
        f"  p99 makespan: react {r['react_p99_ms']:.0f} ms, parallel {r['parallel_p99_ms']:.0f}"
        f" ms, streamed {r['streamed_p99_ms']:.0f} ms",
        f"  streamed: {r['speedup_vs_react']:.2f}x faster than ReAct, "
        f"{r['speedup_vs_parallel']:.2f}x faster than parallel-after-message, efficiency "
        f"{r['efficiency']:.3f}; slower than parallel in {r['streamed_slower_than_parallel']}"
        " trials",
    ]
    if "sweep" in r:
        lines.append("  sweep (p50 ms):  sigma  arg-tokens   react  parallel  streamed  "
                     "critical  vs-react  vs-parallel")  # fmt: skip
        for p in r["sweep"]:
            lines.append(
                f"{'':18}{p['tool_sigma']:5.2f}  {p['arg_tokens']:10d}  {p['react_ms']:6.0f}"
                f"  {p['parallel_ms']:8.0f}  {p['streamed_ms']:8.0f}  {p['critical_path_ms']:8.0f}"
                f"  {p['speedup_vs_react']:8.2f}  {p['speedup_vs_parallel']:11.2f}"
            )
    return "\n".join(lines)
