"""critpath: run compound AI systems at the speed of their critical path."""

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
    Speculation,
    SpeculationBudget,
    Speculative,
    StepContext,
    current_step,
)

__version__ = "0.1.0"

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
    "Speculation",
    "SpeculationBudget",
    "Speculative",
    "StepContext",
    "StepFailedError",
    "UnknownDependencyError",
    "__version__",
    "current_step",
    "deadline",
    "remaining",
]
