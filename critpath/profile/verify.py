"""Does the simulator calibrated from a profile reproduce what was measured?

``verify(profile)`` serves the fitted model on a ``SimServer`` (loopback, in virtual
time: ``critpath.adapters.sim.clock``, so the check takes seconds and adds no timing
noise of its own), profiles it with the same plan — less the prefix and text phases,
which need a server's prefix cache and speculative decoding; with several times the
requests per cell, so that the simulated side is the model's quantiles rather than a
few draws — and compares, cell by
cell, the TTFT and TPOT quantiles (p50 and p90 by default). A row passes when the
simulated quantile is within ``tolerance`` (relative) of the measured one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from critpath.adapters.sim.clock import run_virtual
from critpath.adapters.sim.measured import measured_fleet
from critpath.adapters.sim.server import SimServer
from critpath.profile.document import ServerProfile
from critpath.profile.runner import Profiler

__all__ = ["Comparison", "Verification", "compare", "replay", "verify"]


@dataclass(frozen=True, slots=True)
class Comparison:
    """One quantile of one metric in one cell, measured and simulated (seconds)."""

    cell: str
    metric: str
    q: float
    measured: float
    simulated: float

    @property
    def error(self) -> float:
        """Relative error of the simulation (``simulated / measured - 1``)."""
        return self.simulated / self.measured - 1.0 if self.measured > 0 else math.inf

    def to_dict(self) -> dict[str, object]:
        return {"cell": self.cell, "metric": self.metric, "q": self.q,
                "measured_ms": round(self.measured * 1000, 3),
                "simulated_ms": round(self.simulated * 1000, 3),
                "error": round(self.error, 4)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verification:
    """Every comparison, and whether each is within ``tolerance``."""

    rows: tuple[Comparison, ...]
    tolerance: float
    simulated: ServerProfile

    @property
    def failures(self) -> list[Comparison]:
        return [r for r in self.rows if not abs(r.error) <= self.tolerance]

    @property
    def passed(self) -> bool:
        return bool(self.rows) and not self.failures

    @property
    def worst(self) -> Comparison | None:
        return max(self.rows, key=lambda r: abs(r.error), default=None)

    def to_dict(self) -> dict[str, object]:
        return {
            "tolerance": self.tolerance,
            "passed": self.passed,
            "within": sum(1 for r in self.rows if abs(r.error) <= self.tolerance),
            "rows": [r.to_dict() for r in self.rows],
        }


async def replay(profile: ServerProfile, *, seed: int = 0, repeat: int = 5) -> ServerProfile:
    """Profile the simulator calibrated from ``profile`` with the same plan (minus the
    prefix and text phases), ``repeat`` times as many requests per cell (in as many
    more rounds, so that each round is as long as measured) so that the
    simulated quantiles are the model's, not the noise of a few draws. Run it on a
    virtual-time loop (``verify`` does)."""
    plan = profile.plan.without_server_features()
    plan = replace(plan, repeat=plan.repeat * repeat, max_requests=10**7,
                   max_seconds=max(plan.max_seconds, 1e6))  # fmt: skip
    fleet = measured_fleet(profile.measured_model(), seed=seed)
    async with SimServer(fleet) as server:
        return await Profiler(server.base_url, profile.model, plan, nonce="replay").run()


def compare(
    measured: ServerProfile,
    simulated: ServerProfile,
    *,
    quantiles: Sequence[float] = (0.5, 0.9),
    metrics: Sequence[str] = ("ttft", "tpot"),
    min_samples: int = 5,
) -> list[Comparison]:
    """Quantiles of the cells both profiles have, with ``min_samples`` or more each."""
    sim = {c.spec.key: c for c in simulated.cells}
    rows: list[Comparison] = []
    for cell in measured.cells:
        other = sim.get(cell.spec.key)
        if other is None:
            continue
        for metric in metrics:
            a, b = cell.values(metric), other.values(metric)
            if len(a) < min_samples or len(b) < min_samples:
                continue
            for q in quantiles:
                measured_q, simulated_q = cell.quantile(metric, q), other.quantile(metric, q)
                rows.append(Comparison(cell.spec.key, metric, q, measured_q, simulated_q))
    return rows


def verify(
    profile: ServerProfile, *, tolerance: float = 0.15, seed: int = 0, repeat: int = 5
) -> Verification:
    """Replay ``profile`` against its simulator (virtual time; ``repeat``: see
    ``replay``) and compare (see above)."""
    simulated = run_virtual(replay(profile, seed=seed, repeat=repeat))
    return Verification(tuple(compare(profile, simulated)), tolerance, simulated)
