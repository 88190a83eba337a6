"""One clock for every duration critpath measures: the running event loop's.

``now()`` is ``loop.time()`` inside a running loop (so timings agree with deadlines and
timers, and a virtual-time loop — ``critpath.adapters.sim.clock`` — makes them
virtual), else ``time.monotonic()``, which is what asyncio's default loop uses.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["now"]


def now() -> float:
    """Seconds on the running event loop's clock (``time.monotonic()`` outside one)."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()
