"""What a vLLM server says about itself on ``/metrics``, read beside the timings.

``read_metrics`` fetches and parses the Prometheus text (``None`` when the server has
no ``/metrics``). ``counter_deltas`` turns two readings into what happened between
them (``COUNTERS``: prefix-cache queries and hits, speculative-decoding drafts, draft
and accepted tokens, preemptions, prompt and generated tokens), and
``derived`` into rates: prefix-cache hit rate, draft acceptance rate, mean accepted
length. ``GaugeSampler`` polls the gauges (requests running and waiting, KV-cache
usage) while a cell runs and keeps their peaks and the mean of running requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from types import TracebackType

import httpx

from critpath.adapters.prometheus import parse_metrics
from critpath.errors import MalformedResponse

__all__ = ["COUNTERS", "GaugeSampler", "counter_deltas", "derived", "is_vllm", "read_metrics"]

COUNTERS: dict[str, str] = {
    "prefix_cache_queries": "vllm:prefix_cache_queries_total",
    "prefix_cache_hits": "vllm:prefix_cache_hits_total",
    "spec_drafts": "vllm:spec_decode_num_drafts_total",
    "spec_draft_tokens": "vllm:spec_decode_num_draft_tokens_total",
    "spec_accepted_tokens": "vllm:spec_decode_num_accepted_tokens_total",
    "preemptions": "vllm:num_preemptions_total",
    "prompt_tokens": "vllm:prompt_tokens_total",
    "generation_tokens": "vllm:generation_tokens_total",
}
"""Our name -> the vLLM counter (tokens, except drafts and preemptions)."""

_RUNNING = "vllm:num_requests_running"
_WAITING = "vllm:num_requests_waiting"
_KV = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


async def read_metrics(
    client: httpx.AsyncClient, root: str, model: str, wait_s: float = 5.0
) -> dict[str, float] | None:
    """Each metric of ``model`` summed over its samples, or ``None`` without ``/metrics``
    (or when it cannot be read: the profile then goes on without it)."""
    try:
        resp = await client.get(root + "/metrics", timeout=wait_s)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    try:
        parsed = parse_metrics(resp.text, model=model)
    except MalformedResponse:
        return None
    return {name: math.fsum(values) for name, values in parsed.items()}


def is_vllm(metrics: dict[str, float] | None) -> bool:
    """Whether these metrics look like vLLM's (it then takes ``ignore_eos``)."""
    return metrics is not None and _RUNNING in metrics


def counter_deltas(
    before: dict[str, float] | None, after: dict[str, float] | None
) -> dict[str, float]:
    """What each counter of ``COUNTERS`` the server exports grew by between readings."""
    if before is None or after is None:
        return {}
    return {
        ours: after[theirs] - before.get(theirs, 0.0)
        for ours, theirs in COUNTERS.items()
        if theirs in after
    }


def derived(deltas: dict[str, float]) -> dict[str, float]:
    """Rates from counter deltas: ``prefix_hit_rate`` (cached / queried prompt tokens),
    ``spec_acceptance`` (accepted / drafted tokens), ``spec_accepted_per_draft``."""
    out: dict[str, float] = {}
    queries = deltas.get("prefix_cache_queries", 0.0)
    if queries > 0:
        out["prefix_hit_rate"] = deltas.get("prefix_cache_hits", 0.0) / queries
    drafted = deltas.get("spec_draft_tokens", 0.0)
    if drafted > 0:
        out["spec_acceptance"] = deltas.get("spec_accepted_tokens", 0.0) / drafted
    drafts = deltas.get("spec_drafts", 0.0)
    if drafts > 0:
        out["spec_accepted_per_draft"] = deltas.get("spec_accepted_tokens", 0.0) / drafts
    return out


class GaugeSampler:
    """Polls the gauges every ``interval`` seconds while in its ``async with`` block
    (does nothing unless ``enabled``)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        root: str,
        model: str,
        interval: float = 0.1,
        *,
        enabled: bool = True,
    ) -> None:
        self._client, self._root, self._model, self.interval = client, root, model, interval
        self.enabled = enabled
        self._task: asyncio.Task[None] | None = None
        self._running: list[float] = []
        self.max_running = 0.0
        self.max_waiting = 0.0
        self.max_kv_usage: float | None = None
        self.saturated_running = 0.0
        """The most requests seen running while others waited (0: never saw a queue)."""

    async def __aenter__(self) -> GaugeSampler:
        if self.enabled:
            self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        await asyncio.sleep(self.interval / 5)  # let the cell's first requests arrive
        while True:
            m = await read_metrics(self._client, self._root, self._model, self.interval * 4)
            if m is None or _RUNNING not in m:
                return  # nothing to sample on this server
            running, waiting = m[_RUNNING], m.get(_WAITING, 0.0)
            self._running.append(running)
            self.max_running = max(self.max_running, running)
            self.max_waiting = max(self.max_waiting, waiting)
            if waiting > 0:
                self.saturated_running = max(self.saturated_running, running)
            kv = next((m[k] for k in _KV if k in m), None)
            if kv is not None:
                self.max_kv_usage = max(self.max_kv_usage or 0.0, kv)
            await asyncio.sleep(self.interval)

    def summary(self) -> dict[str, float]:
        """The peaks (and mean running requests) seen; empty if nothing was sampled."""
        if not self._running:
            return {}
        out = {
            "samples": float(len(self._running)),
            "mean_running": math.fsum(self._running) / len(self._running),
            "max_running": self.max_running,
            "max_waiting": self.max_waiting,
            "saturated_running": self.saturated_running,
        }
        if self.max_kv_usage is not None:
            out["max_kv_usage"] = self.max_kv_usage
        return out
