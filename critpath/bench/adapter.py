"""``critpath bench adapter``: the critpath HTTP adapter vs the official ``openai`` client.

The same streamed requests against the same server, in one run: interleaved rounds
(critpath, then openai) at a fixed concurrency, so both see the same server state.
Reports requests/s, median and p99 end-to-end latency and TTFT of each, their ratio
(critpath / openai, median: below 1.0 is faster), and the SSE chunks per second the
critpath adapter parsed.

Without ``--base-url`` it starts ``critpath.bench._sse_server``, an instant local SSE
server, so the figures are the clients' own cost; with ``--base-url URL --model NAME``
it measures against a real server such as vLLM (add ``--ignore-eos`` there so every
answer has ``--max-tokens`` tokens).

The ``openai`` client is a peer, not a dependency: when it is not installed its side
is reported as skipped (``"openai": {"skipped": "not installed"}``) and the critpath
adapter is measured alone.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from critpath.adapters import OpenAICompatible, make_request
from critpath.bench import peers
from critpath.errors import ConfigError

__all__ = ["VIRTUAL_TIME", "add_arguments", "render", "run"]

VIRTUAL_TIME = False  # real sockets, real time

Call = Callable[[], Awaitable[tuple[float, float, int]]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", default=None, help="server (default: a local instant one)")
    parser.add_argument("--model", default="bench")
    parser.add_argument("--requests", type=int, default=400, help="per client")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--completions", action="store_true", help="/v1/completions, not chat")
    parser.add_argument("--ignore-eos", action="store_true", help="send vLLM's ignore_eos")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _wait_port(port: int, proc: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        if proc.returncode is not None:
            raise ConfigError("the benchmark SSE server exited")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise ConfigError("the benchmark SSE server did not start")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _batch(
    call: Call, n: int, concurrency: int, failed: Counter[str] | None = None
) -> tuple[float, list[tuple[float, float, int]]]:
    """``n`` calls, ``concurrency`` at a time; a call that fails is counted in ``failed``
    (by exception type) and the others go on: one failure never stops the benchmark."""
    results: list[tuple[float, float, int]] = []
    queue = iter(range(n))
    failures = failed if failed is not None else Counter()

    async def worker() -> None:
        for _ in queue:
            try:
                results.append(await call())
            except Exception as exc:  # a busy or broken server: counted, reported
                failures[type(exc).__name__] += 1

    t = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    return time.perf_counter() - t, results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if min(args.requests, args.concurrency, args.rounds, args.max_tokens) < 1:
        raise ConfigError("--requests, --concurrency, --rounds and --max-tokens must be >= 1")
    proc: asyncio.subprocess.Process | None = None
    base = args.base_url
    if base is None:
        port = _free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "critpath.bench._sse_server", str(port), str(args.max_tokens)
        )
        await _wait_port(port, proc)
        base = f"http://127.0.0.1:{port}/v1"
    try:
        return await _measure(args, base)
    finally:
        if proc is not None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)


async def _measure(args: argparse.Namespace, base: str) -> dict[str, Any]:
    chat = not args.completions
    extra = {"ignore_eos": True} if args.ignore_eos else {}
    fields: dict[str, Any] = {"messages": "Say something."} if chat else {"prompt": "Say"}
    request = make_request(**fields, max_tokens=args.max_tokens, extra_body=extra)
    ours = OpenAICompatible(base, args.model, retry=None, max_connections=args.concurrency * 2)
    theirs: Any = None
    if peers.installed("openai"):
        from openai import AsyncOpenAI

        theirs = AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)

    async def critpath_call() -> tuple[float, float, int]:
        t = time.perf_counter()
        ttft = 0.0
        chunks = 0
        async for c in ours.stream(request):
            if c.text and not ttft:
                ttft = time.perf_counter() - t
            chunks += 1
        return time.perf_counter() - t, ttft, chunks

    async def openai_call() -> tuple[float, float, int]:
        t = time.perf_counter()
        ttft = 0.0
        chunks = 0
        common: dict[str, Any] = {
            "model": args.model, "max_tokens": args.max_tokens, "stream": True,
            "stream_options": {"include_usage": True}, "extra_body": extra or None,
        }  # fmt: skip
        if chat:
            stream = await theirs.chat.completions.create(
                messages=[{"role": "user", "content": "Say something."}], **common
            )
            async for c in stream:
                if c.choices and c.choices[0].delta.content and not ttft:
                    ttft = time.perf_counter() - t
                chunks += 1
        else:
            stream2 = await theirs.completions.create(prompt="Say", **common)
            async for c2 in stream2:
                if c2.choices and c2.choices[0].text and not ttft:
                    ttft = time.perf_counter() - t
                chunks += 1
        return time.perf_counter() - t, ttft, chunks

    sides: dict[str, Call] = {"critpath": critpath_call}
    if theirs is not None:
        sides["openai"] = openai_call
    for call in sides.values():  # warm-up: connections, imports, server caches
        await _batch(call, args.concurrency * 2, args.concurrency)
    per_round = max(1, args.requests // args.rounds)
    wall = dict.fromkeys(sides, 0.0)
    samples: dict[str, list[tuple[float, float, int]]] = {k: [] for k in sides}
    failed: dict[str, Counter[str]] = {k: Counter() for k in sides}
    for _ in range(args.rounds):
        for name, call in sides.items():
            took, res = await _batch(call, per_round, args.concurrency, failed[name])
            wall[name] += took
            samples[name] += res
    await ours.aclose()
    if theirs is not None:
        await theirs.close()

    out: dict[str, Any] = {
        "base_url": base, "model": args.model, "endpoint": "chat" if chat else "completions",
        "requests_per_client": per_round * args.rounds, "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
    }  # fmt: skip
    for name in sides:
        lat = [s[0] * 1000 for s in samples[name]]
        ttft = [s[1] * 1000 for s in samples[name]]
        out[f"{name}_failed"] = dict(failed[name])
        if not lat:
            raise ConfigError(f"every {name} request failed: {dict(failed[name])}")
        out[f"{name}_rps"] = len(lat) / wall[name]
        out[f"{name}_latency_ms"] = {"p50": statistics.median(lat), "p99": _pct(lat, 0.99)}
        out[f"{name}_ttft_ms"] = {"p50": statistics.median(ttft), "p99": _pct(ttft, 0.99)}
    if theirs is None:
        out["openai"] = peers.skipped(peers.NOT_INSTALLED)
    else:
        out["openai"] = {"version": peers.version("openai")}
        out["ratio_vs_openai_client"] = (
            out["critpath_latency_ms"]["p50"] / out["openai_latency_ms"]["p50"]
        )
        out["p99_ratio_vs_openai_client"] = (
            out["critpath_latency_ms"]["p99"] / out["openai_latency_ms"]["p99"]
        )
    out["sse_chunks_per_s"] = sum(s[2] for s in samples["critpath"]) / wall["critpath"]
    return out


def render(r: dict[str, Any]) -> str:
    lines = [
        f"{r['endpoint']} x {r['requests_per_client']} streamed requests, "
        f"concurrency {r['concurrency']}, {r['max_tokens']} tokens, {r['base_url']}",
        f"critpath: {r['critpath_rps']:.0f} req/s, "
        f"p50 {r['critpath_latency_ms']['p50']:.2f} ms, "
        f"p99 {r['critpath_latency_ms']['p99']:.2f} ms",
    ]
    if "skipped" in r.get("openai", {}):
        lines.append(f"openai:   skipped ({r['openai']['skipped']})")
    else:
        lines += [
            f"openai:   {r['openai_rps']:.0f} req/s, p50 {r['openai_latency_ms']['p50']:.2f} ms, "
            f"p99 {r['openai_latency_ms']['p99']:.2f} ms",
            f"latency ratio critpath/openai: p50 {r['ratio_vs_openai_client']:.3f}, "
            f"p99 {r['p99_ratio_vs_openai_client']:.3f}",
        ]
    lines.append(f"critpath parsed {r['sse_chunks_per_s']:.0f} SSE chunks/s")
    for side in ("critpath", "openai"):
        failed = r.get(f"{side}_failed")
        if failed:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(failed.items()))
            lines.append(f"{side}: failed requests (not in the figures above): {kinds}")
    return "\n".join(lines)
