"""The strategies file: named compound strategies, written without model names.

A strategy names its models either directly (``"gpt-4o-2024-05-13"``) or with a
selector resolved on the calibration split of whatever data set it runs on, so one
file works for any data set in the recorded format:

- ``{"select": "strongest"}``: the most accurate model;
- ``{"select": "accurate", "n": 3, "faster_than": 0.5}``: the ``n`` most accurate
  models (the strongest excluded unless ``exclude_strongest`` is false) whose p50
  latency is at most ``faster_than`` x the strongest's; ``max_params_b`` keeps models
  of known size up to that many billion parameters (self-hostable ones);
- ``{"select": "fastest", ...}``: the same filters, the ``n`` fastest.

``"profile"`` on a selector serves the chosen model with another latency profile
(e.g. ``"local-8b"``: a small model on a GPU next to the application).

Kinds: ``single`` (``model``), ``vote`` (``voters``, ``early_quorum``, ``quorum``,
``weights``: ``equal`` or ``accuracy``), ``cascade`` (``tiers``: each a ``model``
(a reference or a vote), a ``scorer`` (``none``, ``abstention``, ``agreement``,
``logprob``), a ``threshold`` (a number or ``"fit"``: fit on the calibration split),
``hedge`` (start the next tier early when this one is slower than its learned p95) or
``budget_s``), and ``refine`` (``draft``, ``strong``). The file is JSON, or YAML when
PyYAML is installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from critpath.errors import ConfigError

__all__ = [
    "CascadeSpec",
    "ModelRef",
    "RefineSpec",
    "Select",
    "SingleSpec",
    "StrategiesFile",
    "StrategySpec",
    "TierSpec",
    "VoteSpec",
    "load_strategies",
    "parse_strategies",
]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Select(_Spec):
    """A model (or ``n`` models) chosen on the calibration split; see the module doc."""

    select: Literal["strongest", "accurate", "fastest"]
    n: int = Field(1, ge=1)
    faster_than: float | None = Field(None, gt=0)
    max_params_b: float | None = Field(None, gt=0)
    exclude_strongest: bool = True
    profile: str | None = None


ModelRef = str | Select


class VoteSpec(_Spec):
    kind: Literal["vote"] = "vote"
    name: str | None = None
    voters: ModelRef | list[ModelRef]
    early_quorum: bool = True
    quorum: float | None = Field(None, gt=0, le=1)
    weights: Literal["equal", "accuracy"] = "equal"


class TierSpec(_Spec):
    model: ModelRef | VoteSpec
    scorer: Literal["none", "abstention", "agreement", "logprob"] = "none"
    threshold: float | Literal["fit"] = "fit"
    hedge: bool = False
    budget_s: float | None = Field(None, ge=0)


class SingleSpec(_Spec):
    kind: Literal["single"] = "single"
    name: str | None = None
    model: ModelRef


class CascadeSpec(_Spec):
    kind: Literal["cascade"] = "cascade"
    name: str | None = None
    tiers: list[TierSpec] = Field(min_length=1)


class RefineSpec(_Spec):
    kind: Literal["refine"] = "refine"
    name: str | None = None
    draft: ModelRef
    strong: ModelRef


StrategySpec = Annotated[
    SingleSpec | VoteSpec | CascadeSpec | RefineSpec, Field(discriminator="kind")
]


class StrategiesFile(_Spec):
    """``calibration_fraction`` of the questions (by a hash of their id) fit whatever is
    fit; the rest evaluate. ``singles``: also run every model alone."""

    calibration_fraction: float = Field(0.3, gt=0, lt=1)
    singles: bool = True
    strategies: list[StrategySpec] = Field(default_factory=list)


def parse_strategies(data: object, source: str = "strategies") -> StrategiesFile:
    """Validate a decoded strategies document; errors are ``ConfigError``s naming the field."""
    try:
        return StrategiesFile.model_validate(data)
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{source}: invalid strategies: {where}") from exc


def load_strategies(path: str | Path | None = None) -> StrategiesFile:
    """Read a strategies file (JSON, or YAML with PyYAML); ``None``: the default one
    shipped for any recorded data set (``critpath/strategies/default.json``)."""
    p = Path(path) if path is not None else Path(__file__).with_name("default.json")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read strategies file {p}: {exc}") from exc
    if p.suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped,unused-ignore]
        except ImportError as exc:
            raise ConfigError(f"{p}: YAML strategies need PyYAML (pip install pyyaml)") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: invalid JSON: {exc}") from exc
    return parse_strategies(data, str(p))
