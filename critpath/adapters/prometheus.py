"""Read a live load signal from a model server's Prometheus ``/metrics`` text.

vLLM exports ``vllm:num_requests_running``, ``vllm:num_requests_waiting`` and
``vllm:kv_cache_usage_perc`` (``vllm:gpu_cache_usage_perc`` in older releases);
SGLang exports ``sglang:num_running_reqs`` and ``sglang:num_queue_reqs``. Values of
the same metric with different labels (several engines) are summed, except cache
usage, which is averaged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from critpath.errors import MalformedResponse

__all__ = ["ServerLoad", "parse_metrics", "server_load"]

_RUNNING = ("vllm:num_requests_running", "sglang:num_running_reqs")
_WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")
_CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")


@dataclass(frozen=True, slots=True)
class ServerLoad:
    """Requests running and waiting on the server, and KV-cache usage in [0, 1]."""

    running: float
    waiting: float
    kv_cache_usage: float | None

    @property
    def outstanding(self) -> float:
        return self.running + self.waiting


def parse_metrics(text: str, *, model: str | None = None) -> dict[str, list[float]]:
    """Metric name -> the values of its samples (labels dropped). Comments skipped.

    With ``model``, samples labelled with another ``model_name`` are left out (a server
    serving several models reports each one's load); unlabelled samples are kept.
    """
    out: dict[str, list[float]] = {}
    mine = None if model is None else f'model_name="{model}"'

    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, _, rest = line.partition("{")
            labels, brace, tail = rest.rpartition("}")
            if not brace:
                raise MalformedResponse(f"malformed metrics line: {line[:120]!r}")
            if mine is not None and "model_name=" in labels and mine not in labels:
                continue
        else:
            name, _, tail = line.partition(" ")
        parts = tail.split()
        if not parts:
            raise MalformedResponse(f"metrics line without a value: {line[:120]!r}")
        try:
            value = float(parts[0])
        except ValueError as exc:
            raise MalformedResponse(f"metrics value is not a number: {line[:120]!r}") from exc
        out.setdefault(name.strip(), []).append(value)
    return out


def server_load(metrics: dict[str, list[float]]) -> ServerLoad | None:
    """The load signal in parsed metrics, or ``None`` if the server exports none."""

    def total(names: tuple[str, ...]) -> float | None:
        for n in names:
            if n in metrics:
                return math.fsum(metrics[n])
        return None

    running = total(_RUNNING)
    waiting = total(_WAITING)
    if running is None and waiting is None:
        return None
    cache: float | None = None
    for n in _CACHE:
        if metrics.get(n):
            cache = math.fsum(metrics[n]) / len(metrics[n])
            break
    return ServerLoad(running or 0.0, waiting or 0.0, cache)
