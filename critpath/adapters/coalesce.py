"""Coalescing (single flight): concurrent identical requests share one upstream stream.

``Coalescer.stream(key, open)`` returns a stream of the answer for ``key``. The first
caller for a key starts a *flight*: a task, owned by the coalescer, that reads
``open()`` (the upstream stream) and keeps every chunk. Callers that arrive while the
flight is in the air join it: each gets every chunk from the first one on, at its own
pace, and the same error if the upstream fails. A caller that stops reading (closes its
stream or is cancelled) leaves the flight; when the last one has left before the end,
the upstream is cancelled (closing it aborts the request on the server) and the flight
is gone. A finished flight is forgotten at once: a later request starts a new one (a
cache in front of the coalescer is what answers later repeats).

``Coalesce(model)`` is the ``Model`` wrapper: requests with the same canonical key
(``request_keys.request_key``) that are deterministic share one upstream call; other
requests pass through. ``Cache`` coalesces its misses with the same machinery.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass

from critpath._tasks import cancel_and_wait
from critpath.adapters.protocol import Chunk, Model, ModelRequest
from critpath.adapters.request_keys import is_deterministic, request_key
from critpath.adapters.wrapper import WrapperModel

__all__ = ["Coalesce", "CoalesceStatistics", "Coalescer", "Flight"]


@dataclass(frozen=True, slots=True)
class CoalesceStatistics:
    """``flights``: upstream calls started; ``joined``: callers that shared a flight
    someone else started; ``abandoned``: flights cancelled because every caller left."""

    flights: int
    joined: int
    abandoned: int
    in_flight: int


class Flight:
    """One upstream stream and the callers reading it; see the module docstring."""

    __slots__ = ("_changed", "_stored", "chunks", "done", "error", "key", "task", "waiters")

    def __init__(self, key: str) -> None:
        self.key = key
        self.chunks: list[Chunk] = []
        self.done = False
        self.error: BaseException | None = None
        self.waiters = 0
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._stored = False

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _pump(self, upstream: AsyncGenerator[Chunk, None]) -> None:
        try:
            async with aclosing(upstream) as chunks:
                async for chunk in chunks:
                    self.chunks.append(chunk)
                    self._notify()
        except Exception as exc:
            self.error = exc
        finally:
            self.done = True
            self._notify()

    def claim_store(self) -> bool:
        """True once, for the first caller that asks after a successful end: the one
        that writes the answer to a cache."""
        if self.done and self.error is None and not self._stored:
            self._stored = True
            return True
        return False

    async def read(self) -> AsyncGenerator[Chunk, None]:
        """Every chunk from the first; raises the upstream's error at its point."""
        i = 0
        while True:
            changed = self._changed
            while i < len(self.chunks):
                yield self.chunks[i]
                i += 1
            if self.done:
                if self.error is not None:
                    raise self.error
                return
            await changed.wait()  # already set if a chunk came while we yielded


class Coalescer:
    """The flights in the air, by key; see the module docstring."""

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}
        self._started = 0
        self._joined = 0
        self._abandoned = 0

    def __len__(self) -> int:
        return len(self._flights)

    async def stream(
        self,
        key: str,
        open_upstream: Callable[[], AsyncGenerator[Chunk, None]],
        *,
        on_complete: Callable[[Flight], object] | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """The answer for ``key``: a new flight reading ``open_upstream()``, or the one in
        the air. ``on_complete(flight)`` (awaited if it returns an awaitable) runs in the
        first caller to see the flight end successfully, after its last chunk."""
        flight = self._flights.get(key)
        if flight is None or flight.done:  # an ended flight is never joined
            flight = Flight(key)
            self._flights[key] = flight
            flight.task = asyncio.create_task(
                flight._pump(open_upstream()), name=f"critpath-coalesce:{key[:12]}"
            )
            flight.task.add_done_callback(functools.partial(self._forgotten, flight))
            self._started += 1
        else:
            self._joined += 1
        flight.waiters += 1
        try:
            async with aclosing(flight.read()) as chunks:
                async for chunk in chunks:
                    yield chunk
            if on_complete is not None and flight.claim_store():
                result = on_complete(flight)
                if asyncio.iscoroutine(result):
                    await result
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.done and flight.task is not None:
                self._forget(flight)
                self._abandoned += 1
                await cancel_and_wait([flight.task])

    def _forgotten(self, flight: Flight, _task: asyncio.Task[None]) -> None:
        self._forget(flight)

    def _forget(self, flight: Flight) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]

    def statistics(self) -> CoalesceStatistics:
        return CoalesceStatistics(self._started, self._joined, self._abandoned, len(self._flights))


class Coalesce(WrapperModel):
    """A ``Model`` wrapper: identical concurrent requests share one upstream stream.

    Only deterministic requests (temperature 0 or a seed) are coalesced, unless
    ``sampled=True``; others pass through.
    """

    def __init__(self, model: Model, *, sampled: bool = False, name: str | None = None) -> None:
        super().__init__(model, name=name)
        self.sampled = sampled
        self.coalescer = Coalescer()

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        model = self.wrapped[0]
        if not (self.sampled or is_deterministic(request)):
            async with aclosing(model.stream(request)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        key = request_key(model.name, request)
        async with aclosing(self.coalescer.stream(key, lambda: model.stream(request))) as chunks:
            async for chunk in chunks:
                yield chunk

    def statistics(self) -> CoalesceStatistics:
        return self.coalescer.statistics()
