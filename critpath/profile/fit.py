"""Fit a simulator ``LatencyProfile`` to measured cells.

The simulated model (``critpath.adapters.sim.model``) takes, per request,
TTFT = (queue_s + prefill_per_token_s * prompt tokens) x a log-normal draw x
(1 + ttft_batch_slowdown x (running - 1)), and per
output token tpot_s x (1 + batch_slowdown x (running - 1)) x a per-token and a
per-request log-normal draw, with at most ``max_num_seqs`` requests running and the
rest queued. The fit reads each term off the cells that isolate it:

- TTFT: a least-squares line through the median TTFT of the concurrency-1 cells
  against the prompt tokens the server counted (intercept ``queue_s``, slope
  ``prefill_per_token_s``; both kept >= 0); its spread from the pooled ratios of each
  request's TTFT to its cell's median (sigma = ln(p90 ratio) / z90);
- TPOT: the per-token spread from each request's inter-token gaps (p90 / p50), the
  per-request spread from the pooled TPOT ratios, and ``tpot_s`` from the median TPOT,
  corrected for the mean of the per-token draw;
- ``max_num_seqs``: the most requests the server ran in the cells where requests
  waited (``/metrics``), when it was ever seen full; else the simulator's default;
- ``batch_slowdown``: a line through the origin of TPOT(c) / TPOT(1) - 1 against the
  running requests, min(c, max_num_seqs) - 1, over the concurrency cells;
  ``ttft_batch_slowdown`` the same for TTFT, over the cells that never queue
  (c <= max_num_seqs).

Cells of the prefix and text phases are left out (the simulator has no prefix cache
and no speculative decoding).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from critpath.adapters.sim.profiles import LatencyProfile
from critpath.errors import ConfigError
from critpath.estimates import percentile
from critpath.profile.document import CellResult
from critpath.profile.plan import Phase, TextKind

__all__ = ["fit_latency_profile"]

_Z90 = 1.2815515655446004
_FITTED = (Phase.PROMPT, Phase.OUTPUT, Phase.CONCURRENCY)
_DEFAULT_SEQS = LatencyProfile(0, 0, 0, 0, 0).max_num_seqs


def fit_latency_profile(cells: Sequence[CellResult]) -> tuple[LatencyProfile, dict[str, float]]:
    """The fitted profile and the fit's terms by name (``ConfigError`` without a
    successful concurrency-1 cell)."""
    usable = [c for c in cells if c.spec.phase in _FITTED and c.spec.text is TextKind.RANDOM]
    single = [c for c in usable if c.spec.concurrency == 1 and c.values("ttft")]
    if not single:
        raise ConfigError("no successful requests at concurrency 1: nothing to fit")

    # TTFT against prompt tokens.
    xs = [c.prompt_tokens for c in single]
    ys = [c.quantile("ttft", 0.5) for c in single]
    queue, prefill = _line(xs, ys)
    ttft_ratios = [v / c.quantile("ttft", 0.5) for c in single for v in c.values("ttft")
                   if c.quantile("ttft", 0.5) > 0]  # fmt: skip
    ttft_sigma = _sigma(ttft_ratios)

    # TPOT at one sequence.
    with_tpot = [c for c in single if c.values("tpot")]
    if with_tpot:
        gaps = [math.log(s.itl_p90 / s.itl_p50) / _Z90 for c in with_tpot for s in c.ok
                if s.itl_p50 and s.itl_p90 and s.itl_p90 >= s.itl_p50 > 0]  # fmt: skip
        tpot_sigma = statistics.median(gaps) if gaps else 0.0
        tpot_ratios = [v / c.quantile("tpot", 0.5) for c in with_tpot for v in c.values("tpot")
                       if c.quantile("tpot", 0.5) > 0]  # fmt: skip
        request_sigma = _sigma(tpot_ratios)
        tpot_p50 = statistics.median(v for c in with_tpot for v in c.values("tpot"))
    else:
        tpot_sigma = request_sigma = tpot_p50 = 0.0
    tpot_s = tpot_p50 / math.exp(tpot_sigma**2 / 2)

    # Slots and the slowdown of a batch.
    queued = [c.gauges for c in cells if c.gauges.get("max_waiting", 0.0) >= 1]
    seen_full = any(g.get("max_running", 0.0) >= 1 for g in queued)
    seqs = max(1, round(max(g.get("max_running", 0.0) for g in queued))) if seen_full \
        else _DEFAULT_SEQS  # fmt: skip
    one = next((c for c in usable if c.spec.phase is Phase.CONCURRENCY
                and c.spec.concurrency == 1 and c.values("tpot")), None)  # fmt: skip
    base_tpot = one.quantile("tpot", 0.5) if one is not None else tpot_p50
    num = den = 0.0
    for c in usable:
        if c.spec.phase is not Phase.CONCURRENCY or c.spec.concurrency < 2 or not c.values("tpot"):
            continue
        n = min(c.spec.concurrency, seqs) - 1
        if n <= 0 or base_tpot <= 0:
            continue
        num += (c.quantile("tpot", 0.5) / base_tpot - 1.0) * n
        den += n * n
    slowdown = max(0.0, num / den) if den else 0.0
    base_ttft = one.quantile("ttft", 0.5) if one is not None else math.nan
    num = den = 0.0
    for c in usable:
        if c.spec.phase is not Phase.CONCURRENCY or not 2 <= c.spec.concurrency <= seqs:
            continue
        if not c.values("ttft") or not base_ttft > 0:
            continue
        n = c.spec.concurrency - 1
        num += (c.quantile("ttft", 0.5) / base_ttft - 1.0) * n
        den += n * n
    ttft_slowdown = max(0.0, num / den) if den else 0.0

    profile = LatencyProfile(
        queue_s=queue,
        prefill_per_token_s=prefill,
        ttft_sigma=ttft_sigma,
        tpot_s=tpot_s,
        tpot_sigma=tpot_sigma,
        tpot_request_sigma=request_sigma,
        batch_slowdown=slowdown,
        ttft_batch_slowdown=ttft_slowdown,
        max_num_seqs=seqs,
    )
    terms = {
        "queue_s": queue,
        "prefill_per_token_s": prefill,
        "ttft_sigma": ttft_sigma,
        "tpot_p50_s": tpot_p50,
        "tpot_sigma": tpot_sigma,
        "tpot_request_sigma": request_sigma,
        "batch_slowdown": slowdown,
        "ttft_batch_slowdown": ttft_slowdown,
        "max_num_seqs": float(seqs),
        "max_num_seqs_observed": 1.0 if seen_full else 0.0,
    }
    return profile, terms


def _line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Intercept and slope of the least-squares line, both >= 0."""
    if len(set(xs)) < 2:
        return max(0.0, statistics.median(ys)), 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    slope = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    if slope < 0:
        return max(0.0, my), 0.0
    intercept = my - slope * mx
    if intercept < 0:  # through the origin instead
        slope = math.fsum(x * y for x, y in zip(xs, ys, strict=True)) / math.fsum(x * x for x in xs)
        return 0.0, max(0.0, slope)
    return intercept, slope


def _sigma(ratios: Sequence[float]) -> float:
    """Log-normal sigma whose p90 / p50 is the ratios' (0 with fewer than 2)."""
    if len(ratios) < 2:
        return 0.0
    r90 = percentile(ratios, 0.9)
    return max(0.0, math.log(r90) / _Z90) if r90 > 0 else 0.0
