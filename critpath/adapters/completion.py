"""A non-streaming call is the stream consumed: ``complete(model, request)``."""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass

from critpath.adapters.protocol import Model, ModelRequest, TokenLogprob, Usage
from critpath.adapters.stats import StreamClock, Timings

__all__ = ["Completion", "complete"]


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer, with the timings the caller observed."""

    model: str
    text: str
    finish_reason: str | None
    usage: Usage | None
    logprobs: tuple[TokenLogprob, ...] | None
    timings: Timings

    @property
    def completion_tokens(self) -> int:
        return self.usage.completion_tokens if self.usage is not None else self.timings.tokens


async def complete(model: Model, request: ModelRequest) -> Completion:
    """Stream ``request`` from ``model`` to the end and assemble the answer.

    Timings are measured here, as the caller sees them: ``queued`` (the server began
    answering), TTFT, the gaps between token chunks, end to end.
    """
    clock = StreamClock()
    parts: list[str] = []
    logprobs: list[TokenLogprob] | None = [] if request.logprobs else None
    finish: str | None = None
    usage: Usage | None = None
    async with aclosing(model.stream(request)) as stream:
        async for chunk in stream:
            if chunk.tokens or chunk.text:
                clock.token(chunk.tokens or 1)
                parts.append(chunk.text)
            else:
                clock.accepted()
            if chunk.logprobs and logprobs is not None:
                logprobs.extend(chunk.logprobs)
            if chunk.finish_reason is not None:
                finish = chunk.finish_reason
            if chunk.usage is not None:
                usage = chunk.usage
    timings = clock.finish(usage.completion_tokens if usage is not None else None)
    return Completion(
        model=model.name,
        text="".join(parts),
        finish_reason=finish,
        usage=usage,
        logprobs=tuple(logprobs) if logprobs is not None else None,
        timings=timings,
    )
