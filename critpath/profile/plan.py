"""What a profile measures: cells of (prompt length, output length, concurrency), bounded.

A cell is one measurement: ``requests`` requests of ``prompt_tokens`` in and
``output_tokens`` out, sent by ``concurrency`` closed-loop clients (each sends its
next request when its last one ends). The plan's phases:

- ``prompt``: each prompt length at concurrency 1 (prefill cost per prompt token);
- ``output``: each output length at concurrency 1 (time per output token);
- ``concurrency``: each level at the base lengths (the batching trade-off);
- ``text`` (optional): repetitive against random text at concurrency 1 (what
  speculative decoding with n-gram lookup gains when the output repeats the prompt);
- ``prefix`` (optional): a long shared prefix, cold then warm (prefix caching).

Every request's prompt starts with words of its own, so no two share a cached prefix
unless the prefix phase means them to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from critpath.errors import ConfigError

__all__ = ["CellSpec", "Phase", "ProfilePlan", "TextKind"]


class Phase(StrEnum):
    PROMPT = "prompt"
    OUTPUT = "output"
    CONCURRENCY = "concurrency"
    TEXT = "text"
    PREFIX_COLD = "prefix-cold"
    PREFIX_WARM = "prefix-warm"


class TextKind(StrEnum):
    RANDOM = "random"
    REPETITIVE = "repetitive"


@dataclass(frozen=True, slots=True)
class CellSpec:
    """One measurement of the plan (see the module docstring)."""

    phase: Phase
    prompt_tokens: int
    output_tokens: int
    concurrency: int = 1
    requests: int = 1
    text: TextKind = TextKind.RANDOM

    @property
    def key(self) -> str:
        """A name unique within a plan, e.g. ``concurrency p=64 o=32 c=4 random``."""
        return (f"{self.phase} p={self.prompt_tokens} o={self.output_tokens} "
                f"c={self.concurrency} {self.text}")  # fmt: skip

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "phase": str(self.phase), "text": str(self.text)}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> CellSpec:
        try:
            return cls(
                phase=Phase(str(d["phase"])),
                prompt_tokens=_int(d["prompt_tokens"]),
                output_tokens=_int(d["output_tokens"]),
                concurrency=_int(d.get("concurrency", 1)),
                requests=_int(d.get("requests", 1)),
                text=TextKind(str(d.get("text", "random"))),
            )
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"bad cell in the profile: {exc}") from exc


def _int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected an integer, got {v!r}")
    return v


@dataclass(frozen=True, slots=True)
class ProfilePlan:
    """The measurements and their bounds.

    ``requests``: per cell at concurrency 1 (times ``repeat``); a cell at concurrency
    ``c`` sends at least three waves of ``c`` requests in each round, so that most of
    its requests arrive at a server in its steady state, not in a burst. ``max_requests`` /
    ``max_seconds``: the whole profile stops sending when either runs out (the cells
    not finished are marked so).
    ``prefix_tokens``: length of the shared prefix (0: no prefix phase), measured in
    ``prefix_groups`` groups of one cold and ``prefix_warm`` warm requests.
    ``texts``: measure repetitive against random text. ``rounds``: the plan runs in
    this many rounds, each with a slice of every cell (``runner``). ``repeat``:
    every cell that many times over, in as many times the rounds (each slice as long as
    with 1; what a replay against the simulator uses to estimate its quantiles well).
    """

    prompt_tokens: tuple[int, ...] = (16, 128, 384)
    output_tokens: tuple[int, ...] = (16, 64)
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    base_prompt: int = 64
    base_output: int = 32
    requests: int = 16
    prefix_tokens: int = 0
    prefix_groups: int = 3
    prefix_warm: int = 3
    texts: bool = False
    rounds: int = 4
    repeat: int = 1
    max_requests: int = 600
    max_seconds: float = 300.0
    seed: int = 0
    temperature: float = 0.0
    phases: tuple[Phase, ...] = field(default=(Phase.PROMPT, Phase.OUTPUT, Phase.CONCURRENCY))

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "output_tokens", "concurrency"):
            values = getattr(self, name)
            if any(v < 1 for v in values):
                raise ConfigError(f"ProfilePlan.{name} must all be >= 1")
        for name in ("base_prompt", "base_output", "requests", "prefix_groups", "max_requests",
                     "rounds", "repeat"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"ProfilePlan.{name} must be >= 1")
        if self.prefix_tokens < 0 or self.prefix_warm < 1:
            raise ConfigError("ProfilePlan.prefix_tokens must be >= 0 and prefix_warm >= 1")
        if not (math.isfinite(self.max_seconds) and self.max_seconds > 0):
            raise ConfigError("ProfilePlan.max_seconds must be > 0")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError("ProfilePlan.temperature must be in [0, 2]")

    def cells(self) -> list[CellSpec]:
        """The cells, in the order they run (prefix cells excluded: see ``prefix``)."""
        out: list[CellSpec] = []
        n = self.requests * self.repeat
        if Phase.PROMPT in self.phases:
            out += [CellSpec(Phase.PROMPT, p, self.base_output, 1, n) for p in self.prompt_tokens]
        if Phase.OUTPUT in self.phases:
            out += [CellSpec(Phase.OUTPUT, self.base_prompt, o, 1, n) for o in self.output_tokens]
        if Phase.CONCURRENCY in self.phases:
            out += [
                CellSpec(
                    Phase.CONCURRENCY, self.base_prompt, self.base_output, c,
                    max(n, 3 * c * self.slices),
                )
                for c in self.concurrency
            ]
        if self.texts:
            out += [
                CellSpec(Phase.TEXT, self.base_prompt, self.base_output, 1, n, kind)
                for kind in (TextKind.RANDOM, TextKind.REPETITIVE)
            ]
        return out

    @property
    def slices(self) -> int:
        """Rounds the plan runs in (``rounds`` x ``repeat``)."""
        return self.rounds * self.repeat

    def prefix_cells(self) -> tuple[CellSpec, CellSpec] | None:
        """The cold and warm cells of the prefix phase (``None`` without one)."""
        if not self.prefix_tokens:
            return None
        p, o = self.prefix_tokens + 16, self.base_output
        return (
            CellSpec(Phase.PREFIX_COLD, p, o, 1, self.prefix_groups),
            CellSpec(Phase.PREFIX_WARM, p, o, 1, self.prefix_groups * self.prefix_warm),
        )

    def planned_requests(self) -> int:
        pre = self.prefix_cells()
        return sum(c.requests for c in self.cells()) + (
            pre[0].requests + pre[1].requests if pre else 0
        )

    def without_server_features(self) -> ProfilePlan:
        """This plan without the phases a simulator cannot reproduce (prefix, text)."""
        return _replace(self, prefix_tokens=0, texts=False)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["phases"] = [str(p) for p in self.phases]
        for k in ("prompt_tokens", "output_tokens", "concurrency"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> ProfilePlan:
        try:
            kw: dict[str, object] = dict(d)
            for k in ("prompt_tokens", "output_tokens", "concurrency"):
                if k in kw:
                    kw[k] = tuple(_int(v) for v in kw[k])  # type: ignore[attr-defined]
            if "phases" in kw:
                kw["phases"] = tuple(Phase(str(p)) for p in kw["phases"])  # type: ignore[attr-defined]
            return cls(**kw)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad plan in the profile: {exc}") from exc


def _replace(plan: ProfilePlan, **changes: object) -> ProfilePlan:
    from dataclasses import replace

    return replace(plan, **changes)  # type: ignore[arg-type]
