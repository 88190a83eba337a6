"""Read a live load signal from a model server's Prometheus ``/metrics`` text.

vLLM exports ``vllm:num_requests_running``, ``vllm:num_requests_waiting`` and
``vllm:kv_cache_usage_perc`` (``vllm:gpu_cache_usage_perc`` in older releases);
SGLang exports ``sglang:num_running_reqs`` and ``sglang:num_queue_reqs``. Values of
the same metric with different labels (several engines) are summed, except cache
usage, which is averaged. The text is parsed by ``prometheus_client`` (the official
client's parser: labels with escapes, timestamps, NaN/Inf, exemplars).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

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
    """Metric name -> the values of its samples (labels dropped), parsed by
    ``prometheus_client``'s text parser; text it rejects is ``MalformedResponse``.

    With ``model``, samples labelled with another ``model_name`` are left out (a server
    serving several models reports each one's load); unlabelled samples are kept.
    """
    out: dict[str, list[float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                named = sample.labels.get("model_name")
                if model is not None and named is not None and named != model:
                    continue
                out.setdefault(sample.name, []).append(float(sample.value))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise MalformedResponse(f"malformed Prometheus metrics text: {exc}") from exc
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
