"""``critpath bench hedge``: hedged requests against stragglers ("The Tail at Scale").

A pool of simulated replicas of one model (``--profile``, llmperf-calibrated) where a
few requests (``--straggler-p``) are stragglers, ``--straggler-x`` times slower in
every respect. The same requests (same ids, so the same straggler draws per replica,
same seed) go through two arms, each on its own fresh replicas:

- ``no_hedge``: a plain ``Pool`` (least outstanding);
- ``hedge``: ``Hedge`` over the same kind of pool, default delay (the primary
  replica's learned p95 TTFT), ``--budget`` hedges per request at most.

Both arms first serve ``--warmup`` requests (not measured) so the replicas learn
their TTFT, then ``--requests`` measured ones, in interleaved rounds (no_hedge, then
hedge), closed loop at ``--concurrency`` (well below the replicas' capacity). The
figure is **end-to-end latency** per request as the caller sees it (the whole answer
streamed); TTFT is reported beside it. Latencies are reported in simulated
milliseconds (divided by ``--time-scale``). ``loop_lag_ms`` is how late a 1 ms timer
fired on average while the arms ran: the event loop's own delay, in real milliseconds.
``hedge_delay_ms`` is the delay the last measured request used.

Why the budget is 10% (``Hedge``'s default) rather than 5%: hedging at the learned p95
TTFT, a hedge is wanted by every straggler and by the slowest 5% of the others, about
``(1 - q)(1 - p) + p`` = 9.75% of requests at ``p`` = 5%. A 5% budget refuses about
half of them, so unhedged stragglers stay above the p99 (``--budget 0.05`` shows it).
With one hedge per request the p99.9 stays a straggler's: about ``p`` x ``p`` of the
requests (0.25%) draw a straggler for both copies.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator
from typing import Any

from critpath.adapters import Model, complete, make_request
from critpath.adapters.hedge import Hedge
from critpath.adapters.pool import Pool
from critpath.adapters.sim import PROFILES, LatencyProfile, SimulatedModel

__all__ = ["add_arguments", "render", "run"]

_PROMPT_CHARS = 2200  # ~550 tokens, the prompt length the profiles were calibrated on


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--profile", default="7b", choices=sorted(PROFILES))
    parser.add_argument("--straggler-p", type=float, default=0.05)
    parser.add_argument("--straggler-x", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=3000, help="measured, per arm")
    parser.add_argument("--warmup", type=int, default=400, help="per arm, not measured")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--budget", type=float, default=0.1, help="hedges per request")
    parser.add_argument("--quantile", type=float, default=0.95, help="of the learned TTFT")
    parser.add_argument("--seed", type=int, default=0)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _replicas(args: argparse.Namespace, profile: LatencyProfile) -> list[SimulatedModel]:
    return [
        SimulatedModel("bench", profile=profile, seed=args.seed, time_scale=args.time_scale,
                       replica=str(i))
        for i in range(args.replicas)
    ]  # fmt: skip


async def _serve(
    model: Model, ids: list[str], args: argparse.Namespace, out: list[tuple[float, float]]
) -> None:
    """Closed loop: ``concurrency`` callers, each sending the next request when done."""
    prompt = "x" * _PROMPT_CHARS
    queue: Iterator[str] = iter(ids)

    async def caller() -> None:
        for rid in queue:
            request = make_request(
                messages=f"{rid} {prompt}", max_tokens=args.max_tokens, request_id=rid
            )
            answer = await complete(model, request)
            out.append((answer.timings.e2e, answer.timings.ttft or answer.timings.e2e))

    async with asyncio.TaskGroup() as tg:
        for _ in range(args.concurrency):
            tg.create_task(caller())


async def _lag_monitor(samples: list[float]) -> None:
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        samples.append(time.perf_counter() - t - 0.001)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = PROFILES[args.profile]
    profile = base.with_(straggler_p=args.straggler_p, straggler_x=args.straggler_x)
    plain = Pool(_replicas(args, profile))
    hedge = Hedge(
        Pool(_replicas(args, profile)),
        quantile=args.quantile,
        budget=args.budget,
        initial_delay=(base.queue_s + base.prefill_per_token_s * _PROMPT_CHARS / 4)
        * 2
        * args.time_scale,  # warm-up only: about twice the median TTFT, until it learns
    )
    arms: dict[str, Model] = {"no_hedge": plain, "hedge": hedge}

    warm = [f"w{i}" for i in range(args.warmup)]
    for model in arms.values():
        await _serve(model, warm, args, [])
    warm_stats = hedge.statistics()

    lag: list[float] = []
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in arms}
    per_round = max(1, args.requests // args.rounds)
    t0 = time.perf_counter()
    monitor = asyncio.create_task(_lag_monitor(lag))
    try:
        for r in range(args.rounds):
            ids = [f"r{i}" for i in range(r * per_round, (r + 1) * per_round)]
            for name, model in arms.items():
                await _serve(model, ids, args, samples[name])
    finally:
        monitor.cancel()
        await asyncio.wait([monitor])
    wall = time.perf_counter() - t0

    stats = hedge.statistics()
    requests = stats.requests - warm_stats.requests
    fired = stats.hedges_fired - warm_stats.hedges_fired
    ms = 1000.0 / args.time_scale  # seconds of real time -> simulated milliseconds
    out: dict[str, Any] = {
        "metric": "end-to-end latency per request, simulated ms",
        "profile": args.profile, "replicas": args.replicas,
        "straggler_p": args.straggler_p, "straggler_x": args.straggler_x,
        "requests_per_arm": per_round * args.rounds, "warmup_per_arm": args.warmup,
        "concurrency": args.concurrency, "max_tokens": args.max_tokens,
        "time_scale": args.time_scale, "budget": args.budget, "quantile": args.quantile,
        "seed": args.seed,
    }  # fmt: skip
    for name in arms:
        e2e = [s[0] * ms for s in samples[name]]
        ttft = [s[1] * ms for s in samples[name]]
        out[f"p50_ms_{name}"] = _pct(e2e, 0.50)
        out[f"p99_ms_{name}"] = _pct(e2e, 0.99)
        out[f"p999_ms_{name}"] = _pct(e2e, 0.999)
        out[f"ttft_p50_ms_{name}"] = _pct(ttft, 0.50)
        out[f"ttft_p99_ms_{name}"] = _pct(ttft, 0.99)
    out["p99_ratio"] = out["p99_ms_no_hedge"] / out["p99_ms_hedge"]
    out["p999_ratio"] = out["p999_ms_no_hedge"] / out["p999_ms_hedge"]
    out["extra_request_fraction"] = fired / requests if requests else 0.0
    out["hedges_fired"] = fired
    out["hedges_won"] = stats.hedges_won - warm_stats.hedges_won
    out["hedges_skipped_budget"] = stats.hedges_skipped_budget - warm_stats.hedges_skipped_budget
    out["hedge_delay_ms"] = stats.last_delay * ms
    out["stragglers_no_hedge"] = sum(
        1 for s in samples["no_hedge"] if s[1] * ms > 4 * out["ttft_p50_ms_no_hedge"]
    )
    out["loop_lag_ms"] = 1000.0 * sum(lag) / len(lag) if lag else 0.0
    out["wall_s"] = wall
    return out


def render(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"{r['replicas']} x {r['profile']} replicas, stragglers p={r['straggler_p']} "
            f"x{r['straggler_x']}, {r['requests_per_arm']} requests per arm at concurrency "
            f"{r['concurrency']}, {r['max_tokens']} tokens, time_scale {r['time_scale']}",
            "end-to-end (simulated ms)  p50        p99        p99.9",
            f"no hedge                   {r['p50_ms_no_hedge']:9.1f}  {r['p99_ms_no_hedge']:9.1f}  "
            f"{r['p999_ms_no_hedge']:9.1f}",
            f"hedge                      {r['p50_ms_hedge']:9.1f}  {r['p99_ms_hedge']:9.1f}  "
            f"{r['p999_ms_hedge']:9.1f}",
            f"p99 cut {r['p99_ratio']:.2f}x (p99.9 {r['p999_ratio']:.2f}x) for "
            f"{100 * r['extra_request_fraction']:.1f}% extra requests "
            f"(budget {100 * r['budget']:.0f}%): {r['hedges_fired']} hedges fired, "
            f"{r['hedges_won']} won, {r['hedges_skipped_budget']} skipped for budget; "
            f"delay {r['hedge_delay_ms']:.0f} ms (learned p{100 * r['quantile']:g} TTFT)",
            f"event-loop lag {r['loop_lag_ms']:.2f} ms, wall {r['wall_s']:.1f} s",
        ]
    )
