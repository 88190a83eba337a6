"""A profile as text (a table per cell, the server's counters, the fitted model), a
verification as text, and the batching trade-off as an SVG (``critpath.plots``)."""

from __future__ import annotations

import math

from critpath.bench.plots import lines_svg
from critpath.profile.document import CellResult, ServerProfile
from critpath.profile.metrics import derived
from critpath.profile.plan import Phase
from critpath.profile.verify import Verification

__all__ = ["render", "render_verification", "tradeoff_svg"]


def _ms(v: float) -> str:
    return "-" if math.isnan(v) else f"{v * 1000:.1f}"


def _num(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.0f}"


def _row(c: CellResult) -> str:
    s = c.spec
    rates = derived(c.counters)
    extra = []
    if "prefix_hit_rate" in rates:
        extra.append(f"prefix hits {rates['prefix_hit_rate']:.0%}")
    if "spec_acceptance" in rates:
        extra.append(f"accepted {rates['spec_acceptance']:.0%} "
                     f"({rates['spec_accepted_per_draft']:.2f}/draft)")  # fmt: skip
    if c.counters.get("preemptions"):
        extra.append(f"preempted {c.counters['preemptions']:.0f}")
    if c.gauges.get("max_waiting"):
        extra.append(f"queued <= {c.gauges['max_waiting']:.0f}")
    if c.errors:
        extra.append("errors " + ", ".join(f"{k} x{v}" for k, v in c.errors.items()))
    if not c.complete:
        extra.append("stopped early")
    return (f"{s.phase:<12} {s.text:<10} {c.prompt_tokens:>6.0f} {s.output_tokens:>4} "
            f"{s.concurrency:>3} {len(c.ok):>3}  "
            f"{_ms(c.quantile('ttft', 0.5)):>7} {_ms(c.quantile('ttft', 0.9)):>7}  "
            f"{_ms(c.quantile('tpot', 0.5)):>6} {_ms(c.quantile('tpot', 0.9)):>6}  "
            f"{_num(c.per_user_tokens_per_s):>6} {_num(c.total_tokens_per_s):>6}  "
            + "; ".join(extra))  # fmt: skip


def render(profile: ServerProfile) -> str:
    """The profile as a table (ms; tokens/s) with the fitted simulator profile."""
    lines = [
        f"profile of {profile.model} at {profile.base_url} ({profile.server}): "
        f"{profile.requests_sent} requests in {profile.elapsed_s:.1f} s"
        + (f", stopped by {profile.stopped}" if profile.stopped else ""),
        f"prompt tokens per word: {profile.scale.per_word:.2f}",
        "",
        f"{'phase':<12} {'text':<10} {'prompt':>6} {'out':>4} {'c':>3} {'n':>3}  "
        f"{'TTFT50':>7} {'TTFT90':>7}  {'TPOT50':>6} {'TPOT90':>6}  {'user/s':>6} "
        f"{'total/s':>6}",
    ]
    lines += [_row(c) for c in profile.cells]
    f = profile.fit
    lines += [
        "",
        "fitted simulator profile (critpath sim-server --profile FILE):",
        f"  TTFT = {f.get('queue_s', 0) * 1000:.2f} ms + "
        f"{f.get('prefill_per_token_s', 0) * 1e6:.2f} us x prompt tokens "
        f"(spread sigma {f.get('ttft_sigma', 0):.2f}), +"
        f"{f.get('ttft_batch_slowdown', 0):.1%} per other running sequence",
        f"  TPOT p50 {f.get('tpot_p50_s', 0) * 1000:.2f} ms at one sequence, +"
        f"{f.get('batch_slowdown', 0):.1%} per extra running sequence",
        f"  max_num_seqs {f.get('max_num_seqs', 0):.0f} "
        + ("(seen full on /metrics)" if f.get("max_num_seqs_observed") else "(never seen full)"),
    ]
    return "\n".join(lines)


def render_verification(v: Verification) -> str:
    lines = [f"{'cell':<44} {'metric':<5} {'q':>4} {'measured':>9} {'simulated':>9} {'error':>7}"]
    for r in v.rows:
        mark = "" if abs(r.error) <= v.tolerance else "  MISS"
        lines.append(f"{r.cell:<44} {r.metric:<5} {r.q:>4.2f} {r.measured * 1000:>9.2f} "
                     f"{r.simulated * 1000:>9.2f} {r.error:>+7.1%}{mark}")  # fmt: skip
    within = len(v.rows) - len(v.failures)
    lines.append(f"{within}/{len(v.rows)} quantiles within {v.tolerance:.0%} (ms); "
                 + ("passed" if v.passed else "FAILED"))  # fmt: skip
    return "\n".join(lines)


def tradeoff_svg(profile: ServerProfile) -> str:
    """Per-user and total output tokens/s against concurrency (the concurrency cells)."""
    cells = sorted(profile.by_phase(Phase.CONCURRENCY), key=lambda c: c.spec.concurrency)
    series = {
        "per-user tokens/s (1 / TPOT p50)": [
            (float(c.spec.concurrency), c.per_user_tokens_per_s) for c in cells
        ],
        "total tokens/s": [(float(c.spec.concurrency), c.total_tokens_per_s) for c in cells],
    }
    return lines_svg(
        series,
        title=f"Batching trade-off: {profile.model} ({profile.server})",
        x_label="concurrent requests",
        y_label="output tokens / s",
        log_x=True,
        log_y=True,
    )
