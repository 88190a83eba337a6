"""Latency profiles of simulated models, calibrated on measured endpoints.

Source: ray-project/llmperf-leaderboard ``raw_data/individual`` (Apache-2.0), as kept
in ``../shared/data/llmperf/``: about 150 requests per provider and Llama-2 size, 550
input and ~150 output tokens each. For each size we took every provider with at least
50 successful requests, computed its median TTFT and inter-token latency and their
p95/p50 ratios, and kept the median across providers (``calibrate_llmperf`` below
recomputes them from the files):

=====  =================  ============  ===============  ===========
size   TTFT p50 (s)       TTFT p95/p50  ITL p50 (ms)     ITL p95/p50
=====  =================  ============  ===============  ===========
7B     0.426 (4 prov.)    1.65          16.0             1.19
13B    0.498 (5 prov.)    1.74          23.3             1.25
70B    0.388 (7 prov.)    1.53          24.4             1.17
=====  =================  ============  ===============  ===========

Spread is modelled as log-normal: sigma = ln(p95/p50) / 1.645. Prefill is taken as
30% of the median TTFT over the 550 prompt tokens (the files do not separate it).
The ``api`` profile (hosted models of unknown size, e.g. GPT-4o) uses the 70B
figures. Stragglers (the heavy tail) and faults are off by default.

``local-8b`` is **an assumption, not a measurement** (no GPU was at hand to measure
one): an 8B model in bf16 served by vLLM on one H100-class GPU beside the
application, reached over loopback. Decoding reads ~16 GB of weights per step at
~3 TB/s, about 5-8 ms a token (8 ms taken); prefill ~25k tokens/s (40 us a token);
scheduling and loopback HTTP ~12 ms. Hosted endpoints (above) put a network and a
shared queue in front of the model, which is why even their 7B models take ~0.4 s to
the first token. Use it where a strategy's point is a model *you* serve next to the
application (fast-then-refine's draft).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from critpath.errors import ConfigError

__all__ = ["LatencyProfile", "PROFILES", "calibrate_llmperf", "profile_for_params"]

_Z95 = 1.6448536269514722
_PROMPT = 550  # prompt tokens in the llmperf runs


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """How long a simulated model takes. Seconds, before ``time_scale``.

    - ``queue_s``: fixed part of TTFT (scheduling, network) when the server is idle;
    - ``prefill_per_token_s``: TTFT grows with the prompt;
    - ``ttft_sigma``: log-normal spread of TTFT;
    - ``tpot_s`` / ``tpot_sigma``: per output token, with one sequence running;
    - ``tpot_request_sigma``: log-normal spread of a whole request's token speed (a
      request drawn slow is slow for all its tokens, as when batch composition
      changes); 0 by default, set by profiles fitted to a measured server;
    - ``batch_slowdown``: each extra running sequence adds this fraction to TPOT
      (continuous batching: load raises latency);
    - ``ttft_batch_slowdown``: each other running sequence adds this fraction to TTFT
      (a prefill shares its steps with their decoding); 0 by default, set by profiles
      fitted to a measured server;
    - ``max_num_seqs``: sequences decoded at once; more requests wait in a queue
      ordered by priority, then arrival (vLLM's priority scheduling);
    - ``straggler_p`` / ``straggler_x``: probability that a request is a straggler,
      and how much slower all its times are (the heavy tail);
    - ``error_p`` / ``reset_p`` / ``stall_p``: faults: an error before the first token,
      a connection reset mid-stream, a stall mid-stream.
    """

    queue_s: float
    prefill_per_token_s: float
    ttft_sigma: float
    tpot_s: float
    tpot_sigma: float
    tpot_request_sigma: float = 0.0
    batch_slowdown: float = 0.04
    ttft_batch_slowdown: float = 0.0
    max_num_seqs: int = 64
    straggler_p: float = 0.0
    straggler_x: float = 10.0
    error_p: float = 0.0
    reset_p: float = 0.0
    stall_p: float = 0.0

    def __post_init__(self) -> None:
        for name in ("queue_s", "prefill_per_token_s", "ttft_sigma", "tpot_s", "tpot_sigma",
                     "tpot_request_sigma", "batch_slowdown", "ttft_batch_slowdown"):  # fmt: skip
            if not getattr(self, name) >= 0:
                raise ConfigError(f"LatencyProfile.{name} must be >= 0")
        if self.max_num_seqs < 1:
            raise ConfigError("LatencyProfile.max_num_seqs must be >= 1")
        if self.straggler_x < 1:
            raise ConfigError("LatencyProfile.straggler_x must be >= 1")
        for name in ("straggler_p", "error_p", "reset_p", "stall_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"LatencyProfile.{name} must be a probability")

    def with_(self, **changes: float | int) -> LatencyProfile:
        """A copy with some fields changed (e.g. ``straggler_p=0.05``)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, float | int]:
        """The profile's fields by name (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LatencyProfile:
        """A profile from ``to_dict``'s form; unknown or mistyped fields are a
        ``ConfigError`` (missing ones take their defaults)."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown latency-profile fields: {unknown}")
        values: dict[str, float | int] = {}
        for name, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"latency-profile field {name} must be a number, got {value!r}")
            values[name] = int(value) if name == "max_num_seqs" else float(value)
        try:
            return cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"incomplete latency profile: {exc}") from exc

    @staticmethod
    def from_measurements(
        ttft_p50: float, ttft_p95_ratio: float, itl_p50: float, itl_p95_ratio: float
    ) -> LatencyProfile:
        prefill = 0.3 * ttft_p50
        return LatencyProfile(
            queue_s=ttft_p50 - prefill,
            prefill_per_token_s=prefill / _PROMPT,
            ttft_sigma=math.log(ttft_p95_ratio) / _Z95,
            tpot_s=itl_p50,
            tpot_sigma=math.log(itl_p95_ratio) / _Z95,
        )


PROFILES: dict[str, LatencyProfile] = {
    "7b": LatencyProfile.from_measurements(0.426, 1.65, 0.0160, 1.19),
    "13b": LatencyProfile.from_measurements(0.498, 1.74, 0.0233, 1.25),
    "70b": LatencyProfile.from_measurements(0.388, 1.53, 0.0244, 1.17),
}
PROFILES["small"] = PROFILES["7b"]
PROFILES["medium"] = PROFILES["13b"]
PROFILES["large"] = PROFILES["70b"]
PROFILES["api"] = PROFILES["70b"]
PROFILES["local-8b"] = LatencyProfile(
    queue_s=0.012, prefill_per_token_s=4e-5, ttft_sigma=0.15, tpot_s=0.008, tpot_sigma=0.1
)


def profile_for_params(params_b: float | None) -> LatencyProfile:
    """The profile for a model of ``params_b`` billion parameters (None: hosted API)."""
    if params_b is None:
        return PROFILES["api"]
    if params_b <= 10:
        return PROFILES["7b"]
    if params_b <= 40:
        return PROFILES["13b"]
    return PROFILES["70b"]


def calibrate_llmperf(directory: str | Path, min_requests: int = 50) -> dict[str, LatencyProfile]:
    """Recompute the size profiles from llmperf files (``<provider>_<size>.json``)."""
    per_size: dict[str, list[tuple[float, float, float, float]]] = {}
    for path in sorted(Path(directory).glob("*_*.json")):
        size = path.stem.rsplit("_", 1)[1]
        rows = [r for r in json.loads(path.read_text()) if not r.get("error_code")]
        if len(rows) < min_requests:
            continue
        ttft = sorted(float(r["ttft_s"]) for r in rows)
        itl = sorted(float(r["inter_token_latency_s"]) for r in rows)
        per_size.setdefault(size, []).append(
            (
                _q(ttft, 0.5),
                _q(ttft, 0.95) / _q(ttft, 0.5),
                _q(itl, 0.5),
                _q(itl, 0.95) / _q(itl, 0.5),
            )
        )
    if not per_size:
        raise ConfigError(f"no llmperf files with >= {min_requests} requests in {directory}")
    return {
        size: LatencyProfile.from_measurements(
            *(statistics.median(c) for c in zip(*v, strict=True))
        )
        for size, v in per_size.items()
    }


def _q(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
