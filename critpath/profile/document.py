"""A server profile: the plan, every request's timings per cell, and the fitted model.

``ServerProfile.save`` writes one JSON document (``format`` ``critpath-profile/1``,
``PROFILE_FORMAT``); its ``model`` and ``simulator`` keys are what the simulator
reads (``critpath.adapters.sim.measured``), the rest is the evidence: per cell the
requests' TTFT, time per output token (TPOT), end-to-end time and inter-token gaps,
the server's counters and gauges. ``load`` reads one back (``ConfigError`` if it is
not one).

``endpoint_stats()`` is a fresh ``EndpointStats`` whose TTFT, TPOT and end-to-end
estimates hold the baseline cell's samples (concurrency 1, base lengths): pass it to an
adapter (``OpenAICompatible(..., stats=profile.endpoint_stats())``) and the scheduler,
hedging and deadlines read measured figures from the first request instead of
waiting to learn them. Its request counters stay at zero: nothing was served yet.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from critpath.adapters.sim.measured import PROFILE_FORMAT, MeasuredModel, read_profile_json
from critpath.adapters.sim.profiles import LatencyProfile
from critpath.adapters.stats import EndpointStats
from critpath.errors import ConfigError
from critpath.estimates import percentile
from critpath.profile.plan import CellSpec, Phase, ProfilePlan, TextKind
from critpath.profile.prompts import TokenScale

__all__ = ["CellResult", "Sample", "ServerProfile"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: its start (seconds from the start of its cell, or of its slice of
    the cell), its durations (``None`` where it never got there), the tokens the server
    counted, and the error type's name if it failed."""

    start: float
    e2e: float
    ttft: float | None
    tpot: float | None
    prompt_tokens: int | None
    output_tokens: int
    itl_p50: float | None = None
    itl_p90: float | None = None
    error: str | None = None

    def to_list(self) -> list[object]:
        return [_r(self.start), _r(self.e2e), _r(self.ttft), _r(self.tpot), self.prompt_tokens,
                self.output_tokens, _r(self.itl_p50), _r(self.itl_p90), self.error]  # fmt: skip

    @classmethod
    def from_list(cls, row: Sequence[Any]) -> Sample:
        try:
            return cls(*row)
        except TypeError as exc:
            raise ConfigError(f"bad sample in the profile: {row!r}") from exc


SAMPLE_FIELDS = ("start", "e2e", "ttft", "tpot", "prompt_tokens", "output_tokens",
                 "itl_p50", "itl_p90", "error")  # fmt: skip


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 7)


@dataclass(frozen=True, slots=True)
class CellResult:
    """A cell's requests and what the server reported while they ran.

    ``wall_s``: from the cell's first request to its last answer; ``counters``:
    ``metrics.counter_deltas`` over the cell; ``gauges``: ``GaugeSampler.summary()``;
    ``complete``: False when the profile's bounds stopped the cell early.
    """

    spec: CellSpec
    samples: tuple[Sample, ...]
    wall_s: float
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    complete: bool = True

    @classmethod
    def merge(cls, spec: CellSpec, parts: Sequence[CellResult]) -> CellResult:
        """One cell from slices of it run at different times: samples in order, wall
        times and counters added, gauge peaks kept (mean running weighted)."""
        counters: dict[str, float] = {}
        for part in parts:
            for k, v in part.counters.items():
                counters[k] = counters.get(k, 0.0) + v
        gauges: dict[str, float] = {}
        sampled = [p.gauges for p in parts if p.gauges.get("samples")]
        if sampled:
            n = math.fsum(g["samples"] for g in sampled)
            gauges["samples"] = n
            gauges["mean_running"] = math.fsum(g["mean_running"] * g["samples"]
                                               for g in sampled) / n  # fmt: skip
            for k in ("max_running", "max_waiting", "saturated_running", "max_kv_usage"):
                values = [g[k] for g in sampled if k in g]
                if values:
                    gauges[k] = max(values)
        return cls(
            spec=spec,
            samples=tuple(s for p in parts for s in p.samples),
            wall_s=math.fsum(p.wall_s for p in parts),
            counters=counters,
            gauges=gauges,
            complete=all(p.complete for p in parts),
        )

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None and s.ttft is not None]

    @property
    def errors(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.samples:
            if s.error is not None:
                out[s.error] = out.get(s.error, 0) + 1
        return out

    def values(self, metric: str) -> list[float]:
        """``ttft``, ``tpot`` or ``e2e`` of the successful requests (seconds)."""
        vals = (getattr(s, metric) for s in self.ok)
        return [v for v in vals if v is not None]

    def quantile(self, metric: str, q: float) -> float:
        """Nearest-rank quantile of ``values(metric)`` (``nan`` without any)."""
        return percentile(self.values(metric), q)

    @property
    def prompt_tokens(self) -> float:
        """Mean prompt tokens the server counted (the plan's when it reported none)."""
        counted = [s.prompt_tokens for s in self.ok if s.prompt_tokens is not None]
        return math.fsum(counted) / len(counted) if counted else float(self.spec.prompt_tokens)

    @property
    def per_user_tokens_per_s(self) -> float:
        """Median token speed one request sees after its first token (1 / TPOT p50)."""
        tpot = self.quantile("tpot", 0.5)
        return 1.0 / tpot if tpot > 0 else math.nan

    @property
    def total_tokens_per_s(self) -> float:
        """Output tokens of all successful requests over the cell's wall time."""
        tokens = sum(s.output_tokens for s in self.ok)
        return tokens / self.wall_s if self.wall_s > 0 else math.nan

    def summary(self) -> dict[str, object]:
        """Quantiles in milliseconds and throughputs (what ``--json`` and tables show)."""
        out: dict[str, object] = {"n": len(self.ok), "errors": self.errors}
        for m in ("ttft", "tpot", "e2e"):
            for q in (0.5, 0.9, 0.99):
                out[f"{m}_p{round(q * 100)}_ms"] = _ms(self.quantile(m, q))
        out["per_user_tokens_per_s"] = _round(self.per_user_tokens_per_s)
        out["total_tokens_per_s"] = _round(self.total_tokens_per_s)
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "spec": self.spec.to_dict(),
            "key": self.spec.key,
            "complete": self.complete,
            "wall_s": round(self.wall_s, 6),
            "summary": self.summary(),
            "counters": self.counters,
            "gauges": self.gauges,
            "samples": [s.to_list() for s in self.samples],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CellResult:
        try:
            return cls(
                spec=CellSpec.from_dict(d["spec"]),
                samples=tuple(Sample.from_list(r) for r in d["samples"]),
                wall_s=float(d["wall_s"]),
                counters={str(k): float(v) for k, v in d.get("counters", {}).items()},
                gauges={str(k): float(v) for k, v in d.get("gauges", {}).items()},
                complete=bool(d.get("complete", True)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"bad cell in the profile: {exc!r}") from exc


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 3)


def _round(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 3)


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """What ``critpath profile`` measured on one served model (module docstring)."""

    model: str
    base_url: str
    server: str
    plan: ProfilePlan
    scale: TokenScale
    cells: tuple[CellResult, ...]
    simulator: LatencyProfile
    fit: dict[str, float]
    elapsed_s: float
    requests_sent: int
    stopped: str | None = None
    """Why the profile stopped early (``None``: it ran the whole plan)."""

    def cell(self, phase: Phase, **match: object) -> CellResult | None:
        """The first cell of ``phase`` whose spec has these field values."""
        for c in self.cells:
            if c.spec.phase is phase and all(getattr(c.spec, k) == v for k, v in match.items()):
                return c
        return None

    def by_phase(self, phase: Phase) -> list[CellResult]:
        return [c for c in self.cells if c.spec.phase is phase]

    def baseline(self) -> CellResult | None:
        """The concurrency-1 cell at the base lengths (else any concurrency-1 cell)."""
        candidates = [c for c in self.cells if c.spec.concurrency == 1 and c.ok
                      and c.spec.text is TextKind.RANDOM
                      and c.spec.phase not in (Phase.PREFIX_COLD, Phase.PREFIX_WARM)]  # fmt: skip
        for c in candidates:
            if c.spec.phase is Phase.CONCURRENCY:
                return c
        return candidates[0] if candidates else None

    def seed(self, stats: EndpointStats) -> EndpointStats:
        """Observe the baseline cell's TTFT, TPOT and end-to-end times into ``stats``."""
        base = self.baseline()
        if base is None:
            raise ConfigError("the profile has no successful concurrency-1 requests to seed from")
        observers: dict[str, Callable[[float], None]] = {
            "ttft": stats.ttft.observe, "tpot": stats.tpot.observe, "e2e": stats.e2e.observe,
        }  # fmt: skip
        for metric, observe in observers.items():
            for v in base.values(metric):
                observe(max(v, 0.0))
        return stats

    def endpoint_stats(self) -> EndpointStats:
        """A fresh ``EndpointStats`` seeded from this profile (``seed``)."""
        return self.seed(EndpointStats())

    def measured_model(self) -> MeasuredModel:
        return MeasuredModel(self.model, self.simulator)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "model": self.model,
            "simulator": self.simulator.to_dict(),
            "fit": self.fit,
            "base_url": self.base_url,
            "server": self.server,
            "elapsed_s": round(self.elapsed_s, 3),
            "requests_sent": self.requests_sent,
            "stopped": self.stopped,
            "plan": self.plan.to_dict(),
            "token_scale": {"intercept": self.scale.intercept, "per_word": self.scale.per_word},
            "sample_fields": list(SAMPLE_FIELDS),
            "cells": [c.to_dict() for c in self.cells],
        }

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return p

    @classmethod
    def from_dict(cls, d: Any, source: str = "the profile") -> ServerProfile:
        measured = MeasuredModel.from_document(d, source)
        try:
            scale = d.get("token_scale") or {}
            return cls(
                model=measured.name,
                base_url=str(d.get("base_url", "")),
                server=str(d.get("server", "")),
                plan=ProfilePlan.from_dict(d.get("plan") or {}),
                scale=TokenScale(
                    float(scale.get("intercept", 1.0)), float(scale.get("per_word", 1.0))
                ),
                cells=tuple(CellResult.from_dict(c) for c in d.get("cells", [])),
                simulator=measured.profile,
                fit={str(k): float(v) for k, v in (d.get("fit") or {}).items()},
                elapsed_s=float(d.get("elapsed_s", 0.0)),
                requests_sent=int(d.get("requests_sent", 0)),
                stopped=d.get("stopped"),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{source} is not a valid server profile: {exc!r}") from exc

    @classmethod
    def load(cls, path: str | Path) -> ServerProfile:
        return cls.from_dict(read_profile_json(path), str(path))
