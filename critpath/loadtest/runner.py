"""The open-loop runner: send requests at their arrival times, measure, summarise."""

from __future__ import annotations

import asyncio
import math
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from critpath._tasks import cancel_and_wait
from critpath.estimates import percentile
from critpath.loadtest.arrivals import poisson_arrivals
from critpath.loadtest.targets import Target
from critpath.strategies.evaluate import ms

__all__ = ["LoadResult", "Sample", "run_load", "summarise_samples"]

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: when it was sent (seconds from the start), its latency and TTFT
    (``None`` if it failed or never produced a token) and its error, if any."""

    sent: float
    latency: float | None
    ttft: float | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LoadResult:
    target: str
    offered_rate: float
    samples: tuple[Sample, ...]
    wall_s: float
    slo_s: float

    def summary(self) -> dict[str, Any]:
        return summarise_samples(self.samples, wall_s=self.wall_s, slo_s=self.slo_s) | {
            "target": self.target,
            "offered_rate": self.offered_rate,
        }


def summarise_samples(samples: Sequence[Sample], *, wall_s: float, slo_s: float) -> dict[str, Any]:
    """Throughput, goodput (answers within ``slo_s``), percentiles (ms), errors.

    >>> s = [Sample(0.0, 0.5, 0.1), Sample(0.1, 2.0, 0.2), Sample(0.2, None, None, "boom")]
    >>> r = summarise_samples(s, wall_s=2.0, slo_s=1.0)
    >>> r["completed"], r["errors"], r["throughput_rps"], r["goodput_rps"]
    (2, 1, 1.0, 0.5)
    """
    ok = [s for s in samples if s.error is None and s.latency is not None]
    lat = [s.latency for s in ok if s.latency is not None]
    ttft = [s.ttft for s in ok if s.ttft is not None]
    wall = max(wall_s, 1e-9)
    errors = Counter(s.error.split(":", 1)[0] for s in samples if s.error is not None)
    return {
        "requests": len(samples),
        "completed": len(ok),
        "errors": len(samples) - len(ok),
        "error_kinds": dict(errors),
        "wall_s": round(wall_s, 3),
        "throughput_rps": round(len(ok) / wall, 3),
        "goodput_rps": round(sum(1 for x in lat if x <= slo_s) / wall, 3),
        "slo_ms": ms(slo_s),
        "latency_ms": {f"p{p:g}": ms(percentile(lat, p / 100)) for p in PERCENTILES}
        | {"mean": ms(statistics.fmean(lat)) if lat else math.nan},
        "ttft_ms": {f"p{p:g}": ms(percentile(ttft, p / 100)) for p in PERCENTILES},
    }


async def run_load(
    target: Target,
    rate: float,
    *,
    max_requests: int = 200,
    duration: float = 60.0,
    slo_s: float = 1.0,
    drain_s: float = 30.0,
    seed: int = 0,
    on_sample: Callable[[Sample], None] | None = None,
) -> LoadResult:
    """Send ``max_requests`` (or as many as arrive within ``duration``) at Poisson
    arrival times; wait up to ``drain_s`` for the last answers, then cancel what is
    left (counted as errors). Every request is a task of this call: none outlives it."""
    loop = asyncio.get_running_loop()
    arrivals = poisson_arrivals(rate, max_requests=max_requests, duration=duration, seed=seed)
    samples: list[Sample] = []
    t0 = loop.time()

    async def one(i: int, at: float) -> None:
        sent = t0 + at  # the scheduled arrival: a late start counts as latency
        late = loop.time() - sent
        try:
            ttft = await target(i)
            if ttft is not None:
                ttft += late
        except asyncio.CancelledError:
            sample = Sample(sent - t0, None, None, "unfinished: still running when the test ended")
            samples.append(sample)
            if on_sample is not None:
                on_sample(sample)
            raise
        except Exception as exc:
            sample = Sample(sent - t0, None, None, f"{type(exc).__name__}: {exc}")
        else:
            sample = Sample(sent - t0, loop.time() - sent, ttft)
        samples.append(sample)
        if on_sample is not None:
            on_sample(sample)

    tasks: list[asyncio.Task[None]] = []
    try:
        for i, at in enumerate(arrivals):
            delay = t0 + at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, at), name=f"critpath-load-{i}"))
        if tasks:
            await asyncio.wait(tasks, timeout=drain_s)
    finally:
        await cancel_and_wait([t for t in tasks if not t.done()])
    wall = loop.time() - t0
    return LoadResult(target.name, rate, tuple(sorted(samples, key=lambda s: s.sent)), wall, slo_s)
