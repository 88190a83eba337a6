"""Streaming pipelines: consume a step's items as they come, honouring their dependencies.

A ``stream`` step is an async generator: each item it yields is available at once (a
planner LLM emitting a plan line by line, as in LLMCompiler). An ``each`` step over it
runs once per item **as soon as the item has arrived and the items it needs have been
processed**, instead of after the whole stream. ``key(item)`` names an item (default:
its index) and ``needs(item)`` the keys it depends on (default: none); the consumer
reads their results from ``ctx.needed``.

``ItemTracker`` is the bookkeeping, a pure state machine the runtime drives: ``add``
an item (returns the items that may start now), mark one ``done`` with its result
(returns the items that became ready), ``close`` when the stream ends (raises if an
item waits on a key that never came), ``check`` (raises once items can only wait on
each other in a cycle).

>>> t = ItemTracker(key=lambda it: it["id"], needs=lambda it: it["deps"])
>>> t.add({"id": 1, "deps": []}), t.add({"id": 2, "deps": [1]})
([0], [])
>>> t.done(0, "r1")
[1]
>>> t.needed_by(1)
{1: 'r1'}
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from critpath.errors import ConfigError

__all__ = ["ItemTracker"]


class ItemTracker:
    """Which items of a stream may be processed, given their keys and needs."""

    def __init__(
        self,
        *,
        key: Callable[[Any], Hashable] | None = None,
        needs: Callable[[Any], Iterable[Hashable]] | None = None,
    ) -> None:
        self._key = key
        self._needs = needs
        self.items: list[Any] = []
        self.keys: list[Hashable] = []
        self.results: dict[int, Any] = {}
        self._index: dict[Hashable, int] = {}
        self._waiting: dict[int, set[Hashable]] = {}
        self._started: set[int] = set()
        self.closed = False

    def add(self, item: Any) -> list[int]:
        """A new item arrived; the indices that may start now (this one, or none)."""
        if self.closed:
            raise ConfigError("the stream was closed")
        i = len(self.items)
        key = self._key(item) if self._key is not None else i
        if key in self._index:
            raise ConfigError(f"two stream items have the key {key!r}")
        self.items.append(item)
        self.keys.append(key)
        self._index[key] = i
        needs = set(self._needs(item)) if self._needs is not None else set()
        if key in needs:
            raise ConfigError(f"stream item {key!r} needs itself")
        unmet = {k for k in needs if not self._is_done(k)}
        self._waiting[i] = unmet
        return self._start_ready()

    def _is_done(self, key: Hashable) -> bool:
        i = self._index.get(key)
        return i is not None and i in self.results

    def _start_ready(self) -> list[int]:
        ready = [i for i, unmet in self._waiting.items() if not unmet and i not in self._started]
        for i in ready:
            self._started.add(i)
            del self._waiting[i]
        return ready

    def done(self, index: int, result: Any) -> list[int]:
        """Item ``index`` was processed; the indices that became ready."""
        self.results[index] = result
        key = self.keys[index]
        for unmet in self._waiting.values():
            unmet.discard(key)
        return self._start_ready()

    def needed_by(self, index: int) -> dict[Hashable, Any]:
        """The results of the items ``index`` needs, by key."""
        return {k: self.results[self._index[k]] for k in self.needs_of(index)}

    def needs_of(self, index: int) -> list[Hashable]:
        """The keys item ``index`` needs."""
        item = self.items[index]
        return list(self._needs(item)) if self._needs is not None else []

    def index_of(self, key: Hashable) -> int:
        return self._index[key]

    def close(self) -> None:
        """The stream ended: every waiting item must be able to run eventually."""
        self.closed = True
        missing = sorted(
            {repr(k) for unmet in self._waiting.values() for k in unmet if k not in self._index}
        )
        if missing:
            raise ConfigError(f"stream items need keys the stream never produced: {missing}")
        self.check()

    def check(self) -> None:
        """Raise if the stream is closed and items wait with nothing left in flight (they
        wait on each other in a cycle)."""
        if self.closed and self._waiting and not self._started - set(self.results):
            stuck = sorted(repr(self.keys[i]) for i in self._waiting)
            raise ConfigError(f"stream items wait on each other in a cycle: {stuck}")

    @property
    def finished(self) -> bool:
        """Closed, and every item processed."""
        return self.closed and len(self.results) == len(self.items)

    def ordered_results(self) -> list[Any]:
        return [self.results[i] for i in range(len(self.items))]
