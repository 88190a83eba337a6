"""Small self-contained SVG charts (no plotting library): scatter and line plots.

Used by benchmarks and load tests to draw accuracy against latency, or latency
against offered load. Axes may be logarithmic; every point is labelled or listed in a
legend, so the chart reads without the table beside it.

>>> svg = scatter_svg([Point("a", 100.0, 0.5), Point("b", 900.0, 0.7)],
...                   title="t", x_label="ms", y_label="accuracy")
>>> svg.startswith("<svg") and "a</text>" in svg
True
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from critpath.errors import ConfigError

__all__ = ["Point", "check_plot_path", "lines_svg", "scatter_svg"]

_W, _H = 860, 520
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 250, 40, 56
_COLOURS = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
)  # fmt: skip


def check_plot_path(path: str | None) -> None:
    """Fail before a long run, not after it, when a plot could not be written there."""
    if path and not Path(path).resolve().parent.is_dir():
        raise ConfigError(f"no folder for the plot {path!r}")


@dataclass(frozen=True, slots=True)
class Point:
    """One labelled point; ``group`` picks its colour (same group, same colour)."""

    label: str
    x: float
    y: float
    group: str = ""


class _Axis:
    def __init__(self, values: Sequence[float], lo_px: float, hi_px: float, log: bool) -> None:
        finite = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
        if not finite:
            raise ConfigError("nothing to plot: no finite values" + (" > 0" if log else ""))
        lo, hi = min(finite), max(finite)
        if log:
            lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
            if hi <= lo:  # every value the same power of ten
                hi = lo * 10
        else:
            pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
            lo, hi = lo - pad, hi + pad
        self.lo, self.hi, self.log = lo, hi, log
        self.lo_px, self.hi_px = lo_px, hi_px

    def _t(self, v: float) -> float:
        return math.log10(v) if self.log else v

    def px(self, v: float) -> float:
        a, b = self._t(self.lo), self._t(self.hi)
        return self.lo_px + (self._t(v) - a) / (b - a) * (self.hi_px - self.lo_px)

    def ticks(self) -> list[float]:
        if self.log:
            out, decade = [], self.lo
            while decade <= self.hi * 1.0001:
                out += [m * decade for m in (1, 2, 5) if m * decade <= self.hi * 1.0001]
                decade *= 10
            return out
        span = self.hi - self.lo
        step = 10 ** math.floor(math.log10(span / 5))
        for m in (1, 2, 5, 10):
            if span / (step * m) <= 7:
                step *= m
                break
        first = math.ceil(self.lo / step) * step
        return [first + i * step for i in range(int((self.hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.4g}"
    return f"{v:.3g}"


def _frame(x: _Axis, y: _Axis, title: str, x_label: str, y_label: str) -> list[str]:
    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_W / 2}" y="22" text-anchor="middle" font-size="15">{e(title)}</text>',
    ]
    x0, x1, y0, y1 = _LEFT, _W - _RIGHT, _H - _BOTTOM, _TOP
    for t in x.ticks():
        px = x.px(t)
        out.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y1}" stroke="#eee"/>')
        out.append(f'<text x="{px:.1f}" y="{y0 + 16}" text-anchor="middle">{_fmt(t)}</text>')
    for t in y.ticks():
        py = y.px(t)
        out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" '
               'fill="none" stroke="#444"/>')  # fmt: skip
    out.append(f'<text x="{(x0 + x1) / 2}" y="{_H - 14}" text-anchor="middle">{e(x_label)}</text>')
    out.append(f'<text transform="translate(16 {(y0 + y1) / 2}) rotate(-90)" '
               f'text-anchor="middle">{e(y_label)}</text>')  # fmt: skip
    return out


def _colour_of(groups: Sequence[str]) -> dict[str, str]:
    return {g: _COLOURS[i % len(_COLOURS)] for i, g in enumerate(dict.fromkeys(groups))}


def scatter_svg(
    points: Sequence[Point],
    *,
    title: str,
    x_label: str,
    y_label: str,
    log_x: bool = True,
    log_y: bool = False,
) -> str:
    """A scatter plot, each point labelled beside it; colours by ``group`` (legend)."""
    if not points:
        raise ConfigError("nothing to plot: no points")
    x = _Axis([p.x for p in points], _LEFT, _W - _RIGHT, log_x)
    y = _Axis([p.y for p in points], _H - _BOTTOM, _TOP, log_y)
    out = _frame(x, y, title, x_label, y_label)
    colours = _colour_of([p.group for p in points])
    for p in points:
        if not (math.isfinite(p.x) and math.isfinite(p.y)) or (log_x and p.x <= 0):
            continue
        if log_y and p.y <= 0:
            continue
        px, py, c = x.px(p.x), y.px(p.y), colours[p.group]
        tip = f"{html.escape(p.label)}: {_fmt(p.x)}, {_fmt(p.y)}"
        out.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{c}"><title>{tip}</title></circle>'
        )
        out.append(f'<text x="{px + 6:.1f}" y="{py - 5:.1f}" font-size="10" fill="{c}">'
                   f"{html.escape(p.label)}</text>")  # fmt: skip
    out += _legend(colours)
    out.append("</svg>")
    return "\n".join(out)


def lines_svg(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    log_x: bool = False,
    log_y: bool = True,
) -> str:
    """One polyline with markers per series (e.g. p99 latency against offered rate)."""
    xs = [px for pts in series.values() for px, _ in pts]
    ys = [py for pts in series.values() for _, py in pts]
    if not xs:
        raise ConfigError("nothing to plot: no series")
    x = _Axis(xs, _LEFT, _W - _RIGHT, log_x)
    y = _Axis(ys, _H - _BOTTOM, _TOP, log_y)
    out = _frame(x, y, title, x_label, y_label)
    colours = _colour_of(list(series))
    for name, pts in series.items():
        ok = [(a, b) for a, b in pts if math.isfinite(a) and math.isfinite(b)
              and (a > 0 or not log_x) and (b > 0 or not log_y)]  # fmt: skip
        c = colours[name]
        coords = " ".join(f"{x.px(a):.1f},{y.px(b):.1f}" for a, b in ok)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{c}" stroke-width="2"/>')
        for a, b in ok:
            tip = f"{html.escape(name)}: {_fmt(a)}, {_fmt(b)}"
            out.append(
                f'<circle cx="{x.px(a):.1f}" cy="{y.px(b):.1f}" r="3" fill="{c}">'
                f"<title>{tip}</title></circle>"
            )
    out += _legend(colours)
    out.append("</svg>")
    return "\n".join(out)


def _legend(colours: Mapping[str, str]) -> list[str]:
    out = []
    named = [(g, c) for g, c in colours.items() if g]
    for i, (g, c) in enumerate(named):
        yy = _TOP + 8 + 18 * i
        out.append(f'<rect x="{_W - _RIGHT + 16}" y="{yy - 9}" width="10" height="10" fill="{c}"/>')
        out.append(f'<text x="{_W - _RIGHT + 32}" y="{yy}">{html.escape(g)}</text>')
    return out
