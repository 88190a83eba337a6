"""Open-loop arrival times: a Poisson process (exponential gaps), bounded.

>>> times = poisson_arrivals(10.0, max_requests=1000, duration=1e9, seed=1)
>>> len(times), round(1000 / times[-1])          # about 10 a second
(1000, 10)
>>> poisson_arrivals(5.0, max_requests=100, duration=2.0, seed=0)[-1] < 2.0
True
"""

from __future__ import annotations

import random

from critpath.errors import ConfigError

__all__ = ["poisson_arrivals"]


def poisson_arrivals(
    rate: float, *, max_requests: int, duration: float, seed: int = 0
) -> list[float]:
    """Arrival times (seconds from the start) at ``rate`` per second, at most
    ``max_requests`` and none at or after ``duration``."""
    if not rate > 0:
        raise ConfigError(f"rate must be > 0 requests/s, got {rate!r}")
    if max_requests < 1 or not duration > 0:
        raise ConfigError("a load test needs max_requests >= 1 and duration > 0")
    rng = random.Random(seed)
    out: list[float] = []
    t = 0.0
    while len(out) < max_requests:
        t += rng.expovariate(rate)
        if t >= duration:
            break
        out.append(t)
    return out
