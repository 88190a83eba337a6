"""``critpath loadtest``: build the targets, run the rates, print, plot (see the package)."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from critpath.adapters.sim.clock import run_virtual
from critpath.bench.plots import check_plot_path, lines_svg
from critpath.bench.progress import Progress
from critpath.demo.strategies import build_named, known_names
from critpath.demo.tiers import simulated_tiers
from critpath.errors import ConfigError
from critpath.loadtest.arguments import add_arguments
from critpath.loadtest.runner import Sample, run_load
from critpath.loadtest.targets import ChatTarget, OpenAITarget, StrategyTarget, Target

__all__ = ["add_arguments", "main", "render", "run"]


def _ticker(bar: Progress, label: str) -> Callable[[Sample], None]:
    def tick(_sample: Sample) -> None:
        bar.advance(1, label)

    return tick


def _rates(args: argparse.Namespace) -> list[float]:
    if args.rates:
        try:
            rates = [float(r) for r in args.rates.split(",") if r.strip()]
        except ValueError as exc:
            raise ConfigError(f"--rates takes numbers separated by commas: {exc}") from exc
        if not rates or not all(0 < r < math.inf for r in rates):
            raise ConfigError(f"--rates takes finite numbers > 0, got {args.rates!r}")
        return rates
    return [args.rate if args.rate is not None else 2.0]


def _strategy_names(args: argparse.Namespace) -> list[str]:
    names = [n.strip() for n in (args.compare or args.strategy or "").split(",") if n.strip()]
    known = known_names([m.name for m in simulated_tiers(1).models])
    for n in names:
        if n not in known:
            raise ConfigError(f"unknown strategy {n!r}; known: {', '.join(known)}")
    return names


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rates = _rates(args)
    names = _strategy_names(args)
    check_plot_path(args.plot)
    if bool(names) == bool(args.url):
        raise ConfigError("give --strategy/--compare (in process) or --url (an endpoint)")
    runs: list[dict[str, Any]] = []
    client: httpx.AsyncClient | None = None
    bar = Progress(args.requests * len(rates) * max(1, len(names)), "load",
                   enabled=False if args.json or args.no_progress else None)  # fmt: skip
    try:
        targets: list[tuple[str, Target]] = []
        if args.url:
            client = httpx.AsyncClient(timeout=httpx.Timeout(args.drain + args.duration),
                                       limits=httpx.Limits(max_connections=1000))  # fmt: skip
            prompts = [q.text for q in simulated_tiers(50, seed=args.seed).questions]
            target: Target
            if args.url.rstrip("/").endswith("/chat/completions"):
                target = OpenAITarget(args.url, args.model, client, prompts)
            else:
                target = ChatTarget(args.url, client, prompts)
            targets.append((target.name, target))
        for rate in rates:
            for label in names or [""]:
                if names:  # fresh, idle replicas for every run
                    tiers = simulated_tiers(200, seed=args.seed, time_scale=args.time_scale)
                    runnable = build_named(label, tiers.models).runnable
                    requests = [tiers.request(q) for q in tiers.questions]
                    target = StrategyTarget(label, runnable, requests)
                else:
                    target = targets[0][1]
                result = await run_load(
                    target, rate, max_requests=args.requests, duration=args.duration,
                    slo_s=args.slo_ms / 1000, drain_s=args.drain, seed=args.seed,
                    on_sample=_ticker(bar, f"{target.name} at {rate:g}/s"),
                )  # fmt: skip
                runs.append(result.summary())
    finally:
        bar.close()
        if client is not None:
            await client.aclose()
    out: dict[str, Any] = {
        "time": "real" if args.url or args.real_time else "simulated",
        "rates": rates,
        "runs": runs,
    }
    if args.plot:
        out["plot"] = _plot(runs, rates, Path(args.plot))
    return out


def _plot(runs: list[dict[str, Any]], rates: list[float], path: Path) -> str:
    series: dict[str, list[tuple[float, float]]] = {}
    if len(rates) > 1:
        for r in runs:
            series.setdefault(r["target"], []).append((r["offered_rate"], r["latency_ms"]["p99"]))
        svg = lines_svg(series, title="p99 latency vs offered load", x_label="requests / s",
                        y_label="p99 latency (ms, log scale)")  # fmt: skip
    else:
        for r in runs:
            series[r["target"]] = [(p, r["latency_ms"][f"p{p:g}"]) for p in (50.0, 90.0, 99.0)]
        svg = lines_svg(series, title=f"latency percentiles at {rates[0]:g} requests / s",
                        x_label="percentile", y_label="latency (ms, log scale)")  # fmt: skip
    path.write_text(svg, encoding="utf-8")
    return str(path.resolve())


def render(result: dict[str, Any]) -> str:
    unit = "simulated ms" if result["time"] == "simulated" else "ms"
    head = (
        f"{'target':<30} {'rate':>6} {'done':>6} {'err':>5} {'thru/s':>7} {'good/s':>7} "
        f"{'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8} {'TTFT p50':>9} {'TTFT p99':>9}"
    )
    lines = [f"open-loop Poisson load ({unit}; goodput: answers within the SLO)", head,
             "-" * len(head)]  # fmt: skip
    for r in result["runs"]:
        lat, ttft = r["latency_ms"], r["ttft_ms"]
        lines.append(
            f"{r['target'][:30]:<30} {r['offered_rate']:>6g} {r['completed']:>6} {r['errors']:>5} "
            f"{r['throughput_rps']:>7.2f} {r['goodput_rps']:>7.2f} {lat['p50']:>8.0f} "
            f"{lat['p90']:>8.0f} {lat['p99']:>8.0f} {lat['p99.9']:>8.0f} {ttft['p50']:>9.0f} "
            f"{ttft['p99']:>9.0f}"
        )
        for kind, n in r["error_kinds"].items():
            lines.append(f"{'':<30} {n} x {kind}")
    if result.get("plot"):
        lines.append(f"plot: {result['plot']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    in_process = not args.url
    result = run_virtual(run(args)) if in_process and not args.real_time else asyncio.run(run(args))
    print(json.dumps(result, indent=2) if args.json else render(result))
    failed = [r for r in result["runs"] if r["completed"] == 0]
    if failed:  # nothing answered: say why, and fail
        kinds = sorted({k for r in failed for k in r["error_kinds"]})
        raise ConfigError(f"no request succeeded in {len(failed)} run(s): {', '.join(kinds)}")
    return 0
