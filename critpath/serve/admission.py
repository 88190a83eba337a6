"""``AdmissionController``: shed a request early when it would miss its SLO anyway.

A service that accepts everything under overload makes every request slow: the
queue grows and each admitted request waits behind all the others. Admission control
predicts the latency a new request would see — the learned service time (a quantile
of what finished requests took) plus the wait for a free place, from the requests
ahead of it — and refuses it at once (``Overloaded``, which a service answers with
HTTP 503 and ``Retry-After``) when the prediction misses the request's SLO, or when
the queue is full (``max_queue``: never unbounded growth).

::

    controller = AdmissionController(concurrency=32, max_queue=64, slo=2.0)
    with controller.admit():           # raises Overloaded, or holds a place
        answer = await complete(model, request)

The prediction is a small pure computation (``predict``) over the controller's state;
the clock is injected (``clock``; the running loop's by default, so it runs on
virtual time). ``concurrency`` is how many requests the backend serves at once (the
fleet's slots); queued requests are those admitted beyond it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from critpath.errors import ConfigError, Overloaded
from critpath.estimates import LatencyEstimate

__all__ = ["AdmissionController", "AdmissionStatistics", "Admitted"]


@dataclass(frozen=True, slots=True)
class AdmissionStatistics:
    admitted: int
    shed_slo: int
    shed_queue: int
    in_flight: int
    service_s: float
    """The service time the predictions use now (``nan`` before anything finished)."""

    @property
    def shed(self) -> int:
        return self.shed_slo + self.shed_queue


class Admitted:
    """A place held by an admitted request; releasing it records how long it took."""

    __slots__ = ("_controller", "_done", "started", "waves")

    def __init__(self, controller: AdmissionController, started: float, waves: int) -> None:
        self._controller = controller
        self._done = False
        self.started = started
        self.waves = waves
        """Service times it was predicted to wait for (it learns its duration / (1 + waves))."""

    def release(self, *, record: bool = True) -> None:
        """Give the place back (idempotent); ``record``: learn its duration."""
        if not self._done:
            self._done = True
            self._controller._release(self, record)

    def __enter__(self) -> Admitted:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # a cancelled request did not run its course: do not learn from it
        self.release(record=exc_type is None or not issubclass(exc_type, asyncio.CancelledError))


class AdmissionController:
    """Admit or shed requests by predicted latency; see the module docstring.

    ``slo``: the default latency objective (seconds; ``admit(slo=)`` per request);
    ``quantile``: of the learned service times, the one predictions use (0.9: a
    cautious estimate); ``initial_service``: the service time assumed until requests
    have finished (``None``: admit everything that fits the queue until then).
    """

    def __init__(
        self,
        *,
        concurrency: int,
        max_queue: int,
        slo: float | None = None,
        quantile: float = 0.9,
        initial_service: float | None = None,
        window: int = 256,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if concurrency < 1 or max_queue < 0:
            raise ConfigError("concurrency must be >= 1 and max_queue >= 0")
        if slo is not None and not slo > 0:
            raise ConfigError("slo must be > 0 seconds")
        if not 0 < quantile < 1:
            raise ConfigError("quantile must be in (0, 1)")
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.slo = slo
        self.quantile = quantile
        self.initial_service = initial_service
        self._service = LatencyEstimate(window=window)
        self._clock = clock
        self._in_flight = 0
        self._admitted = 0
        self._shed_slo = 0
        self._shed_queue = 0

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def service_time(self) -> float:
        """The service time predictions use (``nan`` when unknown)."""
        if self._service.count:
            return self._service.quantile(self.quantile)
        return math.nan if self.initial_service is None else self.initial_service

    def predict(self, in_flight: int | None = None) -> float:
        """The latency a request admitted now would see: its own service time plus the
        wait for a place (each ``concurrency`` requests ahead of it cost one service
        time); ``nan`` when the service time is not known yet."""
        n = self._in_flight if in_flight is None else in_flight
        service = self.service_time()
        return service * (1 + self._waves(n))

    def _waves(self, in_flight: int) -> int:
        return math.ceil(max(0, in_flight + 1 - self.concurrency) / self.concurrency)

    def admit(self, slo: float | None = None) -> Admitted:
        """Hold a place for a request, or raise ``Overloaded`` (with ``retry_after``)."""
        target = self.slo if slo is None else slo
        if self._in_flight >= self.concurrency + self.max_queue:
            self._shed_queue += 1
            raise Overloaded(
                f"the queue is full ({self._in_flight} requests in flight)",
                retry_after=self._retry_after(),
            )
        predicted = self.predict()
        if target is not None and predicted > target:  # nan (unknown) admits
            self._shed_slo += 1
            raise Overloaded(
                f"predicted latency {predicted:.3f}s would miss the SLO of {target:.3f}s",
                retry_after=self._retry_after(),
                predicted=predicted,
            )
        waves = self._waves(self._in_flight)
        self._in_flight += 1
        self._admitted += 1
        return Admitted(self, self._now(), waves)

    def _retry_after(self) -> float:
        service = self.service_time()
        return 1.0 if math.isnan(service) else max(service, 0.001)

    def _release(self, ticket: Admitted, record: bool) -> None:
        self._in_flight -= 1
        if record:
            took = max(0.0, self._now() - ticket.started)
            self._service.observe(took / (1 + ticket.waves))

    def statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(
            admitted=self._admitted,
            shed_slo=self._shed_slo,
            shed_queue=self._shed_queue,
            in_flight=self._in_flight,
            service_s=self.service_time(),
        )
