"""Step memoisation: ``@g.step(cache=StepCache(...))`` reuses a step's result for the
same inputs.

The key is the step's name and the values of its inputs (every parameter but the
``StepContext``), as canonical JSON (``caching.keys``), or what ``key(**inputs)``
returns when given. Results are stored as JSON in a ``caching`` store (default: a
``MemoryStore``), for ``ttl`` seconds. ``cache=True`` is ``StepCache()``.

Nothing here can fail a run: inputs that JSON cannot write (no key), a result JSON
cannot write (not stored), and a failing store (``CacheStoreError``) are logged
(``critpath.memo``, DEBUG for the first two, WARNING for the store) and the step runs
as if uncached. Only steps that return a value are memoised (not stream steps); a
step that raised stores nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from critpath.caching.keys import digest
from critpath.caching.store import CacheStore, MemoryStore
from critpath.errors import CacheStoreError, ConfigError

__all__ = ["MISSING", "StepCache", "StepCacheStatistics"]

_log = logging.getLogger("critpath.memo")

MISSING: Any = object()
"""What ``StepCache.lookup`` returns when there is no stored result."""


@dataclass(frozen=True, slots=True)
class StepCacheStatistics:
    hits: int
    misses: int
    stored: int
    skipped: int
    store_errors: int


class StepCache:
    """Where one or more steps' results are memoised; see the module docstring."""

    def __init__(
        self,
        store: CacheStore | None = None,
        *,
        ttl: float | None = None,
        key: Callable[..., Any] | None = None,
        namespace: str = "",
    ) -> None:
        if ttl is not None and not ttl > 0:
            raise ConfigError("StepCache: ttl must be > 0 seconds (or None)")
        self.store: CacheStore = store if store is not None else MemoryStore()
        self.ttl = ttl
        self.key_fn = key
        self.namespace = namespace
        self._hits = self._misses = self._stored = self._skipped = self._errors = 0

    def __repr__(self) -> str:
        return f"StepCache(store={self.store!r}, ttl={self.ttl!r})"

    def key(self, step: str, inputs: Mapping[str, Any]) -> str | None:
        """The key of ``step`` run on ``inputs``; ``None`` when they cannot make one."""
        try:
            value = self.key_fn(**inputs) if self.key_fn is not None else dict(inputs)
            return digest({"step": step, "inputs": value}, namespace=f"step:{self.namespace}")
        except ConfigError as exc:
            self._skipped += 1
            _log.debug("step %s: not memoised: %s", step, exc)
            return None

    async def lookup(self, key: str) -> Any:
        """The stored result, or ``MISSING``."""
        try:
            raw = await self.store.get(key)
        except CacheStoreError as exc:
            self._errors += 1
            _log.warning("step cache lookup failed, running the step: %s", exc)
            raw = None
        if raw is None:
            self._misses += 1
            return MISSING
        try:
            value = json.loads(raw)
        except ValueError as exc:
            self._misses += 1
            _log.warning("undecodable step cache entry, running the step: %s", exc)
            return MISSING
        self._hits += 1
        return value

    async def save(self, key: str, value: Any) -> None:
        """Store ``value`` (if JSON can write it)."""
        try:
            raw = json.dumps(value, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            self._skipped += 1
            _log.debug("step result not memoised: %s", exc)
            return
        try:
            await self.store.set(key, raw, self.ttl)
        except CacheStoreError as exc:
            self._errors += 1
            _log.warning("step cache write failed: %s", exc)
            return
        self._stored += 1

    def statistics(self) -> StepCacheStatistics:
        return StepCacheStatistics(
            self._hits, self._misses, self._stored, self._skipped, self._errors
        )
