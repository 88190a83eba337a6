"""A simulated model calibrated on a measured server: the file ``critpath profile`` writes.

A server profile (``critpath.profile``) is a JSON document; the simulator reads two of
its keys and ignores the rest (the measurements behind them)::

    {"format": "critpath-profile/1", "model": "tiny-llama",
     "simulator": {"queue_s": 0.012, "prefill_per_token_s": 1e-05, ...}, ...}

``simulator`` holds ``LatencyProfile.to_dict()``. ``measured_fleet`` serves that model
under its measured name with answers exactly ``max_tokens`` long (``FullLengthAnswers``),
as the profiled server answered them (vLLM's ``ignore_eos``), so that replaying the
profile's requests against the simulator asks for the same work.
``critpath sim-server --profile FILE`` serves one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from critpath.adapters.protocol import ModelRequest
from critpath.adapters.sim.answers import Answer, answer_text
from critpath.adapters.sim.fleet import Fleet
from critpath.adapters.sim.profiles import LatencyProfile
from critpath.errors import ConfigError

__all__ = [
    "read_profile_json",
    "PROFILE_FORMAT",
    "FullLengthAnswers",
    "MeasuredModel",
    "measured_fleet",
    "read_measured",
]

PROFILE_FORMAT = "critpath-profile/1"
"""The ``format`` of a server-profile document."""


@dataclass(frozen=True, slots=True)
class MeasuredModel:
    """A served model's name and the latency profile fitted to it."""

    name: str
    profile: LatencyProfile

    @classmethod
    def from_document(cls, doc: Any, source: str = "the profile") -> MeasuredModel:
        """From a parsed server-profile document; ``ConfigError`` if it is not one."""
        if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
            raise ConfigError(f"{source} is not a server profile (format {PROFILE_FORMAT!r})")
        name, sim = doc.get("model"), doc.get("simulator")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source} names no model")
        if not isinstance(sim, dict):
            raise ConfigError(f"{source} has no simulator profile")
        return cls(name, LatencyProfile.from_dict(sim))


def read_profile_json(path: str | Path) -> Any:
    """The decoded JSON of a server-profile file; ``ConfigError`` when it cannot be read
    or is not JSON."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the profile {p}: {exc}") from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"the profile {p} is not JSON: {exc}") from exc


def read_measured(path: str | Path) -> MeasuredModel:
    """The model and fitted profile in a server-profile file (``critpath profile --out``)."""
    return MeasuredModel.from_document(read_profile_json(path), str(path))


class FullLengthAnswers:
    """Answers of exactly ``max_tokens`` tokens (a server told to ignore end-of-sequence)."""

    def answer(self, model: str, request: ModelRequest) -> Answer:
        n = request.max_tokens
        return Answer(answer_text(None, n), n, None, 0.5)


def measured_fleet(
    measured: MeasuredModel | str | Path,
    *,
    replicas: int = 1,
    seed: int = 0,
    time_scale: float = 1.0,
) -> Fleet:
    """A fleet of one model, named and timed as measured (a file path or a
    ``MeasuredModel``), answering ``FullLengthAnswers``."""
    model = measured if isinstance(measured, MeasuredModel) else read_measured(measured)
    fleet = Fleet(FullLengthAnswers())
    fleet.add(model.name, model.profile, replicas=replicas, seed=seed, time_scale=time_scale)
    return fleet
