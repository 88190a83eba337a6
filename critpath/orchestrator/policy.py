"""Per-step failure policies: retry (with tenacity) and fallback values.

A retry never sleeps past the deadline in force (``critpath.deadlines``): when the
next back-off would end after it, the last error is raised instead. An error that
says when to come back (``retry_after``, e.g. HTTP 429's ``Retry-After``) is waited
for only up to the policy's ``maximum`` back-off: a server asking for longer gets
the error raised at once (fail fast; a pool fails over to another replica).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import tenacity

from critpath.deadlines import remaining
from critpath.errors import ConfigError

__all__ = ["NO_FALLBACK", "RetryPolicy", "call_with_retry"]

T = TypeVar("T")
_log = logging.getLogger("critpath.retry")


class _NoFallback:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_FALLBACK"


NO_FALLBACK: Any = _NoFallback()
"""Sentinel: the step has no fallback value (its failure fails the run)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry a failing step: up to ``attempts`` tries, exponential back-off with jitter.

    ``retry_on`` lists the exception types worth retrying (default: any ``Exception``);
    ``retry_if`` can refine it (e.g. ``critpath.errors.is_retryable``).
    """

    attempts: int = 3
    initial: float = 0.05
    maximum: float = 2.0
    jitter: float = 0.05
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    retry_if: Callable[[BaseException], bool] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("RetryPolicy.attempts must be >= 1")
        if self.initial < 0 or self.maximum < 0 or self.jitter < 0:
            raise ConfigError("RetryPolicy back-off times must be >= 0")

    def _should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, self.retry_on):
            return False
        return self.retry_if(exc) if self.retry_if is not None else True


class _StopAtDeadline(tenacity.stop.stop_base):
    """Stop when the next back-off would end at or after the deadline in force
    (the deadline scope, or an explicit event-loop time, whichever is earlier)."""

    def __init__(self, deadline_at: float | None = None) -> None:
        self.deadline_at = deadline_at

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        left = remaining()
        if self.deadline_at is not None:
            mine = self.deadline_at - asyncio.get_running_loop().time()
            left = mine if left is None else min(left, mine)
        return left is not None and left <= (retry_state.upcoming_sleep or 0.0)


class _StopPastRetryAfter(tenacity.stop.stop_base):
    """Stop when the error asks to come back later than the policy's ``maximum``."""

    def __init__(self, maximum: float) -> None:
        self.maximum = maximum

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        after = getattr(exc, "retry_after", None)
        return isinstance(after, int | float) and not after <= self.maximum


class _WaitRetryAfter(tenacity.wait.wait_base):
    """The back-off, or longer when the error says when to come back (``retry_after``,
    e.g. HTTP 429's ``Retry-After``)."""

    def __init__(self, base: tenacity.wait.wait_base) -> None:
        self.base = base

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self.base(retry_state)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        after = getattr(exc, "retry_after", None)
        if isinstance(after, int | float) and after > wait:
            return float(after)
        return wait


async def call_with_retry(
    policy: RetryPolicy,
    fn: Callable[[], Awaitable[T]],
    on_attempt: Callable[[int], None] | None = None,
    *,
    deadline_at: float | None = None,
    name: str = "call",
) -> T:
    """Await ``fn()`` under ``policy``; the last error propagates unchanged.

    No retry starts if its back-off would end past the deadline in force or
    ``deadline_at`` (an event-loop time), nor when the error's ``retry_after`` exceeds
    ``policy.maximum``. Each retry is logged (``critpath.retry``,
    INFO) with ``name``, the attempt, the error and the back-off.
    """

    def before_sleep(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        _log.info(
            "%s: attempt %d failed (%s: %s); retrying in %.3fs",
            name, state.attempt_number, type(exc).__name__, exc, state.upcoming_sleep or 0.0,
        )  # fmt: skip

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_any(
            tenacity.stop_after_attempt(policy.attempts),
            _StopAtDeadline(deadline_at),
            _StopPastRetryAfter(policy.maximum),
        ),
        wait=_WaitRetryAfter(
            tenacity.wait_exponential(multiplier=policy.initial, max=policy.maximum)
            + tenacity.wait_random(0, policy.jitter)
        ),
        retry=tenacity.retry_if_exception(policy._should_retry),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            if on_attempt is not None:
                on_attempt(attempt.retry_state.attempt_number)
            return await fn()
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover
