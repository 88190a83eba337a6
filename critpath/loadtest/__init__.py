"""``critpath loadtest``: open-loop load against a strategy or an HTTP endpoint.

Requests arrive as a Poisson process at the target rate, whatever the responses do
(**open loop**: a slow server does not slow the offered load down and hide its own
latency, as a closed loop of N users would). A run is bounded in requests and in
time, and stays on loopback. It reports throughput, goodput under an SLO (answers
within ``--slo-ms`` per second), latency and TTFT percentiles (p50/p90/p99/p99.9) and
errors; ``--compare`` runs several strategies at the same offered load, ``--rates``
sweeps the rate and plots p99 against it.

Targets (``targets``): a demo strategy in process over the simulated fleet (virtual
time by default: exact and fast; ``--real-time`` for wall-clock), an OpenAI-compatible
``/v1/chat/completions`` endpoint, or the example chat service's ``/chat`` (SSE).
"""

from critpath.loadtest.arrivals import poisson_arrivals
from critpath.loadtest.runner import LoadResult, Sample, run_load, summarise_samples
from critpath.loadtest.targets import ChatTarget, OpenAITarget, StrategyTarget, Target

__all__ = [
    "ChatTarget",
    "LoadResult",
    "OpenAITarget",
    "Sample",
    "StrategyTarget",
    "Target",
    "poisson_arrivals",
    "run_load",
    "summarise_samples",
]
