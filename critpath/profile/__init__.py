"""Profile a model server: its latency shape, measured, as data the simulator and adapters use.

``critpath profile --base-url URL --model NAME`` drives an OpenAI-compatible server
(bounded in requests and seconds) across prompt lengths, output lengths and
concurrency levels (``ProfilePlan``), times every request (TTFT, time per output
token, end to end) and reads vLLM's ``/metrics`` beside the timings (prefix-cache
hits, speculative-decoding acceptance, KV-cache use, preemptions). The result, a
``ServerProfile``, holds the measurements and a ``LatencyProfile`` fitted to them:

- ``critpath sim-server --profile FILE`` and ``critpath.adapters.sim.measured`` serve a
  simulated model with that latency shape;
- ``ServerProfile.endpoint_stats()`` seeds an adapter's learned estimates, so a fresh
  process schedules well from its first request;
- ``verify`` replays the plan against the simulator calibrated from the profile (in
  virtual time) and compares the TTFT and TPOT quantiles;
- ``tradeoff_svg`` draws the batching trade-off (per-user and total tokens/s against
  concurrency).

Modules: ``plan`` (what to measure), ``prompts`` (texts of a given token length),
``metrics`` (``/metrics`` counters and gauges), ``runner`` (the ``Profiler``),
``document`` (the profile and its file), ``fit`` (the simulator profile), ``verify``,
``render`` (text and plot), ``arguments`` and ``command`` (the CLI).
"""

from __future__ import annotations

from critpath.profile.document import CellResult, Sample, ServerProfile
from critpath.profile.fit import fit_latency_profile
from critpath.profile.plan import CellSpec, Phase, ProfilePlan, TextKind
from critpath.profile.render import render, tradeoff_svg
from critpath.profile.runner import Profiler, profile_server
from critpath.profile.verify import Comparison, Verification, verify

__all__ = [
    "CellResult",
    "CellSpec",
    "Comparison",
    "Phase",
    "Profiler",
    "ProfilePlan",
    "Sample",
    "ServerProfile",
    "TextKind",
    "Verification",
    "fit_latency_profile",
    "profile_server",
    "render",
    "tradeoff_svg",
    "verify",
]
