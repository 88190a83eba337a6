"""``critpath bench faults``: failing replicas and overload, with and without the defences.

A simulated fleet of ``--replicas`` replicas (``SimulatedModel``, ``--slots`` sequences
each) behind a ``Pool`` gets Poisson arrivals at ``--rate`` requests per second for
``--duration`` simulated seconds (virtual time: exact, and as fast as the CPU allows).
One run, side by side, each scenario under two policies:

- ``healthy``; ``failing`` (one replica answers every request with a server error);
  ``slow`` (one replica 10x slower); ``killed`` (one replica dies at ``--kill-at`` of
  the run: its connections reset, in-flight streams included, and new ones are
  refused);
- policy ``none``: a plain least-outstanding pool; ``eject``: the pool with outlier
  ejection (``BreakerPolicy``) and failover before the first token.

Then ``overload``: arrivals at ``--overload`` times the fleet's capacity (its slots
over the healthy median latency), policy ``accept_all`` against ``admission``
(``critpath.serve.admission.AdmissionController`` shedding what would miss ``--slo``).

Per scenario: requests sent, ok, errors by type, shed (admission's 503s), **lost** (no
answer and no error: must be 0), p50/p99 latency of the successful requests.
Figures: ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections import Counter
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from critpath.adapters.breaker import BreakerPolicy
from critpath.adapters.completion import complete
from critpath.adapters.pool import Pool
from critpath.adapters.protocol import Chunk, Model, ModelRequest, make_request
from critpath.adapters.sim.model import SimulatedModel
from critpath.adapters.sim.profiles import PROFILES
from critpath.adapters.wrapper import WrapperModel
from critpath.errors import ModelConnectionError, ModelError, Overloaded
from critpath.estimates import percentile
from critpath.serve.admission import AdmissionController

__all__ = ["VIRTUAL_TIME", "add_arguments", "render", "run"]

VIRTUAL_TIME = True

SCENARIOS = ("healthy", "failing", "slow", "killed")
POLICIES = ("none", "eject")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--slots", type=int, default=8, help="sequences per replica at once")
    parser.add_argument("--rate", type=float, default=12.0, help="arrivals per second")
    parser.add_argument("--duration", type=float, default=30.0, help="simulated seconds")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--profile", default="7b", choices=sorted(PROFILES))
    parser.add_argument("--kill-at", type=float, default=0.3, help="fraction of the run")
    parser.add_argument("--overload", type=float, default=2.0, help="x the fleet's capacity")
    parser.add_argument(
        "--slo", type=float, default=None, help="overload SLO, s (default: 2.5x healthy p50)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=0)


class _Killable(WrapperModel):
    """A replica that can be killed: its streams then fail with a connection reset at
    once (in flight included) and new requests are refused."""

    def __init__(self, model: Model) -> None:
        super().__init__(model)
        self.dead = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        if self.dead.is_set():
            raise ModelConnectionError("connection refused (replica killed)", model=self.name)
        inner = self.wrapped[0].stream(request)
        died = asyncio.ensure_future(self.dead.wait())

        async def step() -> Chunk | None:
            return await anext(inner, None)

        try:
            while True:
                nxt = asyncio.ensure_future(step())
                await asyncio.wait({nxt, died}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    await asyncio.wait({nxt})
                    raise ModelConnectionError("connection reset (replica killed)", model=self.name)
                chunk = nxt.result()
                if chunk is None:
                    return
                yield chunk
        finally:
            died.cancel()
            await inner.aclose()


@dataclass
class _Tally:
    sent: int = 0
    ok: int = 0
    shed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    open: int = 0  # requests with no outcome yet (lost if any is left at the end)


def _fleet(args: argparse.Namespace, fault: str) -> list[Model]:
    base = PROFILES[args.profile].with_(max_num_seqs=args.slots)
    replicas: list[Model] = []
    for i in range(args.replicas):
        profile, scale = base, 1.0
        if i == 0 and fault == "failing":
            profile = base.with_(error_p=1.0)
        if i == 0 and fault == "slow":
            scale = 10.0
        sim = SimulatedModel("bench", profile=profile, seed=args.seed, time_scale=scale,
                             replica=str(i), draw_by="request")  # fmt: skip
        replicas.append(_Killable(sim) if i == 0 and fault == "killed" else sim)
    return replicas


async def _drive(
    model: Model,
    args: argparse.Namespace,
    rate: float,
    admission: AdmissionController | None = None,
    kill: _Killable | None = None,
) -> _Tally:
    """Poisson arrivals for ``args.duration`` seconds; every request gets an outcome."""
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed)
    tally = _Tally()

    async def one(i: int) -> None:
        tally.open += 1
        request = make_request(messages=f"q{i}", max_tokens=args.max_tokens, request_id=f"r{i}")
        t0 = loop.time()
        try:
            if admission is None:
                async with asyncio.timeout(args.timeout):
                    await complete(model, request)
            else:
                with admission.admit():
                    async with asyncio.timeout(args.timeout):
                        await complete(model, request)
        except Overloaded:
            tally.shed += 1
        except ModelError as exc:
            tally.errors[type(exc).__name__] += 1
        except TimeoutError:
            tally.errors["Timeout"] += 1
        except Exception as exc:  # a bug: counted, never a crash of the benchmark
            tally.errors[f"unexpected {type(exc).__name__}"] += 1
        else:
            tally.ok += 1
            tally.latencies.append(loop.time() - t0)
        tally.open -= 1

    async def killer() -> None:
        if kill is not None:
            await asyncio.sleep(args.kill_at * args.duration)
            kill.dead.set()

    start = loop.time()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(killer())
        i = 0
        while True:
            await asyncio.sleep(rng.expovariate(rate))
            if loop.time() - start >= args.duration:
                break
            tally.sent += 1
            tg.create_task(one(i))
            i += 1
    return tally


def _row(name: str, policy: str, tally: _Tally, extra: dict[str, Any]) -> dict[str, Any]:
    lat = tally.latencies
    errors = sum(tally.errors.values())
    return {
        "name": name,
        "policy": policy,
        "sent": tally.sent,
        "ok": tally.ok,
        "errors": errors,
        "errors_by_type": dict(sorted(tally.errors.items())),
        "shed": tally.shed,
        "lost": tally.sent - tally.ok - errors - tally.shed,
        "success": tally.ok / tally.sent if tally.sent else float("nan"),
        "p50_ms": percentile(lat, 0.5) * 1000 if lat else None,
        "p99_ms": percentile(lat, 0.99) * 1000 if lat else None,
        **extra,
    }


def _pool(replicas: list[Model], policy: str) -> Pool:
    if policy == "eject":
        breaker = BreakerPolicy(failures=3, cooldown=2.0, max_cooldown=30.0)
        return Pool(replicas, breaker=breaker, failover=2)
    return Pool(replicas)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for scenario in SCENARIOS:
        for policy in POLICIES:
            replicas = _fleet(args, scenario)
            pool = _pool(replicas, policy)
            kill = replicas[0] if isinstance(replicas[0], _Killable) else None
            tally = await _drive(pool, args, args.rate, kill=kill)
            stats = pool.statistics()
            ejections = sum(r.breaker.ejections for r in stats.replicas if r.breaker)
            extra = {"failovers": stats.failovers, "ejections": ejections}
            rows.append(_row(scenario, policy, tally, extra))

    healthy = next(r for r in rows if r["name"] == "healthy" and r["policy"] == "none")
    median_s = healthy["p50_ms"] / 1000
    capacity = args.replicas * args.slots / median_s
    slo = args.slo if args.slo is not None else 2.5 * median_s
    rate = args.overload * capacity
    for policy in ("accept_all", "admission"):
        admission = None
        if policy == "admission":
            slots = args.replicas * args.slots
            admission = AdmissionController(
                concurrency=slots, max_queue=slots, slo=slo, quantile=0.99, initial_service=median_s
            )
        tally = await _drive(Pool(_fleet(args, "healthy")), args, rate, admission=admission)
        row = _row("overload", policy, tally, {})
        lat = tally.latencies
        row["within_slo"] = sum(1 for x in lat if x <= slo) / len(lat) if lat else None
        rows.append(row)

    return {
        "benchmark": "faults",
        "config": {
            "replicas": args.replicas,
            "slots": args.slots,
            "rate": args.rate,
            "duration_s": args.duration,
            "max_tokens": args.max_tokens,
            "profile": args.profile,
            "kill_at": args.kill_at,
            "seed": args.seed,
            "overload": args.overload,
            "capacity_rps": capacity,
            "overload_rate": rate,
            "slo_ms": slo * 1000,
        },
        "scenarios": rows,
        "goals": _goals(rows, slo),
    }


def _goals(rows: list[dict[str, Any]], slo: float) -> dict[str, Any]:
    def get(name: str, policy: str) -> dict[str, Any]:
        return next(r for r in rows if r["name"] == name and r["policy"] == policy)

    healthy = get("healthy", "eject")
    failing = get("failing", "eject")
    admitted = get("overload", "admission")
    p99_ratio = (
        failing["p99_ms"] / healthy["p99_ms"] if failing["p99_ms"] and healthy["p99_ms"] else None
    )
    return {
        "failing_eject_success": failing["success"],
        "failing_eject_success_met": failing["success"] >= 0.99,
        "failing_eject_p99_vs_healthy": p99_ratio,
        "failing_eject_p99_met": p99_ratio is not None and p99_ratio <= 1.5,
        "overload_admitted_p99_ms": admitted["p99_ms"],
        "overload_admitted_p99_met": admitted["p99_ms"] is not None
        and admitted["p99_ms"] <= slo * 1000,
        "lost_total": sum(r["lost"] for r in rows),
    }


def render(result: dict[str, Any]) -> str:
    c = result["config"]
    lines = [
        f"faults: {c['replicas']} replicas x {c['slots']} slots, Poisson {c['rate']:g} req/s for "
        f"{c['duration_s']:g}s (virtual time), {c['max_tokens']} tokens, profile {c['profile']}",
        f"overload: {c['overload']:g}x capacity ({c['capacity_rps']:.1f} req/s) = "
        f"{c['overload_rate']:.1f} req/s, SLO {c['slo_ms']:.0f} ms",
        "",
        f"{'scenario':<10} {'policy':<11} {'sent':>6} {'ok':>6} {'errors':>6} {'shed':>6} "
        f"{'lost':>4} {'success':>8} {'p50 ms':>8} {'p99 ms':>8}  errors by type",
    ]
    for r in result["scenarios"]:
        p50 = f"{r['p50_ms']:.0f}" if r["p50_ms"] is not None else "-"
        p99 = f"{r['p99_ms']:.0f}" if r["p99_ms"] is not None else "-"
        kinds = ", ".join(f"{k} {v}" for k, v in r["errors_by_type"].items())
        lines.append(
            f"{r['name']:<10} {r['policy']:<11} {r['sent']:>6} {r['ok']:>6} {r['errors']:>6} "
            f"{r['shed']:>6} {r['lost']:>4} {r['success']:>8.1%} {p50:>8} {p99:>8}  {kinds}"
        )
    g = result["goals"]
    ratio = g["failing_eject_p99_vs_healthy"]
    met = {k: "met" if g[k] else "MISSED" for k in g if k.endswith("_met")}
    lines += [
        "",
        f"goal: one failing replica of {c['replicas']} with ejection keeps >= 99% success: "
        f"{g['failing_eject_success']:.2%} ({met['failing_eject_success_met']})",
        "goal: ... and p99 within 1.5x of healthy: "
        + (f"{ratio:.2f}x" if ratio is not None else "-")
        + f" ({met['failing_eject_p99_met']})",
        f"goal: overload with admission keeps the admitted p99 within the SLO: "
        f"{g['overload_admitted_p99_ms'] or float('nan'):.0f} ms vs {c['slo_ms']:.0f} ms "
        f"({met['overload_admitted_p99_met']})",
        f"lost requests (no answer, no error), all scenarios: {g['lost_total']}",
    ]
    return "\n".join(lines)
