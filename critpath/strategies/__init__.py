"""Strategies named in a file, replayed on recorded answers: ``critpath bench cascade``.

- ``spec``: the strategies file (JSON or YAML): singles, votes, cascades, refine, with
  models named directly or by selectors fit on a calibration split;
- ``replay``: ``Replay`` runs them over the simulated fleet in virtual time and
  reports accuracy, latency, TTFT, cost and calls per strategy, and the goals.

The default file (``default.json``) is written for any data set (any answer kind) in
the recorded format (it names no model).
"""

from critpath.strategies.replay import (
    DEFAULT_PRICES,
    ModelInfo,
    Outcome,
    Replay,
    goals,
    in_calibration,
    price_of,
    replay_sync,
    summarise,
)
from critpath.strategies.spec import (
    CascadeSpec,
    RefineSpec,
    Select,
    SingleSpec,
    StrategiesFile,
    TierSpec,
    VoteSpec,
    load_strategies,
    parse_strategies,
)

__all__ = [
    "DEFAULT_PRICES",
    "CascadeSpec",
    "ModelInfo",
    "Outcome",
    "RefineSpec",
    "Replay",
    "Select",
    "SingleSpec",
    "StrategiesFile",
    "TierSpec",
    "VoteSpec",
    "goals",
    "in_calibration",
    "load_strategies",
    "parse_strategies",
    "price_of",
    "replay_sync",
    "summarise",
]
