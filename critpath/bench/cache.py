"""``critpath bench cache``: prefix-aware routing, the response cache and coalescing.

Three measurements, one run, side by side:

1. ``routing``: multi-turn chat on a simulated fleet of 4 replicas, each with its own
   prefix cache (``sim.prefix_cache``): many conversations start at Poisson arrivals,
   share one system prompt and send their growing history every turn (the answer of
   each turn is part of the next prompt), after an exponential think time. Each
   routing strategy (``round_robin``, ``p2c``, ``prefix``) gets a fresh fleet and the
   same workload; TTFT and end-to-end p50/p99 and the prefix-cache hit rate (cached
   prompt tokens / prompt tokens, vLLM's ``prefix_cache_hits / queries``) are
   reported. A second scenario (``hot``) adds single-turn questions about one long
   shared document at a higher rate, where routing every request to the replica that
   holds the document would make it a hot spot: ``prefix_unbounded`` (no load bound)
   is reported beside the bounded ``prefix``. This part runs on virtual time (in its
   own event loop and thread), so simulated minutes take seconds and times are exact.
2. ``cache``: a workload with repeats (requests drawn from fewer distinct questions)
   through ``Cache`` with each store — memory, SQLite (a temporary file) and Redis (a
   ``redis-server`` started on 127.0.0.1 for the run, or ``--redis-url``; reported as
   skipped when neither is available) — on the real clock: hit rate and the TTFT of
   hits as the caller sees it.
3. ``coalescing``: N identical concurrent requests through ``Cache``: how many reach
   the model.

Figures, commands and dates are in ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from critpath.adapters.cache import Cache
from critpath.adapters.completion import complete
from critpath.adapters.pool import Pool
from critpath.adapters.protocol import Chunk, Model, ModelRequest, make_request
from critpath.adapters.routing import PrefixRouter
from critpath.adapters.sim.clock import run_virtual
from critpath.adapters.sim.model import SimulatedModel
from critpath.adapters.sim.prefix_cache import PrefixCache
from critpath.adapters.sim.profiles import PROFILES
from critpath.caching import MemoryStore, SQLiteStore
from critpath.caching.store import CacheStore
from critpath.estimates import percentile

__all__ = ["add_arguments", "render", "run"]

VIRTUAL_TIME = False
"""The routing part runs on virtual time in its own loop; the stores need the real clock."""

_WORDS = ("latency", "prefix", "replica", "token", "cache", "batch", "queue", "stream",
          "model", "answer", "router", "block", "history", "turn", "system", "prompt")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", default="local-8b", help="replicas' latency profile")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--conversations", type=int, default=240)
    parser.add_argument("--turns", type=int, default=8, help="turns per conversation")
    parser.add_argument("--rate", type=float, default=4.0, help="conversations started / s")
    parser.add_argument("--think", type=float, default=3.0, help="mean think time (s)")
    parser.add_argument("--system-tokens", type=int, default=200)
    parser.add_argument("--user-tokens", type=int, default=60)
    parser.add_argument("--cache-blocks", type=int, default=2000,
                        help="prefix-cache blocks (16 tokens) per replica")  # fmt: skip
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--hot-rate", type=float, default=40.0,
                        help="hot scenario: document questions / s")  # fmt: skip
    parser.add_argument("--hot-questions", type=int, default=2400)
    parser.add_argument("--doc-tokens", type=int, default=1500)
    parser.add_argument("--cache-requests", type=int, default=400)
    parser.add_argument("--distinct", type=int, default=100, help="distinct cached questions")
    parser.add_argument("--coalesce", type=int, default=50, help="identical concurrent requests")
    parser.add_argument("--redis-url", default=None, help="a Redis to use (else one is started)")
    parser.add_argument("--no-redis", action="store_true")


# ---- 1. routing ---------------------------------------------------------------------


class RoundRobin:
    """Each request to the next replica in turn (the baseline; benchmark-local)."""

    def __init__(self, replicas: Sequence[Model]) -> None:
        self.replicas = tuple(replicas)
        self._next = 0

    @property
    def name(self) -> str:
        return self.replicas[0].name

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        model = self.replicas[self._next % len(self.replicas)]
        self._next += 1
        async with aclosing(model.stream(request)) as chunks:
            async for chunk in chunks:
                yield chunk


def _text(rng: random.Random, tokens: int) -> str:
    words: list[str] = []
    chars = 0
    while chars < tokens * 4:
        w = rng.choice(_WORDS)
        words.append(w)
        chars += len(w) + 1
    return " ".join(words)


@dataclass(frozen=True, slots=True)
class _Sample:
    ttft: float
    e2e: float


def _fleet(args: argparse.Namespace) -> list[SimulatedModel]:
    profile = PROFILES[args.profile].with_(max_num_seqs=args.max_num_seqs)
    return [
        SimulatedModel("chat", profile=profile, seed=args.seed, replica=str(i),
                       stream_interval=8, draw_by="request",
                       prefix_cache=PrefixCache(args.cache_blocks))
        for i in range(args.replicas)
    ]  # fmt: skip


def _router(strategy: str, replicas: list[SimulatedModel]) -> Model:
    if strategy == "round_robin":
        return RoundRobin(replicas)
    if strategy == "prefix_unbounded":
        return Pool(replicas, strategy="prefix",
                    router=PrefixRouter(len(replicas), load_factor=math.inf))  # fmt: skip
    return Pool(replicas, strategy="prefix" if strategy == "prefix" else "p2c", seed=7)


async def _scenario(args: argparse.Namespace, strategy: str, hot: bool) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    replicas = _fleet(args)
    model = _router(strategy, replicas)
    rng = random.Random(args.seed)
    system = "You are the assistant of the critpath project. " + _text(rng, args.system_tokens)
    doc = _text(rng, args.doc_tokens)
    samples: list[_Sample] = []
    counter = 0

    async def ask(messages: list[dict[str, str]]) -> str:
        nonlocal counter
        counter += 1
        req = make_request(messages=messages, temperature=0, max_tokens=64,
                           request_id=f"r{counter}")  # fmt: skip
        t0 = loop.time()
        c = await complete(model, req)
        samples.append(_Sample(c.timings.ttft or 0.0, loop.time() - t0))
        return c.text

    async def conversation(i: int, start: float) -> None:
        crng = random.Random(args.seed * 1_000_003 + i)
        await asyncio.sleep(start)
        messages = [{"role": "system", "content": system}]
        for _ in range(args.turns):
            messages.append({"role": "user", "content": _text(crng, args.user_tokens)})
            answer = await ask(messages)
            messages.append({"role": "assistant", "content": answer})
            await asyncio.sleep(crng.expovariate(1.0 / args.think))

    async def question(i: int, start: float) -> None:
        qrng = random.Random(args.seed * 7_000_003 + i)
        await asyncio.sleep(start)
        await ask([{"role": "system", "content": doc},
                   {"role": "user", "content": _text(qrng, 30)}])  # fmt: skip

    starts: list[float] = []
    t = 0.0
    for _ in range(args.conversations):
        t += rng.expovariate(args.rate)
        starts.append(t)
    jobs = [conversation(i, s) for i, s in enumerate(starts)]
    if hot:
        t = 0.0
        for i in range(args.hot_questions):
            t += rng.expovariate(args.hot_rate)
            jobs.append(question(i, t))
    await asyncio.gather(*jobs)
    caches = [r.prefix_cache for r in replicas if r.prefix_cache is not None]
    queries = sum(c.queries for c in caches)
    ttft = [s.ttft for s in samples]
    e2e = [s.e2e for s in samples]
    picks = [r.stats.requests for r in replicas]
    return {
        "scenario": "hot" if hot else "chat",
        "strategy": strategy,
        "requests": len(samples),
        "ttft_p50_ms": 1000 * percentile(ttft, 0.5),
        "ttft_p99_ms": 1000 * percentile(ttft, 0.99),
        "e2e_p50_ms": 1000 * percentile(e2e, 0.5),
        "e2e_p99_ms": 1000 * percentile(e2e, 0.99),
        "hit_rate": sum(c.hits for c in caches) / queries if queries else 0.0,
        "max_replica_share": max(picks) / max(1, sum(picks)),
    }


async def _routing(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for strategy in ("round_robin", "p2c", "prefix"):
        rows.append(await _scenario(args, strategy, hot=False))
    for strategy in ("round_robin", "p2c", "prefix", "prefix_unbounded"):
        rows.append(await _scenario(args, strategy, hot=True))
    return rows


# ---- 2. the response cache ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _LocalRedis:
    """A throwaway ``redis-server`` on 127.0.0.1 (no persistence) for the run."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._dir = tempfile.mkdtemp(prefix="critpath-bench-redis-")
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server")
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", self._dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def ready(self) -> None:
        for _ in range(250):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                await w.wait_closed()
                return
            except OSError:
                await asyncio.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


async def _cache_row(args: argparse.Namespace, kind: str, store: CacheStore) -> dict[str, Any]:
    upstream = SimulatedModel("cached", profile=args.profile, seed=args.seed, time_scale=0.01)
    cache = Cache(upstream, store)
    rng = random.Random(args.seed)
    questions = [_text(rng, 20) for _ in range(args.distinct)]
    hit_ttfts: list[float] = []
    try:
        for _ in range(args.cache_requests):
            q = questions[min(int(rng.paretovariate(1.2)) - 1, args.distinct - 1)]
            c = await complete(cache, make_request(messages=q, temperature=0, max_tokens=32))
            if c.usage is not None and c.usage.cached and c.timings.ttft is not None:
                hit_ttfts.append(c.timings.ttft)
    finally:
        await store.aclose()
    s = cache.statistics()
    return {
        "store": kind,
        "requests": args.cache_requests,
        "hit_rate": s.hit_rate,
        "hit_ttft_p50_ms": 1000 * percentile(hit_ttfts, 0.5),
        "hit_ttft_p99_ms": 1000 * percentile(hit_ttfts, 0.99),
        "store_errors": s.store_errors,
    }


async def _caches(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    rows = [await _cache_row(args, "memory", MemoryStore())]
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="critpath-bench-") as tmp:
        rows.append(await _cache_row(args, "sqlite", SQLiteStore(Path(tmp) / "cache.db")))
    if args.no_redis:
        return rows, notes
    try:
        from critpath.caching.redis_store import RedisStore
    except ImportError:
        notes.append("redis skipped: redis-py is not installed")
        return rows, notes
    local: _LocalRedis | None = None
    url = args.redis_url
    try:
        if url is None:
            try:
                local = _LocalRedis()
            except FileNotFoundError:
                notes.append("redis skipped: no redis-server on PATH (or pass --redis-url)")
                return rows, notes
            await local.ready()
            url = local.url
        rows.append(await _cache_row(args, "redis", RedisStore(url, prefix="critpath:bench:")))
    finally:
        if local is not None:
            local.stop()
    return rows, notes


# ---- 3. coalescing ------------------------------------------------------------------


async def _coalescing(args: argparse.Namespace) -> dict[str, Any]:
    upstream = SimulatedModel("coalesced", profile=args.profile, seed=args.seed, time_scale=0.1)
    cache = Cache(upstream)
    req = make_request(messages="the same question", temperature=0, max_tokens=32)
    answers = await asyncio.gather(*(complete(cache, req) for _ in range(args.coalesce)))
    return {
        "requests": args.coalesce,
        "upstream_calls": upstream.stats.requests,
        "identical_answers": len({a.text for a in answers}) == 1,
    }


# ---- the run ------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.profile not in PROFILES:
        raise SystemExit(f"unknown profile {args.profile!r}; known: {sorted(PROFILES)}")
    if min(args.replicas, args.conversations, args.turns, args.coalesce) < 1:
        raise SystemExit("--replicas, --conversations, --turns and --coalesce must be >= 1")
    wall = time.perf_counter()
    routing = await asyncio.to_thread(run_virtual, _routing(args))
    caches, notes = await _caches(args)
    coalescing = await _coalescing(args)
    return {
        "profile": args.profile,
        "replicas": args.replicas,
        "workload": {
            "conversations": args.conversations,
            "turns": args.turns,
            "rate": args.rate,
            "think_s": args.think,
            "system_tokens": args.system_tokens,
            "user_tokens": args.user_tokens,
            "cache_blocks": args.cache_blocks,
            "max_num_seqs": args.max_num_seqs,
            "hot_rate": args.hot_rate,
            "hot_questions": args.hot_questions,
            "doc_tokens": args.doc_tokens,
        },
        "routing": routing,
        "goals": _goals(routing, caches),
        "cache": caches,
        "coalescing": coalescing,
        "notes": notes,
        "wall_s": time.perf_counter() - wall,
    }


def _goals(routing: list[dict[str, Any]], caches: list[dict[str, Any]]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for scenario in ("chat", "hot"):
        rows = {r["strategy"]: r for r in routing if r["scenario"] == scenario}
        prefix, p2c, rr = rows["prefix"], rows["p2c"], rows["round_robin"]
        out[f"{scenario}_ttft_p50_half_of_p2c"] = prefix["ttft_p50_ms"] <= 0.5 * p2c["ttft_p50_ms"]
        out[f"{scenario}_ttft_p99_no_worse_than_p2c"] = prefix["ttft_p99_ms"] <= p2c["ttft_p99_ms"]
        out[f"{scenario}_hit_rate_3x_round_robin"] = prefix["hit_rate"] >= 3 * rr["hit_rate"]
    for row in caches:
        limit = 1.0 if row["store"] == "memory" else 5.0
        out[f"{row['store']}_hit_ttft_p50_within_{limit:g}ms"] = row["hit_ttft_p50_ms"] <= limit
    return out


def render(r: dict[str, Any]) -> str:
    w = r["workload"]
    lines = [
        f"{r['replicas']} x {r['profile']} replicas (max_num_seqs {w['max_num_seqs']}, "
        f"{w['cache_blocks']} prefix-cache blocks each); {w['conversations']} conversations "
        f"x {w['turns']} turns at {w['rate']}/s, system prompt {w['system_tokens']} tokens; "
        f"hot: + {w['hot_questions']} questions on a {w['doc_tokens']}-token document at "
        f"{w['hot_rate']}/s",
        "scenario  strategy          TTFT p50   TTFT p99   e2e p50    e2e p99  hit rate  "
        "max share",
    ]
    for row in r["routing"]:
        lines.append(
            f"{row['scenario']:<9} {row['strategy']:<16} {row['ttft_p50_ms']:8.1f}  "
            f"{row['ttft_p99_ms']:9.1f}  {row['e2e_p50_ms']:8.1f}  {row['e2e_p99_ms']:9.1f}  "
            f"{row['hit_rate']:8.1%}  {row['max_replica_share']:8.1%}"
        )
    lines.append("response cache   hit rate   hit TTFT p50 (ms)   p99 (ms)")
    for row in r["cache"]:
        lines.append(
            f"{row['store']:<16} {row['hit_rate']:8.1%}   {row['hit_ttft_p50_ms']:17.3f}"
            f"   {row['hit_ttft_p99_ms']:8.3f}"
        )
    c = r["coalescing"]
    lines.append(f"coalescing: {c['requests']} identical concurrent requests -> "
                 f"{c['upstream_calls']} upstream call(s)")  # fmt: skip
    lines += [f"note: {n}" for n in r["notes"]]
    lines.append("goals: " + ", ".join(f"{k} {'met' if v else 'MISSED'}"
                                       for k, v in r["goals"].items()))  # fmt: skip
    lines.append(f"wall {r['wall_s']:.1f} s")
    return "\n".join(lines)
