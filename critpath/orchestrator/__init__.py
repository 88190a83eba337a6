"""Graphs, the async runtime, scheduling, critical path and run reports.

Define a ``Graph`` of steps whose dependencies are their parameter names; run it and
every step starts the moment its inputs are ready, least slack first when concurrency
is scarce; read the ``RunReport`` for the critical path. Shorten the path itself with
speculative branches (``speculation``: a router's predicted branch starts before it
decides) and streaming pipelines (``streams``: ``Graph.stream`` + ``Graph.each``).
"""

from critpath.orchestrator.analysis import PathAnalysis, analyse
from critpath.orchestrator.context import StepContext, current_step
from critpath.orchestrator.events import (
    RouteChosen,
    RunEvent,
    RunFinished,
    SpeculationCancelled,
    SpeculationCommitted,
    SpeculationStarted,
    StepCancelled,
    StepFailed,
    StepFinished,
    StepItem,
    StepPartial,
    StepQueued,
    StepSkipped,
    StepStarted,
)
from critpath.orchestrator.graph import Graph, Param, StepSpec
from critpath.orchestrator.limits import Limiter
from critpath.orchestrator.memo import StepCache
from critpath.orchestrator.observed import Breakdown, PathStep, Release, observed_path
from critpath.orchestrator.policy import NO_FALLBACK, RetryPolicy
from critpath.orchestrator.report import RunReport, StepRecord, StepReport
from critpath.orchestrator.runtime import Run, RunResult
from critpath.orchestrator.speculation import (
    Speculation,
    SpeculationBudget,
    SpeculationStats,
    Speculative,
    Speculator,
)
from critpath.orchestrator.states import RunStatus, StepStatus
from critpath.orchestrator.streams import ItemTracker
from critpath.orchestrator.substeps import SubStepKind, SubStepRecord, SubSteps

__all__ = [
    "NO_FALLBACK",
    "Breakdown",
    "Graph",
    "ItemTracker",
    "Limiter",
    "Param",
    "PathAnalysis",
    "PathStep",
    "Release",
    "RetryPolicy",
    "RouteChosen",
    "Run",
    "RunEvent",
    "RunFinished",
    "RunReport",
    "RunResult",
    "RunStatus",
    "Speculation",
    "SpeculationBudget",
    "SpeculationCancelled",
    "SpeculationCommitted",
    "SpeculationStarted",
    "SpeculationStats",
    "Speculative",
    "StepCache",
    "Speculator",
    "StepCancelled",
    "StepContext",
    "StepFailed",
    "StepFinished",
    "StepItem",
    "StepPartial",
    "StepQueued",
    "StepRecord",
    "StepReport",
    "StepSkipped",
    "StepSpec",
    "SubStepKind",
    "SubStepRecord",
    "SubSteps",
    "StepStarted",
    "StepStatus",
    "analyse",
    "current_step",
    "observed_path",
]
