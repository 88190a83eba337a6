"""The model protocol and its implementations.

- ``protocol``: ``Model`` (one streaming method), ``ModelRequest``, ``Chunk``...
- ``completion``: ``complete(model, request)``, the stream consumed, with timings.
- ``openai_http``: ``OpenAICompatible``, for vLLM, SGLang, llama.cpp and OpenAI;
  ``bounded`` (``ResponseLimits``) and ``redact`` keep a hostile server's answers
  bounded and the adapter's secrets out of its errors.
- ``vllm_engine``: ``VLLMEngine``, the in-process vLLM engine (optional extra).
- ``stats``: online TTFT / TPOT estimates per endpoint; ``prometheus``: server load.
- ``sim``: the simulated fleet (``SimulatedModel``, ``Fleet``) and ``critpath sim-server``;
  imported on first use (``critpath.adapters.Fleet`` or ``import critpath.adapters.sim``),
  so a client of a real server never loads the simulator.
- Wrappers, themselves ``Model``s, built on ``wrapper.WrapperModel``: ``Pool``
  (balance replicas), ``Hedge`` (hedged requests with a budget), ``Adaptive`` (the
  best model predicted to answer in time; its pure decisions in ``brownout``).
- ``logs``: what each ``critpath.*`` logger records (silent by default).
"""

from typing import TYPE_CHECKING

from critpath.adapters.adaptive import Adaptive, Candidate, LoadShedError, record_decisions
from critpath.adapters.bounded import ResponseLimits
from critpath.adapters.completion import Completion, complete
from critpath.adapters.hedge import Hedge, HedgeBudget, HedgeStatistics
from critpath.adapters.openai_http import OpenAICompatible, Timeouts
from critpath.adapters.pool import Lease, Pool, PoolStatistics, ReplicaStatistics
from critpath.adapters.prometheus import ServerLoad, parse_metrics, server_load
from critpath.adapters.protocol import (
    Chunk,
    Message,
    Model,
    ModelRequest,
    TokenLogprob,
    Usage,
    make_request,
)
from critpath.adapters.sse import SSEDecoder
from critpath.adapters.stats import EndpointStats, StreamClock, Timings
from critpath.adapters.wrapper import WrapperModel

if TYPE_CHECKING:
    from critpath.adapters.sim import Fleet, SimulatedModel

__all__ = [
    "Adaptive",
    "Candidate",
    "Chunk",
    "Completion",
    "EndpointStats",
    "Fleet",
    "Hedge",
    "HedgeBudget",
    "HedgeStatistics",
    "Lease",
    "LoadShedError",
    "Message",
    "Model",
    "ModelRequest",
    "OpenAICompatible",
    "Pool",
    "PoolStatistics",
    "ReplicaStatistics",
    "ResponseLimits",
    "SSEDecoder",
    "ServerLoad",
    "SimulatedModel",
    "StreamClock",
    "Timeouts",
    "Timings",
    "TokenLogprob",
    "Usage",
    "WrapperModel",
    "complete",
    "make_request",
    "parse_metrics",
    "record_decisions",
    "server_load",
]


_SIM_NAMES = frozenset({"Fleet", "SimulatedModel"})


def __getattr__(name: str) -> object:
    if name == "VLLMEngine":  # imported lazily: vLLM is an optional extra
        from critpath.adapters.vllm_engine import VLLMEngine

        return VLLMEngine
    if name in _SIM_NAMES or name == "sim":  # imported lazily: the whole simulator
        import importlib

        sim = importlib.import_module("critpath.adapters.sim")
        return sim if name == "sim" else getattr(sim, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
