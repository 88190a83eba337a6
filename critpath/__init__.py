"""critpath: run compound AI systems at the speed of their critical path."""

import logging

from critpath.deadlines import deadline, remaining
from critpath.errors import (
    ConfigError,
    CritpathError,
    CycleError,
    DeadlineExceeded,
    DuplicateStepError,
    GraphError,
    InvalidStepError,
    MissingInputError,
    RetryableError,
    RouteError,
    RunCancelled,
    RunError,
    StepFailedError,
    UnknownDependencyError,
)
from critpath.estimates import Estimates, LatencyEstimate
from critpath.orchestrator import (
    Graph,
    Limiter,
    RetryPolicy,
    Run,
    RunReport,
    RunResult,
    RunStatus,
    Speculation,
    SpeculationBudget,
    Speculative,
    StepCache,
    StepContext,
    StepStatus,
    current_step,
)

__version__ = "0.1.0"

# Silent by default (like httpx): applications configure logging; critpath only emits.
logging.getLogger("critpath").addHandler(logging.NullHandler())

__all__ = [
    "ConfigError",
    "CritpathError",
    "CycleError",
    "DeadlineExceeded",
    "DuplicateStepError",
    "Estimates",
    "Graph",
    "GraphError",
    "InvalidStepError",
    "LatencyEstimate",
    "Limiter",
    "MissingInputError",
    "RetryPolicy",
    "RetryableError",
    "RouteError",
    "Run",
    "RunCancelled",
    "RunError",
    "RunReport",
    "RunResult",
    "RunStatus",
    "Speculation",
    "SpeculationBudget",
    "Speculative",
    "StepCache",
    "StepContext",
    "StepStatus",
    "StepFailedError",
    "UnknownDependencyError",
    "__version__",
    "current_step",
    "deadline",
    "remaining",
]
