"""``RedisStore``: a store shared by many processes and machines (redis-py's asyncio client).

Values are Redis strings under ``prefix + key``, written with ``SET ... PX`` so Redis
expires them itself. Size is bounded by the server (``maxmemory`` with an LRU
``maxmemory-policy`` such as ``allkeys-lru``), as Redis is meant to be run as a cache.
Short socket timeouts (``timeout``, default 0.5 s) keep a slow or dead server from
stalling requests: every failure (connection refused, timeout, a Redis error) is a
``CacheStoreError``, which a cache turns into a miss.

redis-py is the ``redis`` extra (``pip install 'critpath[redis]'``); it is imported when
a store is made, so ``import critpath`` never needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from critpath.errors import CacheStoreError, ConfigError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStore"]


class RedisStore:
    """A store on the Redis server at ``url`` (``redis://127.0.0.1:6379/0``), or on an
    existing ``redis.asyncio.Redis`` ``client`` (not closed by ``aclose``)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = "critpath:cache:",
        timeout: float = 0.5,
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigError("RedisStore: give url= or client=, not both")
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError(
                "RedisStore needs redis-py: pip install 'critpath[redis]'"
            ) from exc
        import redis.exceptions

        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
        self._owns = client is None
        self._client: Redis = (
            client
            if client is not None
            else aioredis.Redis.from_url(
                url or "", socket_timeout=timeout, socket_connect_timeout=timeout
            )
        )
        self.prefix = prefix
        self._url = url

    @property
    def kind(self) -> str:
        return "redis"

    @property
    def client(self) -> Redis:
        return self._client

    def __repr__(self) -> str:
        where = self._url if self._url is not None else "client"
        return f"RedisStore({where!r}, prefix={self.prefix!r})"

    def _fail(self, exc: BaseException) -> CacheStoreError:
        return CacheStoreError(f"{self!r}: {type(exc).__name__}: {exc}")

    async def get(self, key: str) -> bytes | None:
        try:
            value: Any = await self._client.get(self.prefix + key)
        except self._errors as exc:
            raise self._fail(exc) from exc
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        if ttl is not None and not ttl > 0:
            raise ConfigError("ttl must be > 0 seconds (or None)")
        px = None if ttl is None else max(1, round(ttl * 1000))
        try:
            await self._client.set(self.prefix + key, value, px=px)
        except self._errors as exc:
            raise self._fail(exc) from exc

    async def aclose(self) -> None:
        if self._owns:
            try:
                await self._client.aclose()
            except self._errors as exc:
                raise self._fail(exc) from exc
