"""The models the demo uses: the embedded simulated fleet, or a real server.

Tiers are ordered cheapest first. The default is a simulated deployment on the
synthetic multiple-choice task: ``small`` (an 8B model served next to the
application: the ``local-8b`` profile, an assumption), ``medium`` (a hosted 7B: the
llmperf-calibrated ``7b`` profile) and ``large`` (a hosted frontier model: the ``api``
profile), each answering with its own (made-up) ability and a confidence reported as
the answer token's logprob. ``--base-url URL --model NAME...``
uses models of an OpenAI-compatible server (vLLM...) instead, in real time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from critpath.adapters.openai_http import OpenAICompatible
from critpath.adapters.protocol import ModelRequest, make_request
from critpath.adapters.sim.answers import Answer, Question, SyntheticTask, question_key
from critpath.adapters.sim.model import SimulatedModel
from critpath.errors import ConfigError
from critpath.strategies.evaluate import Metered

__all__ = ["ABILITIES", "Tiers", "real_tiers", "simulated_tiers"]

ABILITIES = {"small": 0.3, "medium": 0.7, "large": 1.2}
"""Latent abilities on the synthetic task (made up: bigger is better, not a measurement)."""

# USD per million (input, output) tokens: assumed, as in critpath.strategies.replay.
_SIM_PRICES = {"small": (0.05, 0.20), "medium": (0.05, 0.20), "large": (2.00, 8.00)}


@dataclass
class Tiers:
    """Models cheapest first, the questions to ask, and whether time is simulated."""

    models: list[Metered]
    questions: list[Question]
    simulated: bool
    max_tokens: int
    closers: list[OpenAICompatible]

    @property
    def cheap(self) -> Metered:
        return self.models[0]

    @property
    def strong(self) -> Metered:
        return self.models[-1]

    def request(self, q: Question, *, logprobs: bool = False) -> ModelRequest:
        return self.request_text(q.text, self.max_tokens, logprobs=logprobs)

    def request_text(self, text: str, max_tokens: int, *, logprobs: bool = False) -> ModelRequest:
        return make_request(messages=[{"role": "user", "content": text}],
                            max_tokens=max_tokens, logprobs=logprobs)  # fmt: skip

    async def aclose(self) -> None:
        for c in self.closers:
            await c.aclose()


_CANNED = {
    "small": "The deploy fails because the upgrade changed the config format. Roll back "
    "the upgrade, then redeploy.",
    "medium": "The deploy fails because the upgrade changed the config format. Convert the "
    "config, then redeploy.",
    "large": "The deploy fails because the upgrade renamed the DATABASE_URL setting to "
    "DB_URL. Rename it in your config, then redeploy; no rollback is needed.",
}


class _DemoAnswers:
    """The synthetic task's answers to its questions; a canned answer to anything else
    (the agent's question), different per model so a revision shows what changed."""

    def __init__(self, task: SyntheticTask) -> None:
        self.task = task

    def answer(self, model: str, request: ModelRequest) -> Answer:
        key = question_key(request)
        if key is not None and self.task.question_for(key) is not None:
            return self.task.answer(model, request)
        text = _CANNED.get(model, _CANNED["large"])
        return Answer(text, len(text.split()), None, 0.9)


def simulated_tiers(n_questions: int = 200, *, seed: int = 0, time_scale: float = 1.0) -> Tiers:
    task = SyntheticTask(n_questions, seed=seed, tokens_mean=120.0, abilities=ABILITIES)
    answers = _DemoAnswers(task)
    profiles = {"small": "local-8b", "medium": "7b", "large": "api"}
    models = [
        Metered(SimulatedModel(name, profile=profile, answers=answers, seed=seed,
                               stream_interval=8, time_scale=time_scale), *_SIM_PRICES[name])
        for name, profile in profiles.items()
    ]  # fmt: skip
    return Tiers(models, list(task.questions), True, 512, [])


def real_tiers(
    base_url: str, names: Sequence[str], *, n_questions: int = 20, seed: int = 0,
    max_tokens: int = 64, api_key_env: str | None = None,
) -> Tiers:  # fmt: skip
    if not names:
        raise ConfigError("--base-url needs at least one --model")
    task = SyntheticTask(n_questions, seed=seed)
    clients = [OpenAICompatible(base_url, n, name=n, api_key_env=api_key_env) for n in names]
    models: list[Metered] = [Metered(c) for c in clients]
    return Tiers(models, list(task.questions), False, max_tokens, clients)
