"""Simulated models: the embedded default fleet for demos, load tests and benchmarks.

Latency like real LLM serving (queueing, prefill, continuous batching, stragglers,
faults), calibrated on measured endpoints (``profiles``); answers from a synthetic task,
recorded real answers, or any function (``answers``); deterministic under a seed.
"""

from critpath.adapters.sim.answers import (
    Answer,
    AnswerSource,
    FunctionAnswers,
    Question,
    RecordedAnswers,
    SyntheticTask,
    parse_choice,
)
from critpath.adapters.sim.fleet import Fleet
from critpath.adapters.sim.model import SimulatedModel, SlotScheduler
from critpath.adapters.sim.profiles import (
    PROFILES,
    LatencyProfile,
    calibrate_llmperf,
    profile_for_params,
)

__all__ = [
    "PROFILES",
    "Answer",
    "AnswerSource",
    "Fleet",
    "FunctionAnswers",
    "LatencyProfile",
    "Question",
    "RecordedAnswers",
    "SimulatedModel",
    "SlotScheduler",
    "SyntheticTask",
    "calibrate_llmperf",
    "parse_choice",
    "profile_for_params",
]
