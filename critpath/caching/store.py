"""The store protocol, and ``MemoryStore``: in process, LRU, the default.

A ``CacheStore`` maps a key (``str``) to bytes. ``get`` returns ``None`` for a key that
is absent or expired; ``set`` stores a value for ``ttl`` seconds (``None``: until
evicted); ``aclose`` releases what the store holds (connections, threads). Failures
raise ``CacheStoreError`` (the store's own exception as its cause), never anything
else, so a cache can turn them into misses without hiding bugs.

>>> import asyncio
>>> async def demo() -> list[bytes | None]:
...     store = MemoryStore(max_entries=1)
...     await store.set("a", b"1")
...     await store.set("b", b"2")      # evicts "a", the least recently used
...     return [await store.get("a"), await store.get("b")]
>>> asyncio.run(demo())
[None, b'2']
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from critpath.errors import ConfigError

__all__ = ["CacheStore", "MemoryStore", "StoreStatistics"]


@runtime_checkable
class CacheStore(Protocol):
    """Where cached values live; see the module docstring."""

    @property
    def kind(self) -> str:
        """What the store is (``"memory"``, ``"sqlite"``, ``"redis"``), for reports."""
        ...

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """A ``MemoryStore`` now: entries, their bytes, and how many were evicted so far."""

    entries: int
    bytes: int
    evictions: int
    expirations: int


class MemoryStore:
    """An in-process LRU store bounded by ``max_entries`` and ``max_bytes``.

    ``clock`` (seconds, default ``time.monotonic``) measures time to live. A value larger
    than ``max_bytes`` on its own is not stored.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 256 * 2**20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ConfigError("MemoryStore: max_entries must be >= 1")
        if max_bytes < 1:
            raise ConfigError("MemoryStore: max_bytes must be >= 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._bytes = 0
        self._evictions = 0
        self._expirations = 0

    @property
    def kind(self) -> str:
        return "memory"

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryStore(entries={len(self._data)}, max_entries={self.max_entries})"

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and self._clock() >= expires:
            self._remove(key)
            self._expirations += 1
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        if ttl is not None and not ttl > 0:
            raise ConfigError("ttl must be > 0 seconds (or None)")
        if key in self._data:
            self._remove(key)
        if len(value) > self.max_bytes:
            return
        expires = None if ttl is None else self._clock() + ttl
        self._data[key] = (value, expires)
        self._bytes += len(value)
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._data))
            self._remove(oldest)
            self._evictions += 1

    async def aclose(self) -> None:
        self._data.clear()
        self._bytes = 0

    def _remove(self, key: str) -> None:
        value, _ = self._data.pop(key)
        self._bytes -= len(value)

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(len(self._data), self._bytes, self._evictions, self._expirations)
