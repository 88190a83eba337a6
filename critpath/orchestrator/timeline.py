"""Draw a run report as a timeline: an SVG Gantt chart, or a self-contained HTML page.

One row per step (or map item) in start order. Bars on the **observed path** (what
the run's finish waited on) are red and linked end to start by a red line, with the
resource waits on that path drawn as red stripes: the red path runs from the run's
start to its end with no gap left unexplained (what remains between links is runtime
overhead). Bars on the dependency-only **critical path** have a dashed dark outline
and a bold label. Queueing off the observed path (ready but waiting for a slot) is a
thin grey lead-in; cancelled steps are hatched; skipped and never-run steps are listed
with no bar. A step's sub-steps (an agent's model turns and tool calls) are rows just
below it, named ``step/sub-step``. Hover a bar, a wait or a link for details.
"""

from __future__ import annotations

import html
import itertools
from typing import TYPE_CHECKING

from critpath.orchestrator.observed import OTHER_RUN, PathStep, Release

if TYPE_CHECKING:
    from critpath.orchestrator.report import RunReport, StepReport, SubStepReport

__all__ = ["render_html", "render_svg"]

_COLOURS = {
    "ok": "#4c78a8",
    "fallback": "#f58518",
    "failed": "#54242b",
    "cancelled": "url(#hatch)",
    "running": "url(#hatch)",
}
_OBSERVED = "#e45756"
_CRITICAL_OUTLINE = "#3b1f5c"
_STRIPES = f"repeating-linear-gradient(45deg, {_OBSERVED} 0 2px, #fbe3e3 2px 5px)"
_ROW = 22
_LEFT = 190
_WIDTH = 900


def _nice_step(total_ms: float) -> float:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if total_ms / step <= 10:
            return float(step)
    return float(10 ** len(str(int(total_ms))))


def _row_order(report: RunReport) -> list[StepReport]:
    rows: list[StepReport] = []
    for s in sorted(
        report.steps, key=lambda s: (s.start is None, s.start if s.start is not None else 0.0)
    ):
        rows.append(s)
        rows.extend(_sub_row(s, sub) for sub in s.substeps)
    return rows


def _sub_row(s: StepReport, sub: SubStepReport) -> StepReport:
    """A sub-step drawn as a row of its own (``step/sub-step``)."""
    from critpath.orchestrator.report import StepReport

    return StepReport(
        name=f"{s.name}/{sub.name}", step=s.step, kind=sub.kind.value, status=sub.status,
        deps=[f"{s.name}/{d}" for d in sub.deps], start=sub.start, end=sub.end,
        duration=sub.duration, slack=sub.slack, critical=sub.critical, error=sub.error,
        speculative=sub.speculative,
    )  # fmt: skip


def render_svg(report: RunReport) -> str:
    rows = _row_order(report)
    total = max(report.makespan, max((s.end or 0.0 for s in rows), default=0.0), 1e-6)
    scale = _WIDTH / total
    top = 30
    height = top + _ROW * len(rows) + 20
    w = _LEFT + _WIDTH + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" '
        f'viewBox="0 0 {w} {height}" font-family="system-ui, sans-serif" font-size="12">',
        "<defs><pattern id='hatch' patternUnits='userSpaceOnUse' width='6' height='6' "
        "patternTransform='rotate(45)'><rect width='6' height='6' fill='#bbb'/>"
        "<line x1='0' y1='0' x2='0' y2='6' stroke='#777' stroke-width='3'/></pattern>"
        "<pattern id='wait' patternUnits='userSpaceOnUse' width='6' height='6' "
        f"patternTransform='rotate(45)'><rect width='6' height='6' fill='#fbe3e3'/>"
        f"<line x1='0' y1='0' x2='0' y2='6' stroke='{_OBSERVED}' stroke-width='2'/>"
        "</pattern></defs>",
    ]
    tick = _nice_step(total * 1000)
    t = 0.0
    while t <= total * 1000 + 1e-9:
        x = _LEFT + t / 1000 * scale
        out.append(
            f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 20}" '
            f'stroke="#e6e6e6"/><text x="{x:.1f}" y="{top - 10}" text-anchor="middle" '
            f'fill="#555">{t:g} ms</text>'
        )
        t += tick
    row_of = {s.name: i for i, s in enumerate(rows)}
    on_path = {p.name: p for p in report.observed_path}
    for i in range(len(rows)):
        y = top + i * _ROW
        if i % 2:
            out.append(f'<rect x="0" y="{y}" width="{w}" height="{_ROW}" fill="#fafafa"/>')
    out += _path_links(report.observed_path, row_of, top, scale)
    for i, s in enumerate(rows):
        y = top + i * _ROW
        label = html.escape(s.name if len(s.name) <= 26 else s.name[:25] + "…")
        weight = "bold" if s.critical else "normal"
        colour = f' fill="{_OBSERVED}"' if s.name in on_path else ""
        out.append(
            f'<text x="{_LEFT - 8}" y="{y + 15}" text-anchor="end" font-weight="{weight}"'
            f"{colour}>{label}</text>"
        )
        entry = on_path.get(s.name)
        if entry is not None and entry.released is Release.RESOURCE:
            out.append(_wait_band(entry, y, scale, report.makespan))
        if s.start is None:
            out.append(
                f'<text x="{_LEFT + 4}" y="{y + 15}" fill="#999" font-style="italic">'
                f"{html.escape(s.status)}{': ' + html.escape(s.error) if s.error else ''}</text>"
            )
            continue
        if s.ready is not None and s.start > s.ready and entry is None:
            x0 = _LEFT + s.ready * scale
            out.append(
                f'<rect x="{x0:.1f}" y="{y + 9}" width="{(s.start - s.ready) * scale:.1f}" '
                f'height="4" fill="#ccc"><title>queued {(s.start - s.ready) * 1000:.1f} ms'
                "</title></rect>"
            )
        end = s.end if s.end is not None else report.makespan
        observed = entry is not None and s.status in ("ok", "fallback")
        fill = _OBSERVED if observed else _COLOURS.get(s.status, "#999")
        tip = (
            f"{s.name} [{s.status}] {s.start * 1000:.1f} → {end * 1000:.1f} ms "
            f"({(end - s.start) * 1000:.1f} ms)"
        )
        if s.slack is not None:
            tip += f", slack {s.slack * 1000:.1f} ms"
        if s.priority is not None:
            tip += f", priority {s.priority}"
        if s.resource:
            tip += f", resource {s.resource}"
        if s.error:
            tip += f", {s.error}"
        if entry is not None:
            tip += ", on the observed path"
        if s.critical:
            tip += ", on the critical path"
        stroke = (
            f' stroke="{_CRITICAL_OUTLINE}" stroke-width="2" stroke-dasharray="4 2"'
            if s.critical
            else f' stroke="{_OBSERVED}" stroke-width="2"'
            if entry is not None
            else ""
        )
        out.append(
            f'<rect class="bar" data-step="{html.escape(s.name)}" '
            f'x="{_LEFT + s.start * scale:.1f}" '
            f'y="{y + 3}" width="{max((end - s.start) * scale, 1.0):.1f}" height="{_ROW - 6}" '
            f'rx="3" fill="{fill}"{stroke}><title>{html.escape(tip)}</title></rect>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _wait_band(p: PathStep, y: int, scale: float, makespan: float) -> str:
    """The resource wait of an observed-path record: red stripes from ready to start."""
    if p.ready is None:
        return ""
    start = p.start if p.start is not None else makespan
    slot = f"a slot of {p.resource}" if p.resource else "a concurrency slot"
    by = {None: "", OTHER_RUN: ", freed by another run"}.get(p.by, f", freed by {p.by}")
    tip = f"{p.name} waited {(start - p.ready) * 1000:.1f} ms for {slot}{by}"
    return (
        f'<rect class="path-wait" data-step="{html.escape(p.name)}" '
        f'x="{_LEFT + p.ready * scale:.1f}" y="{y + 5}" '
        f'width="{max((start - p.ready) * scale, 1.0):.1f}" height="{_ROW - 10}" '
        f'fill="url(#wait)" stroke="{_OBSERVED}" stroke-width="0.5">'
        f"<title>{html.escape(tip)}</title></rect>"
    )


def _path_links(path: list[PathStep], row_of: dict[str, int], top: int, scale: float) -> list[str]:
    """Red lines handing the observed path on: down (or up) from each record's end to
    the next record's row, then along that row to where it starts."""
    out: list[str] = []
    for before, after in itertools.pairwise(path):
        if before.end is None or before.name not in row_of or after.name not in row_of:
            continue
        x = _LEFT + before.end * scale
        y0 = top + row_of[before.name] * _ROW + _ROW / 2
        y1 = top + row_of[after.name] * _ROW + _ROW / 2
        x1 = _LEFT + (after.start if after.start is not None else before.end) * scale
        tip = f"{after.name} released by {after.released.value}"
        tip += f" ({after.by})" if after.by else ""
        if after.gap > 0:
            tip += f"; {after.gap * 1000:.1f} ms overhead"
        out.append(
            f'<path class="path-link" d="M{x:.1f},{y0:.1f} V{y1:.1f} H{max(x1, x):.1f}" '
            f'fill="none" stroke="{_OBSERVED}" stroke-width="1.5">'
            f"<title>{html.escape(tip)}</title></path>"
        )
    return out


def render_html(report: RunReport) -> str:
    title = f"critpath run {report.run_id} — {report.graph}"
    summary = (
        f"<b>{html.escape(report.status)}</b> in {report.makespan * 1000:.1f} ms · "
        f"work {report.work * 1000:.1f} ms · span {report.span * 1000:.1f} ms · "
        f"parallelism {report.parallelism:.2f} · efficiency {report.efficiency:.3f}"
    )
    path = " → ".join(html.escape(n) for n in report.critical_path) or "(none)"
    observed = " → ".join(html.escape(p.name) for p in report.observed_path) or "(none)"
    b = report.breakdown
    breakdown = (
        ""
        if b is None
        else f"<p>Makespan {b.makespan * 1000:.1f} ms = path work {b.path_work * 1000:.1f}"
        f" + resource wait {b.resource_wait * 1000:.1f} + overhead {b.overhead * 1000:.1f}"
        f" ms (span {b.span * 1000:.1f} ms)</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
.legend span {{ display: inline-block; margin-right: 16px; }}
.sw {{ display: inline-block; width: 12px; height: 12px; vertical-align: middle;
      margin-right: 4px; border-radius: 2px; }}
</style></head><body>
<h1 style="font-size:18px">{html.escape(title)}</h1>
<p>{summary}</p>
<p>Observed path (what the finish waited on): {observed}</p>
{breakdown}
<p>Critical path (dependencies only): {path}</p>
<p class="legend"><span><i class="sw" style="background:{_OBSERVED}"></i>observed path</span>
<span><i class="sw" style="background:{_STRIPES}"></i>resource wait on it</span>
<span><i class="sw" style="border:2px dashed {_CRITICAL_OUTLINE}"></i>critical path</span>
<span><i class="sw" style="background:#4c78a8"></i>ok</span>
<span><i class="sw" style="background:#f58518"></i>fallback</span>
<span><i class="sw" style="background:#54242b"></i>failed</span>
<span><i class="sw" style="background:#999"></i>cancelled</span>
<span><i class="sw" style="background:#ccc"></i>queued</span></p>
{render_svg(report)}
<details><summary>Report (text)</summary><pre>{html.escape(report.to_text())}</pre></details>
</body></html>
"""
