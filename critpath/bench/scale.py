"""``critpath bench scale``: the chat service on Ray Serve, 1 vs 2 replicas; a shared
limiter across OS processes.

1. ``replicas``: the example chat service (``examples.chatbot``, its simulated models
   sleeping, not computing, ``CHATBOT_TIME_SCALE`` = ``--time-scale``) deployed on a
   local Ray Serve with 1, then 2 replicas, each bounded to ``--max-ongoing``
   concurrent requests. Open-loop Poisson load (``critpath.loadtest``) of
   non-streamed chat completions through Ray Serve's proxy on 127.0.0.1:
   ``--rate`` requests/s per replica (so twice the rate on two replicas, the same load
   per replica), and one replica at the two-replica rate to show what one cannot
   carry. Latency is from the scheduled arrival (no coordinated omission).
   ``ray_overhead``: the median of ``GET /healthz`` one at a time through Ray Serve
   versus the same app under uvicorn in process.
2. ``limiter``: ``--processes`` OS processes, each running ``--runs`` concurrent
   critpath runs whose step calls a simulated server, share one ``SharedLimiter`` of
   ``--limit`` through a throwaway ``redis-server`` on 127.0.0.1; the peak of
   requests at the server (its ``/metrics``, sampled every 5 ms) versus the limit.

Needs the ``ray`` and ``redis`` extras and Debian's ``redis-server``; a part whose
requirement is missing is reported as skipped. Figures: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

from critpath.adapters.prometheus import parse_metrics, server_load
from critpath.adapters.sim.server import SimServer, build_fleet
from critpath.loadtest.runner import run_load

__all__ = ["add_arguments", "render", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=5.0, help="requests/s per replica")
    parser.add_argument("--requests", type=int, default=100, help="per replica count (max)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (max)")
    parser.add_argument("--max-ongoing", type=int, default=4, help="requests per replica")
    parser.add_argument("--time-scale", type=float, default=0.5, help="simulated model speed")
    parser.add_argument("--limit", type=int, default=4, help="shared limiter slots")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--runs", type=int, default=24, help="runs per process")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-limiter", action="store_true")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- 1. Ray Serve replicas ---------------------------------------------------------------


class _Completion:
    """A non-streamed chat completion through Ray Serve's proxy."""

    name = "chat completion"

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url + "/v1/chat/completions"
        self.client = client

    async def __call__(self, i: int) -> float | None:
        body = {"messages": [{"role": "user", "content": f"How do I fix deploy {i}?"}]}
        r = await self.client.post(self.url, json=body)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        return None


async def _replicas(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, float]]:
    from critpath.serve.ray_serve import asgi_deployment, run_app, shutdown, start_http, start_ray

    started = start_ray()
    rows: list[dict[str, Any]] = []
    try:
        url = start_http("127.0.0.1", _free_port())
        env = {"CHATBOT_TIME_SCALE": str(args.time_scale)}
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=512)) as c:
            for replicas, rate in ((1, args.rate), (2, 2 * args.rate), (1, 2 * args.rate)):
                app = asgi_deployment(
                    "examples.chatbot.ray_app:build", name="chat", env=env, replicas=replicas,
                    max_ongoing_requests=args.max_ongoing,
                )
                await asyncio.to_thread(run_app, app, name="chat", route_prefix="/")
                target = _Completion(url, c)
                for i in range(4 * replicas):  # warm-up: every replica answered once
                    await target(i)
                result = await run_load(
                    target, rate, max_requests=args.requests * replicas,
                    duration=args.duration, drain_s=60.0, seed=replicas,
                )
                s = result.summary()
                rows.append({
                    "replicas": replicas, "offered_rps": rate,
                    "throughput_rps": s["throughput_rps"],
                    "p50_ms": s["latency_ms"]["p50"], "p99_ms": s["latency_ms"]["p99"],
                    "completed": s["completed"], "errors": s["errors"],
                })  # fmt: skip
            overhead = await _overhead(url, c)
    finally:
        await asyncio.to_thread(shutdown, stop_ray=started)
    return rows, overhead


async def _overhead(url: str, client: httpx.AsyncClient, n: int = 200) -> dict[str, float]:
    """Median time of ``GET /healthz``, one at a time: through Ray Serve's proxy and
    replica, and the same app under uvicorn in this process."""
    from critpath.serve.asgi import AppServer
    from critpath.serve.ray_serve import ReplicaHealth
    from examples.chatbot.app import create_app

    async def median(base: str) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            (await client.get(base + "/healthz")).raise_for_status()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    ray_ms = await median(url)
    async with AppServer(ReplicaHealth(create_app())) as server:
        direct_ms = await median(server.url)
    return {"ray_serve_p50_ms": round(ray_ms, 2), "uvicorn_p50_ms": round(direct_ms, 2),
            "overhead_ms": round(ray_ms - direct_ms, 2)}  # fmt: skip


# ---- 2. the shared limiter ----------------------------------------------------------------


class _Redis:
    """A throwaway ``redis-server`` on 127.0.0.1 (no persistence)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="critpath-bench-redis-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}/0"

    async def ready(self) -> None:
        for _ in range(500):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            except OSError:
                await asyncio.sleep(0.02)
        raise OSError("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._dir.cleanup()


async def _limiter(args: argparse.Namespace) -> dict[str, Any]:
    redis = _Redis()
    try:
        await redis.ready()
        fleet = build_fleet(sizes=("small",), max_num_seqs=1024, time_scale=args.time_scale)
        async with SimServer(fleet) as sim, httpx.AsyncClient() as client:
            peak, samples = 0, 0

            async def watch() -> None:
                nonlocal peak, samples
                while True:
                    load = server_load(parse_metrics((await client.get(sim.url + "/metrics")).text))
                    peak = max(peak, int(load.outstanding) if load else 0)
                    samples += 1
                    await asyncio.sleep(0.005)

            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            watcher = asyncio.create_task(watch())
            t0 = time.perf_counter()
            worker = ("-m", "critpath.bench._scale_worker", redis.url, sim.base_url,
                      str(args.limit), str(args.runs))  # fmt: skip
            procs = [
                await asyncio.create_subprocess_exec(
                    sys.executable, *worker, stdout=asyncio.subprocess.PIPE, env=env
                )
                for _ in range(args.processes)
            ]
            try:
                outs = [await asyncio.wait_for(p.communicate(), 300) for p in procs]
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
                for p in procs:
                    if p.returncode is None:
                        p.kill()
                        await p.wait()
            wall = time.perf_counter() - t0
    finally:
        redis.stop()
    reports = [json.loads(out.splitlines()[-1]) for out, _ in outs if out.strip()]
    return {
        "limit": args.limit,
        "processes": args.processes,
        "peak_in_flight": peak,
        "runs_ok": sum(r["ok"] for r in reports),
        "runs": args.processes * args.runs,
        "metrics_samples": samples,
        "store_round_trips": sum(r["stats"]["store_round_trips"] for r in reports),
        "wall_s": round(wall, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k != "json"}}
    if not args.skip_ray:
        try:
            result["replicas"], result["ray_overhead"] = await _replicas(args)
        except ImportError as exc:
            result["replicas"] = {"skipped": str(exc)}
    if not args.skip_limiter:
        try:
            result["limiter"] = await _limiter(args)
        except FileNotFoundError as exc:
            result["limiter"] = {"skipped": str(exc)}
    rows = result.get("replicas")
    if isinstance(rows, list):
        one = next(r for r in rows if r["replicas"] == 1)
        two = next(r for r in rows if r["replicas"] == 2)
        result["speedup"] = round(two["throughput_rps"] / max(one["throughput_rps"], 1e-9), 2)
        result["p99_ratio"] = round(two["p99_ms"] / max(one["p99_ms"], 1e-9), 2)
    return result


def render(result: dict[str, Any]) -> str:
    lines = []
    rows = result.get("replicas")
    if isinstance(rows, list):
        lines.append("chat service on Ray Serve (open-loop; latency from scheduled arrival)")
        lines.append(f"{'replicas':>8} {'offered/s':>9} {'done/s':>7} {'p50 ms':>8} {'p99 ms':>8}"
                     f" {'errors':>6}")  # fmt: skip
        for r in rows:
            lines.append(f"{r['replicas']:>8} {r['offered_rps']:>9.1f} {r['throughput_rps']:>7.2f}"
                         f" {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['errors']:>6}")  # fmt: skip
        lines.append(f"2 vs 1 replica at the same load per replica: {result['speedup']}x "
                     f"throughput, p99 ratio {result['p99_ratio']}")  # fmt: skip
        o = result["ray_overhead"]
        lines.append(f"GET /healthz one at a time, p50: {o['ray_serve_p50_ms']} ms through "
                     f"Ray Serve, {o['uvicorn_p50_ms']} ms under uvicorn "
                     f"(+{o['overhead_ms']} ms)")  # fmt: skip
    elif rows is not None:
        lines.append(f"replicas: skipped ({rows['skipped']})")
    lim = result.get("limiter")
    if isinstance(lim, dict) and "skipped" not in lim:
        lines.append(
            f"shared limiter: limit {lim['limit']} across {lim['processes']} processes; "
            f"peak in flight at the server {lim['peak_in_flight']} "
            f"({lim['runs_ok']}/{lim['runs']} runs ok, {lim['store_round_trips']} Redis "
            f"round trips, {lim['metrics_samples']} samples)"
        )
    elif lim is not None:
        lines.append(f"limiter: skipped ({lim['skipped']})")
    return "\n".join(lines)
