"""A simulated fleet: named models, each with one or more replicas, one answer source."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from critpath.adapters.sim.answers import AnswerSource, RecordedAnswers, SyntheticTask
from critpath.adapters.sim.model import SimulatedModel
from critpath.adapters.sim.prefix_cache import PrefixCache
from critpath.adapters.sim.profiles import LatencyProfile, profile_for_params
from critpath.errors import ConfigError

__all__ = ["Fleet"]

_SIZE_PROFILE = {"small": "7b", "medium": "13b", "large": "70b"}


@dataclass
class Fleet:
    """Models by name, each a list of replicas (``SimulatedModel``), sharing ``answers``."""

    answers: AnswerSource | None
    models: dict[str, list[SimulatedModel]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> SimulatedModel:
        """The first replica of ``name``."""
        return self.replicas(name)[0]

    def replicas(self, name: str) -> list[SimulatedModel]:
        if name not in self.models:
            raise ConfigError(f"no model {name!r} in the fleet; it has {sorted(self.models)}")
        return self.models[name]

    def names(self) -> list[str]:
        return list(self.models)

    def add(
        self,
        name: str,
        profile: LatencyProfile | str,
        *,
        replicas: int = 1,
        seed: int = 0,
        time_scale: float = 1.0,
    ) -> list[SimulatedModel]:
        if replicas < 1:
            raise ConfigError("replicas must be >= 1")
        self.models[name] = [
            SimulatedModel(name, profile=profile, answers=self.answers, seed=seed,
                           time_scale=time_scale, replica=str(i))
            for i in range(replicas)
        ]  # fmt: skip
        return self.models[name]

    def with_profile(self, **changes: float | int) -> Fleet:
        """A copy whose every replica has these latency-profile fields changed, e.g.
        ``error_p=0.01`` or ``max_num_seqs=8``. The copy's replicas are new (idle, zero
        counters) and keep their names, seeds, time scales and answers."""
        fleet = Fleet(self.answers)
        for name, replicas in self.models.items():
            fleet.models[name] = [
                SimulatedModel(name, profile=_changed(r.profile, changes), answers=r.answers,
                               seed=r.seed, time_scale=r.time_scale, replica=r.replica,
                               prefix_cache=None if r.prefix_cache is None
                               else r.prefix_cache.empty_copy())
                for r in replicas
            ]  # fmt: skip
        return fleet

    def with_prefix_caching(self, capacity_blocks: int, *, block_tokens: int = 16) -> Fleet:
        """This fleet, every replica given its own empty ``PrefixCache`` of
        ``capacity_blocks`` blocks of ``block_tokens`` tokens (vLLM's default block)."""
        for replicas in self.models.values():
            for r in replicas:
                r.prefix_cache = PrefixCache(capacity_blocks, block_tokens=block_tokens)
        return self

    @classmethod
    def synthetic(
        cls,
        sizes: Iterable[str] = ("small", "medium", "large"),
        *,
        n_questions: int = 1000,
        seed: int = 0,
        time_scale: float = 1.0,
        replicas: int = 1,
        profile_overrides: dict[str, LatencyProfile] | None = None,
    ) -> Fleet:
        """Models named by size (``small``, ``medium``, ``large``) on the synthetic task."""
        task = SyntheticTask(n_questions, seed=seed)
        fleet = cls(task)
        for size in sizes:
            if size not in _SIZE_PROFILE:
                raise ConfigError(f"unknown size {size!r}; use small, medium or large")
            profile = (profile_overrides or {}).get(size, _SIZE_PROFILE[size])
            fleet.add(size, profile, replicas=replicas, seed=seed, time_scale=time_scale)
        return fleet

    @classmethod
    def recorded(
        cls,
        directory: str | Path,
        models: Sequence[str] | None = None,
        *,
        seed: int = 0,
        time_scale: float = 1.0,
        replicas: int = 1,
    ) -> Fleet:
        """Replays of the recorded models in ``directory`` (format of shared/data/mmlu_pro);
        each model's latency profile comes from its size in ``models.json``."""
        answers = RecordedAnswers(directory)
        fleet = cls(answers)
        names = list(models) if models else answers.available_models()
        for name in names:
            answers.responses(name)  # fail now, with a clear error, if it is missing
            fleet.add(name, profile_for_params(answers.params_b(name)), replicas=replicas,
                      seed=seed, time_scale=time_scale)  # fmt: skip
        return fleet


def _changed(profile: LatencyProfile, changes: dict[str, float | int]) -> LatencyProfile:
    try:
        return profile.with_(**changes)
    except TypeError as exc:  # dataclasses.replace names the unknown field
        raise ConfigError(f"unknown latency-profile field: {exc}") from exc
