"""Cache stores: where cached answers and memoised step results are kept.

A store maps a key (a hex digest) to bytes, with an optional time to live, behind one
small async protocol (``CacheStore``); the wrappers that use it (``adapters.cache.Cache``
for model answers, ``orchestrator`` step memoisation) decide what to store. A store
that fails raises ``CacheStoreError`` (its own exceptions mapped at its boundary) and
its users treat that as a miss.

- ``store``: the protocol and ``MemoryStore`` (in process, LRU, the default);
- ``sqlite_store``: ``SQLiteStore`` (embedded, persistent, shared by the processes of
  one machine);
- ``redis_store``: ``RedisStore`` (shared by many processes and machines; the ``redis``
  extra);
- ``keys``: canonical keys (``digest``).
"""

from critpath.caching.keys import digest
from critpath.caching.sqlite_store import SQLiteStore
from critpath.caching.store import CacheStore, MemoryStore, StoreStatistics

__all__ = ["CacheStore", "MemoryStore", "SQLiteStore", "StoreStatistics", "digest"]


def __getattr__(name: str) -> object:
    if name == "RedisStore":  # imported lazily: redis-py is an optional extra
        from critpath.caching.redis_store import RedisStore

        return RedisStore
    raise AttributeError(name)
