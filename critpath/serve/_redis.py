"""The Redis client the shared-state classes use: imported lazily, errors named once.

redis-py is the ``redis`` extra (``pip install 'critpath[redis]'``); ``import critpath``
never needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from critpath.errors import ConfigError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["STORE_ERRORS", "connect"]

_HINT = "shared state needs redis-py: pip install 'critpath[redis]'"


def _store_errors() -> tuple[type[BaseException], ...]:
    try:
        from redis.exceptions import RedisError
    except ImportError:
        return (OSError,)
    return (RedisError, OSError)


STORE_ERRORS: tuple[type[BaseException], ...] = _store_errors()
"""What a Redis call raises when the store is unreachable or refuses the command."""


def connect(url: str) -> Redis:
    """A client for ``url`` (``redis://127.0.0.1:6379/0``); it connects on first use."""
    try:
        from redis.asyncio import Redis
    except ImportError as exc:
        raise ConfigError(_HINT) from exc
    try:
        return Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {url!r}: {exc}") from exc
