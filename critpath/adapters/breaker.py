"""``Breaker``: outlier ejection for one replica, a pure state machine (no I/O, no loop).

A replica that keeps failing (errors, timeouts, connection resets) is **ejected** for
a cooldown — no request is sent to it — then **probed**: one request at a time goes
to it (half-open); a success closes the breaker, a failure ejects it again for twice
as long (up to ``max_cooldown``), like Envoy's outlier detection and LiteLLM's
cooldowns. A replica that answers 429 with ``Retry-After`` is **cooled** for just
that long (bounded by ``max_cooldown``) without counting as a failure.

::

    CLOSED --(failures in a row >= policy.failures)--> OPEN
    OPEN   --(cooldown passed)--> HALF_OPEN --(probe succeeds)--> CLOSED
                                            --(probe fails)----> OPEN (cooldown x 2)

The clock is injected (``clock()`` returns seconds; ``Pool`` passes the event loop's,
so it runs on virtual time too). ``Pool(breaker=BreakerPolicy(...))`` keeps one per
replica; the class is usable on its own.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

from critpath.errors import BadRequest, ConfigError, InvalidRequestError, ModelError, RateLimited

__all__ = ["Breaker", "BreakerPolicy", "BreakerState", "BreakerStatistics", "counts_as_failure"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When to eject a replica and for how long (seconds)."""

    failures: int = 3
    """Failures in a row that eject a replica."""
    cooldown: float = 5.0
    """The first ejection's length; each failed probe doubles it."""
    max_cooldown: float = 60.0
    """The longest ejection, and the longest a ``Retry-After`` cools a replica."""

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ConfigError("BreakerPolicy.failures must be >= 1")
        if not (self.cooldown > 0 and self.max_cooldown >= self.cooldown):
            raise ConfigError("BreakerPolicy needs 0 < cooldown <= max_cooldown")


@dataclass(frozen=True, slots=True)
class BreakerStatistics:
    state: BreakerState
    failures_in_row: int
    ejections: int
    probes: int
    cooled: int
    open_until: float | None


def counts_as_failure(exc: BaseException) -> bool:
    """Whether an error says the replica is unhealthy: any model error but a refused
    request (``BadRequest``, ``InvalidRequestError``: the request's fault) or a rate limit
    (cooled instead)."""
    return isinstance(exc, ModelError) and not isinstance(
        exc, BadRequest | RateLimited | InvalidRequestError
    )


class Breaker:
    """One replica's ejection state; see the module docstring."""

    __slots__ = (
        "_clock",
        "_cooldown",
        "_failures",
        "_open_until",
        "_probing",
        "_state",
        "cooled",
        "ejections",
        "policy",
        "probes",
    )

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._open_until = -math.inf
        self._cooldown = policy.cooldown
        self._probing = False
        self.ejections = 0
        self.probes = 0
        self.cooled = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            self._state = BreakerState.HALF_OPEN
        return self._state

    def available(self) -> bool:
        """Whether a request may be sent now (half-open: when no probe is in flight)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        return state is BreakerState.HALF_OPEN and not self._probing

    def begin(self) -> bool:
        """A request is sent; returns whether it is the half-open probe."""
        if self.state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            self.probes += 1
            return True
        return False

    def success(self) -> None:
        was_probe = self._probing
        self._probing = False
        if self.state is BreakerState.OPEN and not was_probe:
            return  # a request sent before the ejection: the cooldown still runs
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._state = BreakerState.CLOSED
            self._cooldown = self.policy.cooldown

    def failure(self) -> None:
        was_probe = self._probing
        self._probing = False
        self._failures += 1
        if was_probe or self.state is BreakerState.HALF_OPEN:
            self._cooldown = min(self._cooldown * 2, self.policy.max_cooldown)
            self._eject(self._cooldown)
        elif self._state is BreakerState.CLOSED and self._failures >= self.policy.failures:
            self._eject(self._cooldown)

    def cool(self, seconds: float) -> None:
        """The replica asked for ``seconds`` of rest (429 ``Retry-After``)."""
        self._probing = False
        seconds = min(max(seconds, 0.0), self.policy.max_cooldown)
        if seconds <= 0:
            return
        self.cooled += 1
        until = self._clock() + seconds
        if self.state is BreakerState.OPEN:
            self._open_until = max(self._open_until, until)
        else:
            self._state = BreakerState.OPEN
            self._open_until = until

    def abandon(self) -> None:
        """A request ended without an outcome (cancelled): free the probe slot."""
        self._probing = False

    def _eject(self, seconds: float) -> None:
        self._state = BreakerState.OPEN
        self._open_until = self._clock() + seconds
        self.ejections += 1

    def statistics(self) -> BreakerStatistics:
        state = self.state
        return BreakerStatistics(
            state=state,
            failures_in_row=self._failures,
            ejections=self.ejections,
            probes=self.probes,
            cooled=self.cooled,
            open_until=self._open_until if state is BreakerState.OPEN else None,
        )

    def __repr__(self) -> str:
        return f"Breaker({self.state.value}, failures_in_row={self._failures})"
