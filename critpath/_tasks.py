"""Ending tasks we own: cancel them and wait until every one has ended.

Runs and the wrappers (pool, hedge) own the tasks they start; none may outlive its owner. Waiting
goes on even if the owner is itself cancelled meanwhile, then that cancellation is
raised: a task is never left running behind a cancelled owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended; their results are dropped.

    If the caller is cancelled while it waits, it keeps waiting, then raises
    ``CancelledError``.
    """
    owned = list(tasks)
    pending = {t for t in owned if not t.done()}
    for t in pending:
        t.cancel()
    cancelled = False
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True
    for t in owned:
        if not t.cancelled():
            t.exception()  # retrieved: the owner chose to drop it
    if cancelled:
        raise asyncio.CancelledError
