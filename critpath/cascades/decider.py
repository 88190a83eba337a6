"""``Decider``: a model that decides over whole answers and returns its decision.

``Vote`` and ``Cascade`` cannot stream as they go: they need whole answers to count
or score them. Each call returns its own result: ``await model.decide(request)`` is
a result object (``VoteResult``, ``CascadeResult``) holding the answer
(``completion``) and the trail that led to it (ballots; tiers tried, their scores,
escalations and why), like pydantic-ai's run results. Nothing about a call is kept
on the object, so concurrent calls on one ``Vote`` or ``Cascade`` each get their own.

``stream(request)`` is the same decision's answer as chunks (``completion_chunks``):
an "accepted" marker, then the whole answer at once when the decision is made. Call
``decide`` when you need the trail; a ``Cascade`` tier that is a ``Decider`` is asked
through ``decide``, so its scorer sees its result (a vote's agreement).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from typing import Generic, Protocol, TypeVar

from critpath.adapters.completion import Completion
from critpath.adapters.protocol import Chunk, Model, ModelRequest
from critpath.adapters.stats import EndpointStats
from critpath.adapters.wrapper import WrapperModel

__all__ = ["Decided", "Decider", "completion_chunks"]


class Decided(Protocol):
    """A call's result with an answer and a confidence (``VoteResult``, ``CascadeResult``)."""

    @property
    def completion(self) -> Completion: ...

    @property
    def confidence(self) -> float | None: ...


R = TypeVar("R", bound=Decided)


def completion_chunks(completion: Completion) -> list[Chunk]:
    """A finished answer as chunks: an "accepted" marker, then one chunk with its text,
    token count, logprobs, finish reason and usage (``complete`` rebuilds it)."""
    return [
        Chunk(),
        Chunk(
            text=completion.text,
            tokens=completion.completion_tokens,
            logprobs=completion.logprobs,
            finish_reason=completion.finish_reason,
            usage=completion.usage,
        ),
    ]


class Decider(WrapperModel, ABC, Generic[R]):
    """A ``WrapperModel`` whose answer is a decision: subclasses write ``decide``.

    ``stats`` learns the decider's own latency (to its decision) like an endpoint's,
    so a cascade tier that is a vote or a cascade learns its escalation budget from it.
    """

    def __init__(self, wrapped: Sequence[Model], *, name: str) -> None:
        super().__init__(wrapped, name=name)
        self.stats = EndpointStats()

    @abstractmethod
    async def decide(self, request: ModelRequest) -> R:
        """Decide ``request``; the result is this call's alone."""

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        """``decide``, then its answer as chunks (see the module docstring)."""
        result = await self.decide(request)
        for chunk in completion_chunks(result.completion):
            yield chunk

    def observe(self, elapsed: float) -> None:
        """Learn one call's latency to its decision (``elapsed`` seconds)."""
        self.stats.requests += 1
        self.stats.ttft.observe(elapsed)
        self.stats.e2e.observe(elapsed)
