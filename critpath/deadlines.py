"""Deadlines as scopes that nest, not timeout arguments threaded everywhere.

``async with deadline(2.0):`` bounds everything awaited inside it; an inner scope can
only tighten the outer one. Code anywhere below (a step, a model adapter, a retry
loop) reads the budget left with ``remaining()`` instead of taking a timeout argument.
Times are on the event loop's clock (``loop.time()``).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from critpath.errors import ConfigError

__all__ = ["current_deadline", "deadline", "deadline_before_scope", "remaining"]

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "critpath_deadline", default=None
)


def current_deadline() -> float | None:
    """The innermost deadline in force, as an event-loop time, or ``None``."""
    return _DEADLINE.get()


def deadline_before_scope(margin: float) -> float | None:
    """The deadline in force, ``margin`` seconds early, or ``None``.

    Code that wants to end on its own clock — to return a partial result, or raise a
    typed timeout — rather than be cancelled by the enclosing scope sets its timer here:
    a run takes 5 ms (so the call inside it, 2 ms earlier still, times out first).
    """
    when = _DEADLINE.get()
    return None if when is None else when - margin


def remaining() -> float | None:
    """Seconds left before the innermost deadline (may be negative), or ``None``."""
    when = _DEADLINE.get()
    if when is None:
        return None
    return when - asyncio.get_running_loop().time()


@asynccontextmanager
async def deadline(seconds: float | None) -> AsyncIterator[float | None]:
    """Bound the enclosed block by ``seconds`` (``None``: no new bound).

    Raises ``TimeoutError`` when the block runs past it (as ``asyncio.timeout`` does);
    yields the effective deadline (the earlier of this one and any outer one).
    """
    if seconds is not None and not seconds >= 0:
        raise ConfigError(f"deadline must be >= 0 seconds, got {seconds!r}")
    outer = _DEADLINE.get()
    when = outer
    if seconds is not None:
        new = asyncio.get_running_loop().time() + seconds
        when = new if outer is None else min(outer, new)
    token = _DEADLINE.set(when)
    try:
        async with asyncio.timeout_at(when):
            yield when
    finally:
        _DEADLINE.reset(token)


def _set_deadline(when: float | None) -> contextvars.Token[float | None]:
    """Set the deadline for the current context (the runtime does this per step task)."""
    return _DEADLINE.set(when)
