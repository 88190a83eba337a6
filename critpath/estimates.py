"""Latency estimates are data: online, per key, with quantiles.

The runtime learns each step's duration from the runs it serves and reads the
estimates back to predict the critical path; adapters and hedging (later modules)
learn TTFT and time per output token the same way. An estimate keeps an
exponentially weighted mean (fast to follow drift) and a bounded window of recent
samples for quantiles (exact over the window, so p95 means p95 of what was seen;
sorted lazily, when a quantile is read after new samples).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Iterator

from critpath.errors import ConfigError

__all__ = ["Estimates", "LatencyEstimate", "percentile"]


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in [0, 1]): the smallest value with at least
    ``q`` of the values at or below it; ``nan`` when empty. What benchmarks, the demo
    and load tests report (p99 of 1..100 is 99, not the maximum).

    >>> percentile(range(1, 101), 0.99), percentile([1, 2], 0.5), percentile([], 0.5)
    (99, 1, nan)
    """
    s = sorted(values)
    if not s:
        return math.nan
    if not 0.0 <= q <= 1.0:
        raise ConfigError(f"percentile must be in [0, 1], got {q!r}")
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s) - 1e-9) - 1))]


class LatencyEstimate:
    """One online latency estimate (seconds).

    >>> e = LatencyEstimate()
    >>> for v in (0.1, 0.2, 0.3):
    ...     e.observe(v)
    >>> e.count, round(e.quantile(0.5), 3)
    (3, 0.2)
    """

    __slots__ = ("_alpha", "_sorted", "_window", "count", "ewma", "max", "min", "total")

    def __init__(self, *, window: int = 512, alpha: float = 0.2) -> None:
        if window < 1:
            raise ConfigError("window must be >= 1")
        if not 0.0 < alpha <= 1.0:
            raise ConfigError("alpha must be in (0, 1]")
        self._alpha = alpha
        self._window: deque[float] = deque(maxlen=window)
        self._sorted: list[float] | None = []
        self.count = 0
        self.total = 0.0
        self.ewma = math.nan
        self.min = math.inf
        self.max = -math.inf

    def observe(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ConfigError(f"a latency must be a finite number >= 0, got {seconds!r}")
        self._window.append(seconds)
        self._sorted = None
        self.count += 1
        self.total += seconds
        self.ewma = seconds if self.count == 1 else self.ewma + self._alpha * (seconds - self.ewma)
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def samples(self) -> tuple[float, ...]:
        """The recent window, oldest first (what a shared store merges)."""
        return tuple(self._window)

    def adopt(self, samples: Iterable[float]) -> None:
        """Take a fleet's recent samples (oldest first) as this estimate's window and
        recompute the EWMA over them; ``count``, ``mean``, ``min`` and ``max`` stay this
        process's own. Used by ``critpath.serve.redis_estimates``."""
        values = [v for v in samples if math.isfinite(v) and v >= 0]
        if not values:
            return
        self._window.clear()
        self._window.extend(values)
        self._sorted = None
        ewma = values[0]
        for v in values[1:]:
            ewma += self._alpha * (v - ewma)
        self.ewma = ewma

    @property
    def mean(self) -> float:
        """Mean over every observation (``nan`` before the first)."""
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Quantile ``q`` in [0, 1] of the recent window, linear interpolation; ``nan`` if empty."""
        if not 0.0 <= q <= 1.0:
            raise ConfigError(f"quantile must be in [0, 1], got {q!r}")
        s = self._sorted
        if s is None:
            s = self._sorted = sorted(self._window)
        if not s:
            return math.nan
        pos = q * (len(s) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    @property
    def p50(self) -> float:
        return self.quantile(0.5)

    @property
    def p95(self) -> float:
        return self.quantile(0.95)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    def statistics(self) -> dict[str, float]:
        return {
            "count": float(self.count),
            "mean": self.mean,
            "ewma": self.ewma,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "min": self.min if self.count else math.nan,
            "max": self.max if self.count else math.nan,
        }

    def __repr__(self) -> str:
        return f"LatencyEstimate(count={self.count}, ewma={self.ewma:.6g}, p95={self.p95:.6g})"


class Estimates:
    """A store of ``LatencyEstimate`` by key, with a default for keys never seen.

    ``predict(key)`` is what the scheduler reads: the learned EWMA when there is
    one, else the given fallback, else ``default``.
    """

    def __init__(self, *, default: float = 1.0, window: int = 512, alpha: float = 0.2) -> None:
        if not math.isfinite(default) or default < 0:
            raise ConfigError("default estimate must be a finite number >= 0")
        LatencyEstimate(window=window, alpha=alpha)  # validates window and alpha now
        self.default = default
        self._window = window
        self._alpha = alpha
        self._by_key: dict[str, LatencyEstimate] = {}
        self._routes: dict[str, Counter[str]] = {}

    def observe_route(self, router: str, chosen: Iterable[str]) -> None:
        """Count a router's decision (what ``predict="learned"`` reads)."""
        counts = self._routes.setdefault(router, Counter())
        for branch in chosen:
            counts[branch] += 1

    def route_counts(self, router: str) -> Counter[str]:
        """How often each branch of ``router`` was chosen so far."""
        return Counter(self._routes.get(router, {}))

    def observe(self, key: str, seconds: float) -> None:
        est = self._by_key.get(key)
        if est is None:
            est = self._by_key[key] = LatencyEstimate(window=self._window, alpha=self._alpha)
        est.observe(seconds)

    def get(self, key: str) -> LatencyEstimate | None:
        return self._by_key.get(key)

    def estimate(self, key: str) -> LatencyEstimate:
        """The estimate of ``key``, created empty if there is none yet."""
        est = self._by_key.get(key)
        if est is None:
            est = self._by_key[key] = LatencyEstimate(window=self._window, alpha=self._alpha)
        return est

    def predict(self, key: str, fallback: float | None = None) -> float:
        est = self._by_key.get(key)
        if est is not None and not math.isnan(est.ewma):  # learned here or adopted
            return est.ewma
        return self.default if fallback is None else fallback

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)
