"""Concurrency limits, global and per resource, handed out least slack first.

A ``Limiter`` can be shared by many runs (e.g. one per model endpoint pool in a
service). Waiters are ranked by a key the runtime gives: the run's due time (its
deadline, or its predicted finish), then the step's *latest start time* (the due time
minus the predicted longest path from the step to the end of its run). So the run due
first is served first, and within a run the step with least slack — the same order
as the steps' model-server ``priority``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from critpath.errors import ConfigError

__all__ = ["Limiter"]


@dataclass(order=True, slots=True)
class _Waiter:
    key: tuple[float, ...]
    seq: int
    resource: str | None = field(compare=False)
    start: Callable[[object], None] = field(compare=False)
    owner: object = field(compare=False)
    dead: bool = field(default=False, compare=False)


class Limiter:
    """At most ``max_concurrency`` steps at once, and ``resources[r]`` per resource ``r``.

    Steps whose resource is not listed are bound by the global limit only.
    """

    def __init__(
        self, max_concurrency: int | None = None, resources: Mapping[str, int] | None = None
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        for r, n in (resources or {}).items():
            if n < 1:
                raise ConfigError(f"resource {r!r}: limit must be >= 1, got {n}")
        self.max_concurrency = max_concurrency
        self.limits: dict[str, int] = dict(resources or {})
        self._running = 0
        self._by_resource: dict[str, int] = dict.fromkeys(self.limits, 0)
        self._heap: list[_Waiter] = []
        self._seq = itertools.count()
        self._waiting = 0
        self._peak = 0
        self._granted = 0
        self._dispatching = False

    def _fits(self, resource: str | None) -> bool:
        if self.max_concurrency is not None and self._running >= self.max_concurrency:
            return False
        if resource is not None and resource in self.limits:
            return self._by_resource[resource] < self.limits[resource]
        return True

    def _take(self, resource: str | None) -> None:
        self._running += 1
        self._granted += 1
        self._peak = max(self._peak, self._running)
        if resource is not None and resource in self.limits:
            self._by_resource[resource] += 1

    def acquire_or_wait(
        self,
        key: tuple[float, ...],
        resource: str | None,
        start: Callable[[object], None],
        owner: object,
    ) -> bool:
        """Take a slot and return True, or queue ``start`` and return False.

        ``start(by)`` is called when a slot frees for it, with the ``by`` its releaser
        gave ``release`` (who held the slot before). A step only takes a free slot when
        no better-ranked waiter could use it.
        """
        if self._fits(resource) and not self._better_waiter(key, resource):
            self._take(resource)
            return True
        heapq.heappush(self._heap, _Waiter(key, next(self._seq), resource, start, owner))
        self._waiting += 1
        return False

    def _better_waiter(self, key: tuple[float, ...], resource: str | None) -> bool:
        return any(not w.dead and w.key < key and self._fits(w.resource) for w in self._heap)

    def release(self, resource: str | None, by: object = None) -> None:
        """Give a slot back and start the best waiters that now fit; ``by`` (who held
        the slot: any object) is passed on to the waiters it lets start."""
        self._running -= 1
        if resource is not None and resource in self.limits:
            self._by_resource[resource] -= 1
        self._dispatch(by)

    def _dispatch(self, by: object) -> None:
        if self._dispatching:  # a start() released a slot: the loop below picks it up
            return
        self._dispatching = True
        try:
            self._dispatch_loop(by)
        finally:
            self._dispatching = False

    def _dispatch_loop(self, by: object) -> None:
        skipped: list[_Waiter] = []
        heap = self._heap
        while heap:
            if self.max_concurrency is not None and self._running >= self.max_concurrency:
                break
            w = heapq.heappop(heap)
            if w.dead:
                continue
            if not self._fits(w.resource):
                skipped.append(w)
                continue
            self._waiting -= 1
            self._take(w.resource)
            w.start(by)
        for w in skipped:
            heapq.heappush(heap, w)

    def set_limit(self, resource: str, limit: int) -> None:
        """Change ``resource``'s limit (0 holds every step that needs it) and start the
        waiters that now fit — e.g. a limiter whose slots are leased from elsewhere."""
        if limit < 0:
            raise ConfigError(f"resource {resource!r}: limit must be >= 0, got {limit}")
        self.limits[resource] = limit
        self._by_resource.setdefault(resource, 0)
        self._dispatch(None)

    def running_for(self, resource: str) -> int:
        """Steps holding a slot of ``resource`` now."""
        return self._by_resource.get(resource, 0)

    def waiting_for(self, resource: str | None) -> int:
        """Steps queued for a slot of ``resource``."""
        return sum(1 for w in self._heap if not w.dead and w.resource == resource)

    def forget(self, owner: object) -> None:
        """Drop every waiter of ``owner`` (a run that ended)."""
        for w in self._heap:
            if w.owner is owner and not w.dead:
                w.dead = True
                self._waiting -= 1
        self._heap[:] = [w for w in self._heap if not w.dead]
        heapq.heapify(self._heap)

    def statistics(self) -> dict[str, object]:
        """Running, waiting, peak concurrency and slots granted so far (anyio style)."""
        return {
            "running": self._running,
            "waiting": self._waiting,
            "peak_running": self._peak,
            "granted": self._granted,
            "by_resource": dict(self._by_resource),
        }
