"""Ending tasks we own: cancel them and wait until every one has ended.

Runs and the wrappers (pool, hedge) own the tasks they start; none may outlive its
owner. Waiting goes on even if the owner is itself cancelled meanwhile, then that
cancellation is raised: a task is never left running behind a cancelled owner.

``TaskSet`` is the owner's side: the one way to start a task that registers itself
and deregisters when it ends, then cancel them all (``cancel_all``) or wait for them
all (``wait_all``), like a Trio nursery without its own scope.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

__all__ = ["TaskSet", "abandoned_tasks", "cancel_and_wait", "polling"]

T = TypeVar("T")
_log = logging.getLogger("critpath.tasks")
_ABANDONED: set[asyncio.Task[Any]] = set()


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], *, grace: float | None = None
) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait until each has ended; their results are dropped.

    If the caller is cancelled while it waits, it keeps waiting, then raises
    ``CancelledError``. With ``grace`` (seconds), waiting stops that long after the
    cancellation: the tasks that had not ended (they swallowed the cancellation, or
    their clean-up blocks) are returned — recorded by ``abandoned_tasks()`` and
    cancelled again every ``grace`` seconds until they end — instead of hanging the
    caller for ever.
    """
    owned = list(tasks)
    pending = {t for t in owned if not t.done()}
    for t in pending:
        t.cancel()
    cancelled = False
    loop = asyncio.get_running_loop()
    give_up = None if grace is None else loop.time() + grace
    while pending:
        timeout = None if give_up is None else max(0.0, give_up - loop.time())
        try:
            _, pending = await asyncio.wait(pending, timeout=timeout)
        except asyncio.CancelledError:
            cancelled = True
            continue
        if give_up is not None and loop.time() >= give_up:
            break
    for t in owned:
        if t.done() and not t.cancelled():
            t.exception()  # retrieved: the owner chose to drop it
    stuck = {t for t in pending if not t.done()}
    for t in stuck:
        _abandon(t, grace or 0.0)
    if cancelled:
        raise asyncio.CancelledError
    return stuck


def _abandon(task: asyncio.Task[Any], every: float) -> None:
    """Keep a task that ignored its cancellation visible, and keep cancelling it."""
    _ABANDONED.add(task)
    loop = task.get_loop()
    handle: list[asyncio.TimerHandle] = []

    def again() -> None:
        if not task.done():
            task.cancel()
            handle[:] = [loop.call_later(max(every, 0.05), again)]

    def ended(t: asyncio.Task[Any]) -> None:
        _ABANDONED.discard(t)
        for h in handle:
            h.cancel()
        if not t.cancelled():
            t.exception()
        _log.info("abandoned task %s ended", t.get_name())

    handle.append(loop.call_later(max(every, 0.05), again))
    task.add_done_callback(ended)


def abandoned_tasks() -> set[asyncio.Task[Any]]:
    """Tasks whose owner stopped waiting for them after a grace period (still running)."""
    return {t for t in _ABANDONED if not t.done()}


class TaskSet:
    """Tasks owned together: ``spawn`` starts one; ``cancel_all`` ends them;
    ``wait_all`` waits for them without cancelling. A task may carry a ``tag`` (what
    it works for), read back with ``tag_of``.

    Finished tasks are dropped lazily (when the set has doubled since the last sweep)
    rather than by a done-callback each: a run starts one task per step, and a
    callback per task is a measurable share of the runtime's overhead.
    """

    __slots__ = ("_loop", "_sweep_at", "_tasks")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._tasks: dict[asyncio.Task[Any], object] = {}
        self._sweep_at = 64

    def spawn(
        self, coro: Coroutine[Any, Any, T], name: str, tag: object = None
    ) -> asyncio.Task[T]:
        task = self._loop.create_task(coro, name=name)
        tasks = self._tasks
        tasks[task] = tag
        if len(tasks) >= self._sweep_at:
            self._sweep()
        return task

    def _sweep(self) -> None:
        self._tasks = {t: tag for t, tag in self._tasks.items() if not t.done()}
        self._sweep_at = max(64, 2 * len(self._tasks))

    def tag_of(self, task: asyncio.Task[Any]) -> object:
        return self._tasks.get(task)

    def running(self) -> list[asyncio.Task[Any]]:
        """The tasks that have not ended."""
        return [t for t in self._tasks if not t.done()]

    def __len__(self) -> int:
        return len(self.running())

    def __bool__(self) -> bool:
        return any(not t.done() for t in self._tasks)

    async def cancel_all(self, *, grace: float | None = None) -> set[asyncio.Task[Any]]:
        """Cancel every task and wait for them (see ``cancel_and_wait``); the tasks
        still running after ``grace`` are returned (they keep their tags)."""
        stuck = await cancel_and_wait(list(self._tasks), grace=grace)
        self._sweep()
        return stuck

    async def wait_all(self) -> bool:
        """Wait until every task (including ones started meanwhile) has ended, even if
        the caller is cancelled meanwhile; returns whether it was."""
        cancelled = False
        while pending := self.running():
            try:
                await asyncio.wait(pending)
            except asyncio.CancelledError:
                cancelled = True
        self._sweep()
        return cancelled


@asynccontextmanager
async def polling(
    step: Callable[[], Awaitable[object]],
    interval: float,
    *,
    name: str,
    bug: Callable[[], BaseException | None] = lambda: None,
) -> AsyncIterator[None]:
    """Await ``step()`` every ``interval`` seconds while the block runs, in a task the
    block owns (cancelled and awaited on exit). An exception ``step`` raised, or the one
    ``bug()`` reports at exit (a probe that swallowed its own), propagates when the block
    ends, unless the block is raising its own exception, which it must not mask."""

    async def poll() -> None:
        while True:
            await step()
            await asyncio.sleep(interval)

    task = asyncio.create_task(poll(), name=name)
    try:
        yield
    finally:
        error = task.exception() if task.done() and not task.cancelled() else None
        await cancel_and_wait([task])
        error = error or bug()
        if error is not None and sys.exc_info()[1] is None:
            raise error
