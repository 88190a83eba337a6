"""``Cache``: a ``Model`` wrapper that answers repeated requests from a store.

``Cache(model, store=...)`` looks each request up by its canonical key
(``request_keys``: model, messages or prompt, sampling, tools and response format;
never ``request_id``, ``priority`` or ``timeout``). A hit streams the stored answer at
once, as one chunk whose ``usage`` says ``cached=True``; a miss asks the model and, once
its stream has been read to its end, stores the answer for ``ttl`` seconds.

- Only deterministic requests (temperature 0 or a seed) are cached, since sampling at
  a temperature is asking for a different answer each time; ``sampled=True`` caches
  every request (the user says repeats may share an answer).
- Misses are coalesced (``coalesce``): concurrent identical requests share one
  upstream stream, each getting every chunk; the upstream is cancelled only when every
  one of them has gone.
- A store that fails (``CacheStoreError``) never fails the request: the lookup is a
  miss, the write is skipped, and both are logged (``critpath.adapters.cache``, at
  WARNING) and counted. An entry that cannot be decoded is a miss too.
- Answers that did not finish (an error, a reader that stopped early) and answers
  larger than ``max_entry_bytes`` are not stored.

Stores: ``critpath.caching.MemoryStore`` (the default: in process, LRU),
``SQLiteStore`` (persistent, shared by the processes of one machine), ``RedisStore``
(shared by many machines).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from critpath.adapters.coalesce import Coalescer
from critpath.adapters.protocol import Chunk, Model, ModelRequest, TokenLogprob, Usage
from critpath.adapters.request_keys import is_deterministic, request_key
from critpath.adapters.wrapper import WrapperModel
from critpath.caching.store import CacheStore, MemoryStore
from critpath.errors import CacheStoreError, ConfigError

__all__ = ["Cache", "CacheStatistics", "decode_answer", "encode_answer"]

_log = logging.getLogger("critpath.adapters.cache")


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    """Counts so far: ``hits`` and ``misses`` among cacheable requests, ``bypassed``
    (not cacheable: sampled), ``stored`` answers, ``store_errors`` (each a miss or a
    skipped write), ``coalesced`` (misses that joined another's upstream call),
    ``upstream_calls`` (misses that called the model)."""

    hits: int
    misses: int
    bypassed: int
    stored: int
    store_errors: int
    coalesced: int
    upstream_calls: int

    @property
    def hit_rate(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


class Cache(WrapperModel):
    """A response cache in front of ``model``; see the module docstring.

    ``store``: where answers live (default: a fresh ``MemoryStore``); ``ttl``: seconds
    an answer stays (``None``: until evicted); ``namespace`` separates caches sharing
    one store (bump it to drop every answer at once).
    """

    def __init__(
        self,
        model: Model,
        store: CacheStore | None = None,
        *,
        ttl: float | None = None,
        sampled: bool = False,
        coalesce: bool = True,
        max_entry_bytes: int = 1 << 20,
        namespace: str = "",
        name: str | None = None,
    ) -> None:
        if ttl is not None and not ttl > 0:
            raise ConfigError("Cache: ttl must be > 0 seconds (or None)")
        if max_entry_bytes < 1:
            raise ConfigError("Cache: max_entry_bytes must be >= 1")
        super().__init__(model, name=name)
        self.store: CacheStore = store if store is not None else MemoryStore()
        self.ttl = ttl
        self.sampled = sampled
        self.coalesce = coalesce
        self.max_entry_bytes = max_entry_bytes
        self.namespace = namespace
        self._coalescer = Coalescer()
        self._hits = self._misses = self._bypassed = 0
        self._stored = self._store_errors = self._upstream = 0

    def __repr__(self) -> str:
        return f"Cache({self._name!r}, wrapping=[{self.wrapped[0].name}], store={self.store!r})"

    def key(self, request: ModelRequest) -> str | None:
        """The request's key in the store, or ``None`` when it is not cacheable."""
        if not (self.sampled or is_deterministic(request)):
            return None
        return request_key(self.wrapped[0].name, request, namespace=self.namespace)

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        model = self.wrapped[0]
        key = self.key(request)
        if key is None:
            self._bypassed += 1
            async with aclosing(model.stream(request)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        hit = await self._lookup(key)
        if hit is not None:
            self._hits += 1
            yield hit
            return
        self._misses += 1

        def upstream() -> AsyncGenerator[Chunk, None]:
            self._upstream += 1
            return model.stream(request)

        if self.coalesce:
            flights = self._coalescer.stream(
                key, upstream, on_complete=lambda f: self._store(key, f.chunks)
            )
            async with aclosing(flights) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        seen: list[Chunk] = []
        async with aclosing(upstream()) as chunks:
            async for chunk in chunks:
                seen.append(chunk)
                yield chunk
        await self._store(key, seen)

    async def _lookup(self, key: str) -> Chunk | None:
        try:
            raw = await self.store.get(key)
        except CacheStoreError as exc:
            self._store_errors += 1
            _log.warning("cache %s: lookup failed, treated as a miss: %s", self._name, exc)
            return None
        if raw is None:
            return None
        try:
            return decode_answer(raw)
        except ValueError as exc:
            _log.warning("cache %s: undecodable entry, treated as a miss: %s", self._name, exc)
            return None

    async def _store(self, key: str, chunks: list[Chunk]) -> None:
        raw = encode_answer(chunks)
        if raw is None or len(raw) > self.max_entry_bytes:
            return
        try:
            await self.store.set(key, raw, self.ttl)
        except CacheStoreError as exc:
            self._store_errors += 1
            _log.warning("cache %s: write failed, answer not stored: %s", self._name, exc)
            return
        self._stored += 1

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(
            hits=self._hits,
            misses=self._misses,
            bypassed=self._bypassed,
            stored=self._stored,
            store_errors=self._store_errors,
            coalesced=self._coalescer.statistics().joined,
            upstream_calls=self._upstream,
        )


def encode_answer(chunks: list[Chunk]) -> bytes | None:
    """A finished answer (some chunk has a ``finish_reason``) as bytes; else ``None``.
    Answers that call tools are not stored: a call's id belongs to one conversation."""
    finish = next((c.finish_reason for c in reversed(chunks) if c.finish_reason), None)
    if finish is None or any(c.tool_calls for c in chunks):
        return None
    usage = next((c.usage for c in reversed(chunks) if c.usage is not None), None)
    logprobs: list[Any] | None = None
    if any(c.logprobs is not None for c in chunks):
        logprobs = [
            [lp.token, lp.logprob, [list(t) for t in lp.top]]
            for c in chunks
            for lp in c.logprobs or ()
        ]
    entry = {
        "text": "".join(c.text for c in chunks),
        "tokens": sum(c.tokens for c in chunks),
        "finish_reason": finish,
        "usage": None if usage is None else [usage.prompt_tokens, usage.completion_tokens],
        "logprobs": logprobs,
    }
    return json.dumps(entry, separators=(",", ":")).encode("utf-8", "surrogatepass")


def decode_answer(raw: bytes) -> Chunk:
    """The stored answer as one chunk, its usage marked ``cached``; ``ValueError`` if
    ``raw`` is not an entry ``encode_answer`` wrote."""
    try:
        entry = json.loads(raw.decode("utf-8", "surrogatepass"))
        usage = entry["usage"]
        logprobs = entry["logprobs"]
        return Chunk(
            text=str(entry["text"]),
            tokens=int(entry["tokens"]),
            logprobs=None
            if logprobs is None
            else tuple(
                TokenLogprob(str(t), float(lp), tuple((str(a), float(b)) for a, b in top))
                for t, lp, top in logprobs
            ),
            finish_reason=str(entry["finish_reason"]),
            usage=Usage(int(usage[0]), int(usage[1]), cached=True)
            if usage is not None
            else Usage(0, int(entry["tokens"]), cached=True),
        )
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"not a cache entry: {type(exc).__name__}: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"not a cache entry: {exc}") from exc


