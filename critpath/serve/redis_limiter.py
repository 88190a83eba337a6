"""``SharedLimiter``: a ``Limiter`` whose per-resource slots are shared by every process.

``resources={"llm": 8}`` on a plain ``Limiter`` means 8 per process: ten processes send
80 requests to a server sized for 8. A ``SharedLimiter`` with the same arguments and the
same ``name`` lets all of them together run at most 8 steps on ``"llm"``::

    async with SharedLimiter("redis://127.0.0.1:6379/0", "vllm-a", {"llm": 8}) as limiter:
        run = graph.run(inputs, limiter=limiter)   # the runtime uses it like any Limiter

How it works:

- Redis holds, per resource, a sorted set of **leases** (one per slot in use somewhere)
  scored by their expiry time on the Redis server's clock, and a sorted set of the
  processes waiting for one.
- Inside a process it is an ordinary ``Limiter`` (same synchronous interface, same
  least-slack order) whose limit for a shared resource is the number of leases the
  process holds right now. The runtime never waits on Redis.
- A background task that the limiter owns (started by ``async with``) keeps the leases
  in step with demand, one Lua script per resource per round (one Redis round trip):
  it drops expired leases, returns the ones no longer needed, renews the ones held,
  grants new ones up to the global limit, and records whether the process is still
  waiting. Returned leases are announced (``PUBLISH``), so a waiting process retries
  at once instead of at its next poll.
- Leases expire: a process renews its own every ``ttl / 3`` seconds; one that crashed
  or hangs stops renewing and its slots come back to the fleet after ``ttl``.
- A lease no longer needed is kept ``linger`` seconds (a steady stream of steps then
  reuses it without a round trip), but given back at once while another process
  waits. And while others wait, a process holding more than its fair share
  (``limit // contenders``) hands a freed lease back instead of reusing it.

What is *not* global: the least-slack order holds within a process; across processes
leases go to whichever asks first (fair shares prevent starvation). If Redis cannot be
reached the limiter keeps what it holds until those leases would have expired
(``ttl``), then holds none: steps wait rather than exceed the fleet's limit. Steps
already running are never stopped.

Limits of non-shared resources and ``max_concurrency`` stay per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from critpath._tasks import cancel_and_wait
from critpath.errors import ConfigError
from critpath.orchestrator.limits import Limiter
from critpath.serve._redis import STORE_ERRORS, connect

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["SharedLimiter"]

log = logging.getLogger("critpath.serve.redis_limiter")

# KEYS: leases, waiters, counter.  ARGV: ttl, limit, want, me, channel, short (1: this
# process needs more than it may ask for now), n_return, then n_return ids to return,
# then the ids to renew.
# Returns {granted ids, lost ids (expired before renewal), other processes waiting}.
_SYNC = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local me = ARGV[4]
local short = ARGV[6] == '1'
local nret = tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local freed = 0
for i = 8, 7 + nret do
  freed = freed + redis.call('ZREM', KEYS[1], ARGV[i])
end
local lost = {}
for i = 8 + nret, #ARGV do
  if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[i]) == 0
     and not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    lost[#lost + 1] = ARGV[i]
  end
end
local granted = {}
local free = limit - redis.call('ZCARD', KEYS[1])
local n = math.max(0, math.min(want, free))
for i = 1, n do
  local id = me .. ':' .. redis.call('INCR', KEYS[3])
  redis.call('ZADD', KEYS[1], now + ttl, id)
  granted[i] = id
end
local others = redis.call('ZCARD', KEYS[2])
if short or n < want then
  if redis.call('ZADD', KEYS[2], now + ttl, me) == 0 then others = others - 1 end
else
  others = others - redis.call('ZREM', KEYS[2], me)
end
if freed > 0 then redis.call('PUBLISH', ARGV[5], me) end
return {granted, lost, others}
"""


class _Shared:
    """One shared resource as this process sees it."""

    __slots__ = ("held", "limit", "others", "returning", "surplus_since", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: list[str] = []  # lease ids, usable
        self.returning: list[str] = []  # lease ids to give back at the next round
        self.waiting = 0  # local waiters queued for this resource
        self.others = 0  # other processes waiting (as of the last round)
        self.surplus_since: float | None = None


class SharedLimiter(Limiter):
    """A ``Limiter`` whose ``resources`` limits hold across every process using the
    same Redis, ``name`` and resource (see the module docstring).

    ``ttl``: seconds a lease outlives its holder's last renewal; ``linger``: seconds an
    unneeded lease is kept for reuse when nobody else waits; ``poll``: seconds between
    retries while short of leases (a returned lease wakes waiters sooner).
    """

    def __init__(
        self,
        url: str,
        name: str,
        resources: Mapping[str, int],
        *,
        max_concurrency: int | None = None,
        ttl: float = 10.0,
        linger: float = 0.1,
        poll: float = 0.05,
        client: Redis | None = None,
    ) -> None:
        if not resources:
            raise ConfigError("a SharedLimiter needs at least one shared resource")
        if not ttl > 0 or linger < 0 or not poll > 0:
            raise ConfigError("ttl and poll must be > 0 seconds, linger >= 0")
        super().__init__(max_concurrency, resources)
        self.name = name
        self.url = url
        self.ttl = ttl
        self.linger = linger
        self.poll = poll
        self._shared = {r: _Shared(n) for r, n in self.limits.items()}
        for r in self._shared:
            self.limits[r] = 0  # no leases yet
        self._me = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._client = client
        self._own_client = client is None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._last_ok = 0.0
        self._round_trips = 0
        self._store_errors = 0
        self._lost = 0

    # ---- keys ---------------------------------------------------------------------

    def _keys(self, resource: str) -> list[str]:
        base = f"critpath:limiter:{self.name}:{resource}"
        return [f"{base}:leases", f"{base}:waiters", f"{base}:seq"]

    @property
    def channel(self) -> str:
        return f"critpath:limiter:{self.name}:freed"

    # ---- the synchronous interface the runtime uses ---------------------------------

    def acquire_or_wait(
        self,
        key: tuple[float, ...],
        resource: str | None,
        start: Callable[[object], None],
        owner: object,
    ) -> bool:
        shared = self._shared.get(resource) if resource is not None else None
        if shared is None:
            return super().acquire_or_wait(key, resource, start, owner)

        def started(by: object) -> None:
            shared.waiting -= 1
            self._wake.set()  # one waiter fewer may leave surplus
            start(by)

        if super().acquire_or_wait(key, resource, started, owner):
            shared.surplus_since = None
            return True
        shared.waiting += 1
        self._wake.set()  # demand grew: ask Redis for a lease
        return False

    def release(self, resource: str | None, *args: Any, **kwargs: Any) -> None:
        shared = self._shared.get(resource) if resource is not None else None
        if shared is not None and shared.others and shared.held:
            share = max(1, shared.limit // (shared.others + 1))
            if len(shared.held) > share:  # others wait: hand this lease back, not to us
                shared.returning.append(shared.held.pop())
                assert resource is not None
                self.limits[resource] = len(shared.held)
        super().release(resource, *args, **kwargs)
        if shared is not None:
            self._wake.set()

    def forget(self, owner: object) -> None:
        super().forget(owner)
        for r, shared in self._shared.items():  # recount: some waiters were dropped
            shared.waiting = self.waiting_for(r)
        self._wake.set()

    def statistics(self) -> dict[str, object]:
        stats = super().statistics()
        stats["shared"] = {
            r: {
                "limit": s.limit,
                "held": len(s.held),
                "waiting": s.waiting,
                "other_processes_waiting": s.others,
            }
            for r, s in self._shared.items()
        }
        stats["store_round_trips"] = self._round_trips
        stats["store_errors"] = self._store_errors
        stats["leases_lost"] = self._lost
        return stats

    # ---- the owned background task ----------------------------------------------------

    async def __aenter__(self) -> SharedLimiter:
        if self._tasks:
            raise ConfigError("this SharedLimiter is already running")
        if self._client is None:
            self._client = connect(self.url)
        try:
            await self._client.ping()
        except STORE_ERRORS as exc:
            await self._close_client()
            raise ConfigError(f"SharedLimiter {self.name!r}: cannot reach Redis: {exc}") from exc
        self._last_ok = time.monotonic()
        self._closing = False
        self._tasks = [
            asyncio.create_task(self._keep(), name=f"critpath-limiter:{self.name}"),
            asyncio.create_task(self._listen(), name=f"critpath-limiter-listen:{self.name}"),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing = True  # redis-py may turn a cancelled read into a ConnectionError
        await cancel_and_wait(self._tasks)
        self._tasks = []
        for shared in self._shared.values():  # give every lease back
            shared.returning += shared.held
            shared.held = []
        for r in self._shared:
            self.limits[r] = 0
        with contextlib.suppress(*STORE_ERRORS):
            await self._round(final=True)
        await self._close_client()

    async def _close_client(self) -> None:
        if self._own_client and self._client is not None:
            with contextlib.suppress(*STORE_ERRORS):
                await self._client.aclose()
            self._client = None

    async def _keep(self) -> None:
        renew_every = self.ttl / 3
        next_renew = time.monotonic() + renew_every
        while not self._closing:
            self._wake.clear()
            now = time.monotonic()
            renew = now >= next_renew
            try:
                await self._round(renew=renew)
                self._last_ok = time.monotonic()
                if renew:
                    next_renew = self._last_ok + renew_every
            except STORE_ERRORS as exc:
                self._store_errors += 1
                log.warning("SharedLimiter %r: Redis round failed: %s", self.name, exc)
                if time.monotonic() - self._last_ok > self.ttl:
                    self._drop_all()  # our leases have expired there: hold none
                await asyncio.sleep(min(1.0, self.poll * 4))
                continue
            timeout = next_renew - time.monotonic()
            for shared in self._shared.values():
                if len(shared.held) < self._demand(shared):
                    timeout = min(timeout, self.poll)
                elif shared.surplus_since is not None:
                    timeout = min(timeout, shared.surplus_since + self.linger - time.monotonic())
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    async def _listen(self) -> None:
        """Wake the round when another process returned leases and we are short."""
        assert self._client is not None
        while not self._closing:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                while not self._closing:  # bounded reads: redis-py may swallow a cancel
                    message = await pubsub.get_message(timeout=0.5)
                    short = any(len(s.held) < self._demand(s) for s in self._shared.values())
                    if message is not None and short:
                        self._wake.set()
            except STORE_ERRORS as exc:
                log.debug("SharedLimiter %r: subscription lost: %s", self.name, exc)
                if not self._closing:
                    await asyncio.sleep(1.0)  # the round's own polling covers the gap
            finally:
                with contextlib.suppress(*STORE_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _demand(self, shared: _Shared) -> int:
        resource = next(r for r, s in self._shared.items() if s is shared)
        return self.running_for(resource) + shared.waiting

    def _drop_all(self) -> None:
        for r, shared in self._shared.items():
            self._lost += len(shared.held) + len(shared.returning)
            shared.held = []
            shared.returning = []
            self.limits[r] = 0

    async def _round(self, *, renew: bool = True, final: bool = False) -> None:
        """One script per shared resource: return, renew, acquire (see the module doc)."""
        client = self._client
        assert client is not None
        now = time.monotonic()
        for r, shared in self._shared.items():
            running = self.running_for(r)
            demand = 0 if final else running + shared.waiting
            surplus = len(shared.held) - max(demand, running)
            if surplus > 0:
                if shared.surplus_since is None:
                    shared.surplus_since = now
                if shared.others or now >= shared.surplus_since + self.linger or final:
                    shared.returning += shared.held[len(shared.held) - surplus :]
                    del shared.held[len(shared.held) - surplus :]
                    shared.surplus_since = None
            else:
                shared.surplus_since = None
            short = demand > len(shared.held)
            want = max(0, demand - len(shared.held))
            if shared.others:  # others wait: ask for no more than a fair share
                share = max(1, shared.limit // (shared.others + 1))
                want = min(want, max(0, share - len(shared.held)))
            if not (short or shared.returning or renew or shared.others):
                continue
            returning = list(shared.returning)
            renewing = list(shared.held) if renew else []
            args: list[str | int | float] = [
                self.ttl, shared.limit, want, self._me, self.channel, int(short),
                len(returning),
                *returning, *renewing,
            ]  # fmt: skip
            self._round_trips += 1
            reply = await client.eval(_SYNC, 3, *self._keys(r), *args)
            granted, lost, others = reply
            del shared.returning[: len(returning)]
            if lost:
                gone = {x.decode() if isinstance(x, bytes) else str(x) for x in lost}
                self._lost += len(gone)
                shared.held = [x for x in shared.held if x not in gone]
                log.warning("SharedLimiter %r: %d lease(s) of %r expired before renewal",
                            self.name, len(gone), r)  # fmt: skip
            shared.held += [x.decode() if isinstance(x, bytes) else str(x) for x in granted]
            shared.others = int(others)
            if final:
                continue
            self.set_limit(r, len(shared.held))  # starts the waiters the new leases admit
