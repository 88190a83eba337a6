"""``Pool``: one model over several replicas, each request sent to the least loaded.

A pool is a ``Model`` wrapping ``Model``s (replicas of one model: several vLLM servers,
simulated replicas...). It counts the requests outstanding on each replica — one more
when a stream starts, one less when it ends, fails, is closed or is cancelled — and
picks by ``strategy``:

- ``"least_outstanding"``: the replica with the fewest outstanding requests; ties go
  to the lowest learned TTFT (p50 of the replica's ``stats``) when every tied replica
  has one, else round robin;
- ``"p2c"`` (power of two choices): two replicas drawn at random (seeded), the less
  loaded of the two;
- ``"prefix"``: the replica most likely to hold the request's prompt prefix in its KV
  cache, with bounded load (``routing.PrefixRouter``, or the one given as ``router``);
  a request placed without its prompt (``acquire()``) goes to the least loaded.

Live load: replicas that report it (an async ``load()`` returning ``ServerLoad``, as
``OpenAICompatible`` reads vLLM's ``/metrics`` and ``SimulatedModel`` its scheduler)
are polled by ``await pool.refresh_load()``, or periodically inside ``async with
pool.watch(interval):``. Until the next refresh a replica's load is then what its
server reported (running + waiting, other clients' requests included) plus the
requests this pool has sent it since; a replica that reports nothing (or whose probe
failed) is judged by the pool's own count.

Several processes: this is the multi-process mode. Pools in many processes (or
machines) in front of the same servers each run ``watch``; every one then sees the
requests all the others sent (the servers count them), so together they balance as
one, with an error bounded by what the processes sent in the last ``interval``. No
shared store is needed (docs/DEPLOYMENT.md).

``pool.acquire()`` is the picking step on its own, for wrappers that place copies of
a request themselves (``Hedge``): it returns a ``Lease`` that counts until released.

Faults (``breaker=BreakerPolicy(...)``, ``failover=N``): each replica gets a
``breaker.Breaker``; a replica that fails ``failures`` times in a row (errors,
timeouts, resets: ``breaker.counts_as_failure``) is ejected for a cooldown, then
probed back one request at a time; a 429 with ``Retry-After`` cools just that
replica. Ejected replicas are not picked while another is available (when none is,
all are: a pool never refuses on its own). A request that fails before its first
token (nothing but empty "accepted" chunks yielded to the caller) is sent again to
another replica, up to ``failover`` times; after its first token an error goes to the
caller. ``statistics()`` reports each replica's breaker and the pool's failovers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from critpath._tasks import polling
from critpath.adapters.breaker import Breaker, BreakerPolicy, BreakerStatistics, counts_as_failure
from critpath.adapters.logs import get_logger
from critpath.adapters.prometheus import ServerLoad
from critpath.adapters.protocol import Chunk, Model, ModelRequest
from critpath.adapters.routing import PrefixRouter, prompt_of
from critpath.adapters.stats import EndpointStats
from critpath.adapters.wrapper import WrapperModel
from critpath.errors import ConfigError, ModelError, RateLimited

__all__ = [
    "Lease",
    "LoadReporter",
    "Pool",
    "PoolStatistics",
    "ReplicaStatistics",
    "Strategy",
]

Strategy = Literal["least_outstanding", "p2c", "prefix"]
_STRATEGIES = ("least_outstanding", "p2c", "prefix")

_log = get_logger(__name__)


@runtime_checkable
class LoadReporter(Protocol):
    """A replica that can say how loaded its server is (``None``: it cannot tell)."""

    async def load(self) -> ServerLoad | None: ...


@dataclass(frozen=True, slots=True)
class ReplicaStatistics:
    """One replica as the pool sees it; ``server_outstanding`` is ``None`` without a
    server-reported load (then ``load`` is the pool's own count)."""

    name: str
    outstanding: int
    picks: int
    server_outstanding: float | None
    load: float
    breaker: BreakerStatistics | None = None


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    name: str
    strategy: Strategy
    load_refreshes: int
    load_errors: int
    replicas: tuple[ReplicaStatistics, ...]
    failovers: int = 0

    @property
    def outstanding(self) -> int:
        return sum(r.outstanding for r in self.replicas)

    @property
    def picks(self) -> int:
        return sum(r.picks for r in self.replicas)


class Lease:
    """One request placed on one replica; counted as outstanding until ``release()``.

    Use it as a context manager, or call ``release()`` (idempotent) yourself.
    """

    __slots__ = ("_pool", "_probe", "_released", "index", "model")

    def __init__(self, pool: Pool, index: int, probe: bool = False) -> None:
        self._pool = pool
        self._released = False
        self._probe = probe
        self.index = index
        self.model = pool.replicas[index]

    @property
    def released(self) -> bool:
        return self._released

    def succeeded(self) -> None:
        """The replica answered (feeds its breaker, if the pool has breakers)."""
        self._probe = False
        self._pool._outcome(self.index, None)

    def failed(self, error: BaseException) -> None:
        """The replica failed with ``error`` (a breaker failure, a cooling, or nothing
        for errors that are the request's own fault)."""
        self._probe = False
        self._pool._outcome(self.index, error)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._outstanding[self.index] -= 1
            if self._probe:  # ended without an outcome (cancelled): free the probe
                self._probe = False
                breakers = self._pool._breakers
                if breakers is not None:
                    breakers[self.index].abandon()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease({self.model.name!r}, index={self.index}, released={self._released})"


class Pool(WrapperModel):
    """A ``Model`` over ``replicas`` of one model; see the module docstring."""

    def __init__(
        self,
        replicas: Sequence[Model],
        *,
        strategy: Strategy = "least_outstanding",
        seed: int = 0,
        name: str | None = None,
        router: PrefixRouter | None = None,
        breaker: BreakerPolicy | None = None,
        failover: int = 0,
    ) -> None:
        if not replicas:
            raise ConfigError("a Pool needs at least one replica")
        if failover < 0:
            raise ConfigError("failover must be >= 0")
        if strategy not in _STRATEGIES:
            raise ConfigError(f"unknown strategy {strategy!r}; use one of {_STRATEGIES}")
        super().__init__(replicas, name=name)
        self.strategy: Strategy = strategy
        self._rng = random.Random(seed)
        n = len(self.replicas)
        self._outstanding = [0] * n
        self._picks = [0] * n
        self._server: list[float | None] = [None] * n  # outstanding at the last refresh
        self._sent_at_refresh = [0] * n  # self._picks when that refresh began
        self._cursor = 0  # round robin among ties
        self._probe_bug: Exception | None = None
        self._refreshes = 0
        self._load_errors = 0
        self.router: PrefixRouter | None = None
        if strategy == "prefix":
            self.router = router if router is not None else PrefixRouter(n)
            if self.router.replicas != n:
                raise ConfigError(f"the router has {self.router.replicas} replicas, not {n}")
        self.failover = failover
        self._failovers = 0
        self._breakers: list[Breaker] | None = (
            None if breaker is None else [Breaker(breaker, _loop_time) for _ in range(n)]
        )

    @property
    def replicas(self) -> tuple[Model, ...]:
        """The replicas, in the order given (``wrapped``)."""
        return self.wrapped

    def __len__(self) -> int:
        return len(self.replicas)

    def __repr__(self) -> str:
        return f"Pool({self._name!r}, replicas={len(self.replicas)}, strategy={self.strategy!r})"

    # ---- picking ----------------------------------------------------------------------

    def replica_load(self, index: int) -> float:
        """The load used to pick: server-reported plus sent since, else our own count."""
        server = self._server[index]
        if server is None:
            return float(self._outstanding[index])
        return server + (self._picks[index] - self._sent_at_refresh[index])

    def acquire(
        self, *, exclude: Collection[int] = (), request: ModelRequest | None = None
    ) -> Lease:
        """Pick a replica (avoiding the indices in ``exclude`` while another is left) and
        count one request on it until the lease is released; ``request``: what it is
        for (the ``"prefix"`` strategy routes by its prompt)."""
        if self.router is not None and request is not None:
            blocks = self.router.blocks_of(prompt_of(request))
            loads = [self.replica_load(i) for i in range(len(self.replicas))]
            avoid = set(exclude)
            if self._breakers is not None:  # ejected replicas, unless nothing else is left
                ejected = {i for i, b in enumerate(self._breakers) if not b.available()}
                if len(avoid | ejected) < len(self.replicas):
                    avoid |= ejected
            index = self.router.choose(blocks, loads, avoid)
            self.router.record(blocks, index)
        else:
            index = self._pick(exclude)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "pool %s: replica %s chosen (%s, load %.1f; loads %s)",
                self._name, self.replicas[index].name, self.strategy, self.replica_load(index),
                [self.replica_load(i) for i in range(len(self.replicas))],
            )  # fmt: skip
        self._outstanding[index] += 1
        self._picks[index] += 1
        probe = self._breakers is not None and self._breakers[index].begin()
        return Lease(self, index, probe)

    def _pick(self, exclude: Collection[int]) -> int:
        n = len(self.replicas)
        allowed = [i for i in range(n) if i not in exclude] or list(range(n))
        if self._breakers is not None:  # ejected replicas only when nothing else is left
            breakers = self._breakers
            allowed = [i for i in allowed if breakers[i].available()] or allowed
        if len(allowed) == 1:
            return allowed[0]
        if self.strategy == "p2c":
            a, b = self._rng.sample(allowed, 2)
            return b if self.replica_load(b) < self.replica_load(a) else a
        least = min(self.replica_load(i) for i in allowed)
        tied = [i for i in allowed if self.replica_load(i) == least]
        if len(tied) > 1:
            ttfts = [_learned_ttft(self.replicas[i]) for i in tied]
            if all(not math.isnan(t) for t in ttfts):
                best = min(ttfts)
                tied = [i for i, t in zip(tied, ttfts, strict=True) if t == best]
        index = min(tied, key=lambda i: (i - self._cursor) % n)  # round robin among ties
        self._cursor = (index + 1) % n
        return index

    # ---- the protocol -----------------------------------------------------------------

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        tried: list[int] = []
        while True:
            started = False  # a chunk with content went to the caller: no failover now
            with self.acquire(exclude=tried, request=request) as lease:
                try:
                    async with aclosing(lease.model.stream(request)) as chunks:
                        async for chunk in chunks:
                            if not started and (
                                chunk.text or chunk.tokens or chunk.finish_reason or chunk.usage
                            ):
                                started = True
                            yield chunk  # an empty one ("accepted") commits nothing
                except ModelError as exc:
                    lease.failed(exc)
                    if started or len(tried) >= self.failover or not _fails_over(exc):
                        raise
                    tried.append(lease.index)
                    self._failovers += 1
                    _log.debug(
                        "pool %s: %s failed before its first token (%s: %s); failing over",
                        self._name, lease.model.name, type(exc).__name__, exc,
                    )  # fmt: skip
                    continue
                lease.succeeded()
            return

    def _outcome(self, index: int, error: BaseException | None) -> None:
        breakers = self._breakers
        if breakers is None:
            return
        if error is None:
            breakers[index].success()
        elif isinstance(error, RateLimited) and error.retry_after is not None:
            breakers[index].cool(error.retry_after)
        elif counts_as_failure(error):
            breakers[index].failure()

    # ---- live load --------------------------------------------------------------------

    async def refresh_load(self) -> list[ServerLoad | None]:
        """Ask every replica that reports load for it, concurrently; use the answers.

        A replica whose probe fails with a ``ModelError`` (counted in ``load_errors``)
        or that reports nothing is judged by the pool's own count until a later
        refresh succeeds.
        """
        probes = [(i, r) for i, r in enumerate(self.replicas) if isinstance(r, LoadReporter)]
        started = {i: self._picks[i] for i, _ in probes}
        results: list[ServerLoad | None] = [None] * len(self.replicas)
        if probes:
            async with asyncio.TaskGroup() as tg:
                tasks = [(i, tg.create_task(self._probe(r))) for i, r in probes]
            for i, task in tasks:
                results[i] = task.result()
        for i in range(len(self.replicas)):
            load = results[i]
            self._server[i] = load.outstanding if load is not None else None
            if i in started:
                self._sent_at_refresh[i] = started[i]
        self._refreshes += 1
        return results

    async def _probe(self, replica: LoadReporter) -> ServerLoad | None:
        try:
            return await replica.load()
        except ModelError as exc:
            self._load_errors += 1
            _log.debug("pool %s: load probe of %s failed: %s", self._name, _name_of(replica), exc)
            return None
        except Exception as exc:  # a bug in a probe: keep polling, raise it at the end
            self._load_errors += 1
            _log.debug(
                "pool %s: load probe of %s raised a bug (raised at the end of watch)",
                self._name, _name_of(replica), exc_info=exc,
            )  # fmt: skip
            if self._probe_bug is None:
                self._probe_bug = exc
            return None

    @asynccontextmanager
    async def watch(self, interval: float = 1.0) -> AsyncIterator[Pool]:
        """Refresh the load every ``interval`` seconds while the block runs.

        The polling task belongs to the block: it is cancelled and awaited on exit.
        """
        if not interval > 0:
            raise ConfigError("watch interval must be > 0 seconds")

        self._probe_bug = None
        name = f"critpath-pool-watch:{self._name}"
        async with polling(self.refresh_load, interval, name=name, bug=lambda: self._probe_bug):
            yield self

    # ---- reporting --------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        """Per replica: requests outstanding now, picks so far, the load used to pick."""
        return PoolStatistics(
            name=self._name,
            strategy=self.strategy,
            load_refreshes=self._refreshes,
            load_errors=self._load_errors,
            failovers=self._failovers,
            replicas=tuple(
                ReplicaStatistics(
                    name=r.name,
                    outstanding=self._outstanding[i],
                    picks=self._picks[i],
                    server_outstanding=self._server[i],
                    load=self.replica_load(i),
                    breaker=None if self._breakers is None else self._breakers[i].statistics(),
                )
                for i, r in enumerate(self.replicas)
            ),
        )


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _fails_over(exc: ModelError) -> bool:
    """Whether another replica may answer what this one failed."""
    return counts_as_failure(exc) or isinstance(exc, RateLimited)


def _name_of(replica: object) -> str:
    return str(getattr(replica, "name", replica))


def _learned_ttft(model: Model) -> float:
    """The replica's learned median TTFT (``nan`` when it has none)."""
    stats = getattr(model, "stats", None)
    if isinstance(stats, EndpointStats) and stats.ttft.count:
        return stats.ttft.p50
    return math.nan
