"""Simulated models: the embedded default fleet for demos, load tests and benchmarks.

Latency like real LLM serving (queueing, prefill, continuous batching, stragglers,
faults), calibrated on measured endpoints (``profiles``); answers from a synthetic task,
recorded real answers, or any function (``answers``); deterministic under a seed.
``server`` serves a fleet over the OpenAI-compatible HTTP API (``critpath sim-server``;
Starlette and uvicorn, the ``serve`` extra, are imported only when it starts).
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
from critpath.adapters.sim.server import SimServer, create_app, serve

__all__ = [
    "PROFILES",
    "Answer",
    "AnswerSource",
    "Fleet",
    "FunctionAnswers",
    "LatencyProfile",
    "Question",
    "RecordedAnswers",
    "SimServer",
    "SimulatedModel",
    "SlotScheduler",
    "SyntheticTask",
    "calibrate_llmperf",
    "create_app",
    "parse_choice",
    "profile_for_params",
    "serve",
]
