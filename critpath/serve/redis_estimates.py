"""``SharedEstimates``: learned latency estimates merged across processes through Redis.

Every process learns step durations (``Estimates``) and endpoint TTFT / TPOT / latency
(``EndpointStats``) from the calls it serves. Shared, a process starts from what the
fleet has learned instead of cold defaults, and contributes its own observations::

    shared = SharedEstimates("redis://127.0.0.1:6379/0")
    shared.track(graph.estimates, "answer-graph")
    shared.track_stats("vllm-a/llama", model.stats)
    async with shared:            # pulls the fleet's estimates, then merges every 2 s
        ...

Each round (``sync()``, two Redis round trips for every tracked estimate together)
pushes the samples observed here since the last round onto one capped list per
estimate (the fleet's most recent ``window`` samples, in arrival order) and adopts
that list as the local window (``LatencyEstimate.adopt``: quantiles and EWMA over the
fleet's samples; counts stay local). Keys the fleet knows and this process does not are
created (``Estimates.estimate``), so a new process predicts from the fleet's data.

Degrading, never failing: the lists expire ``max_age`` seconds after their last push,
so a stale estimate vanishes and each process falls back to its own; an unreachable
store leaves the local estimates as they are (the round is counted in ``failures``
and logged), and the next round tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from critpath._tasks import cancel_and_wait
from critpath.adapters.stats import EndpointStats
from critpath.errors import ConfigError
from critpath.estimates import Estimates, LatencyEstimate
from critpath.serve._redis import STORE_ERRORS, connect

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["SharedEstimates"]

log = logging.getLogger("critpath.serve.redis_estimates")


class SharedEstimates:
    """Estimates tracked here, merged with the fleet's every ``interval`` seconds."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "critpath",
        interval: float = 2.0,
        max_age: float = 600.0,
        window: int = 512,
        client: Redis | None = None,
    ) -> None:
        if not interval > 0 or not max_age > 0 or window < 1:
            raise ConfigError("interval and max_age must be > 0 seconds, window >= 1")
        self.url = url
        self.namespace = namespace
        self.interval = interval
        self.max_age = max_age
        self.window = window
        self._client = client
        self._own_client = client is None
        self._stores: dict[str, Estimates] = {}
        self._fixed: dict[str, LatencyEstimate] = {}  # "group/key" -> estimate
        self._pushed: dict[int, int] = {}  # id(estimate) -> its count at the last push
        self._task: asyncio.Task[None] | None = None
        self.syncs = 0
        self.failures = 0
        self._last_ok: float | None = None

    # ---- what is shared -----------------------------------------------------------

    def track(self, estimates: Estimates, group: str) -> None:
        """Share every key of ``estimates`` (and adopt keys the fleet knows) as ``group``."""
        self._check_group(group)
        self._stores[group] = estimates

    def track_stats(self, group: str, stats: EndpointStats) -> None:
        """Share an endpoint's TTFT, TPOT and end-to-end estimates as ``group``."""
        self._check_group(group)
        for key, est in stats.estimates().items():
            self._fixed[f"{group}/{key}"] = est

    def _check_group(self, group: str) -> None:
        if not group or "/" in group:
            raise ConfigError(f"a group is a non-empty name without '/', got {group!r}")
        if group in self._stores or any(k.startswith(group + "/") for k in self._fixed):
            raise ConfigError(f"group {group!r} is already tracked")

    def _tracked(self) -> dict[str, LatencyEstimate]:
        out = dict(self._fixed)
        for group, store in self._stores.items():
            for key in store:
                est = store.get(key)
                if est is not None:
                    out[f"{group}/{key}"] = est
        return out

    def _list_key(self, name: str) -> str:
        return f"{self.namespace}:estimates:{name}"

    def _keys_key(self, group: str) -> str:
        return f"{self.namespace}:estimates-keys:{group}"

    # ---- merging --------------------------------------------------------------------

    async def sync(self) -> bool:
        """One round: push new samples, adopt the fleet's. ``False`` when the store
        could not be reached (nothing changed locally)."""
        if self._client is None:
            self._client = connect(self.url)
        try:
            await self._sync(self._client)
        except STORE_ERRORS as exc:
            self.failures += 1
            log.warning("shared estimates: store unreachable, keeping local ones: %s", exc)
            return False
        self.syncs += 1
        self._last_ok = time.monotonic()
        return True

    async def _sync(self, client: Redis) -> None:
        ttl = max(1, math.ceil(self.max_age))
        tracked = self._tracked()
        pipe = client.pipeline(transaction=False)
        pushed: dict[int, int] = {}
        for name, est in tracked.items():
            new = min(est.count - self._pushed.get(id(est), 0), len(est.samples()))
            if new > 0:
                lk = self._list_key(name)
                pipe.rpush(lk, *(repr(v) for v in est.samples()[-new:]))
                pipe.ltrim(lk, -self.window, -1)
                pipe.expire(lk, ttl)
                group, _, key = name.partition("/")
                if group in self._stores:
                    pipe.sadd(self._keys_key(group), key)
                    pipe.expire(self._keys_key(group), ttl)
            pushed[id(est)] = est.count
        groups = list(self._stores)
        for group in groups:
            pipe.smembers(self._keys_key(group))
        replies = await pipe.execute()
        self._pushed.update(pushed)
        for group, members in zip(groups, replies[len(replies) - len(groups) :], strict=True):
            store = self._stores[group]
            for raw in members:
                key = raw.decode() if isinstance(raw, bytes) else str(raw)
                name = f"{group}/{key}"
                if name not in tracked:
                    est = store.estimate(key)
                    tracked[name] = est
                    self._pushed[id(est)] = est.count
        names = list(tracked)
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.lrange(self._list_key(name), 0, -1)
        for name, values in zip(names, await pipe.execute(), strict=True):
            samples = _floats(values)
            if samples:  # missing or expired: the local estimate stands
                tracked[name].adopt(samples)

    # ---- the owned background task ------------------------------------------------------

    async def __aenter__(self) -> SharedEstimates:
        if self._task is not None:
            raise ConfigError("these SharedEstimates are already running")
        await self.sync()  # start from the fleet's estimates (or our own, if unreachable)

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.interval)
                await self.sync()

        self._task = asyncio.create_task(loop(), name="critpath-shared-estimates")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        await self.sync()  # contribute what was learned since the last round
        if self._own_client and self._client is not None:
            with contextlib.suppress(*STORE_ERRORS):
                await self._client.aclose()
            self._client = None

    def statistics(self) -> dict[str, Any]:
        """Rounds that reached the store, rounds that did not, seconds since the last good one."""
        age = None if self._last_ok is None else time.monotonic() - self._last_ok
        return {"syncs": self.syncs, "failures": self.failures, "age": age,
                "tracked": len(self._tracked())}  # fmt: skip


def _floats(values: list[Any]) -> list[float]:
    out: list[float] = []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            continue  # not ours: skipped, never fatal
    return out
