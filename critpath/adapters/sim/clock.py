"""Virtual time: run simulated fleets as fast as the CPU allows, with exact timings.

``VirtualTimeLoop`` is an asyncio event loop whose clock (``loop.time()``) jumps: when
nothing is ready to run and no I/O is ready, it advances straight to the next timer
instead of waiting for it. Everything that sleeps or times out on the loop —
simulated models, deadlines, hedges, early quorum, cascade budgets, and every
duration critpath measures (``critpath._clock``) — then runs in simulated seconds,
and an hour of simulated traffic takes as long as its callbacks take to execute.

Real I/O still works (sockets, ``asyncio.to_thread``), but virtual time does not wait
for it: when a timer is due, the clock jumps to it even if a thread is still working.
Use it for simulations, not for talking to real servers.

>>> import asyncio
>>> async def hour() -> float:
...     loop = asyncio.get_running_loop()
...     t0 = loop.time()
...     await asyncio.sleep(3600)
...     return loop.time() - t0
>>> run_virtual(hour())
3600.0
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

__all__ = ["VirtualTimeLoop", "run_virtual"]

T = TypeVar("T")


class _JumpingSelector(selectors.BaseSelector):
    """Polls the real selector without blocking; a wait for a timer moves the clock."""

    def __init__(self, inner: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._inner = inner
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready:
            return ready
        if timeout is None:  # no timer at all: only real I/O can wake us
            return self._inner.select(None)
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._inner.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time (see the module docstring); ``start``: its
    initial ``time()``."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._virtual_now = float(start)
        self._selector: selectors.BaseSelector = _JumpingSelector(self._selector, self)

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the loop does this itself when it would wait)."""
        if seconds < 0:
            raise ValueError("virtual time cannot go backwards")
        self._virtual_now += seconds


def run_virtual(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """``asyncio.run(main)`` on a fresh ``VirtualTimeLoop``."""
    with asyncio.Runner(debug=debug, loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
