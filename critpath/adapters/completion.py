"""A non-streaming call is the stream consumed: ``complete(model, request)``.

With tools or a ``response_format`` the answer is checked here: ``Completion.tool_calls``
holds the message's calls (arguments decoded and validated against the offered
tools), ``Completion.parsed`` the validated answer object. A broken answer raises a
typed ``critpath.errors.InvalidOutput``; ``complete_valid`` asks again with the
validation error fed back to the model, while the deadline leaves time for another call.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from critpath.adapters.protocol import Message, Model, ModelRequest, TokenLogprob, Usage
from critpath.adapters.stats import StreamClock, Timings
from critpath.adapters.toolcalls import BrokenCall, ToolCallAssembler
from critpath.adapters.tools import ToolCall
from critpath.deadlines import remaining
from critpath.errors import ConfigError, InvalidOutput, UnknownTool

__all__ = ["Completion", "check_tool_call", "complete", "complete_valid"]

_log = logging.getLogger("critpath.adapters.completion")


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer, with the timings the caller observed.

    ``tool_calls``: the message's tool calls, in order; ``parsed``: the answer validated
    against the request's ``response_format`` (an instance of its pydantic model, or
    the decoded JSON for a bare schema), ``None`` without one or when the model called
    tools instead.
    """

    model: str
    text: str
    finish_reason: str | None
    usage: Usage | None
    logprobs: tuple[TokenLogprob, ...] | None
    timings: Timings
    tool_calls: tuple[ToolCall, ...] = ()
    parsed: Any = None

    @property
    def completion_tokens(self) -> int:
        return self.usage.completion_tokens if self.usage is not None else self.timings.tokens

    def message(self) -> Message:
        """This answer as the assistant message of a conversation."""
        return Message(role="assistant", content=self.text, tool_calls=self.tool_calls or None)


def check_tool_call(request: ModelRequest, call: ToolCall, model: str | None = None) -> ToolCall:
    """``call`` if it names an offered tool and its arguments validate; ``UnknownTool``
    or ``SchemaMismatch`` (carrying the call's id) otherwise."""
    spec = request.tool(call.name)
    if spec is None:
        offered = ", ".join(t.name for t in request.tools or ()) or "none"
        raise UnknownTool(
            f"there is no tool {call.name!r}; the tools are: {offered}",
            output=call.arguments_json(),
            model=model,
            tool=call.name,
            tool_call_id=call.id,
        )
    try:
        spec.validate_arguments(call.arguments)
    except InvalidOutput as exc:
        exc.tool_call_id = call.id
        exc.model = model
        raise
    return call


async def complete(model: Model, request: ModelRequest) -> Completion:
    """Stream ``request`` from ``model`` to the end and assemble the answer.

    Timings are measured here, as the caller sees them: ``queued`` (the server began
    answering), TTFT, the gaps between token chunks, end to end. Tool calls and a
    ``response_format`` answer are validated (see the module docstring).
    """
    clock = StreamClock()
    parts: list[str] = []
    logprobs: list[TokenLogprob] | None = [] if request.logprobs else None
    finish: str | None = None
    usage: Usage | None = None
    calls = ToolCallAssembler(model=model.name)
    async with aclosing(model.stream(request)) as stream:
        async for chunk in stream:
            if chunk.tokens or chunk.text or chunk.tool_calls:
                clock.token(chunk.tokens or 1)
                parts.append(chunk.text)
            else:
                clock.accepted()
            if chunk.tool_calls:
                calls.feed(chunk.tool_calls)
            if chunk.logprobs and logprobs is not None:
                logprobs.extend(chunk.logprobs)
            if chunk.finish_reason is not None:
                finish = chunk.finish_reason
            if chunk.usage is not None:
                usage = chunk.usage
    timings = clock.finish(usage.completion_tokens if usage is not None else None)
    calls.finish()
    tool_calls: list[ToolCall] = []
    for closed in calls.calls():
        if isinstance(closed, BrokenCall):
            raise closed.error
        tool_calls.append(check_tool_call(request, closed, model.name) if request.tools
                          else closed)  # fmt: skip
    text = "".join(parts)
    parsed: Any = None
    if request.response_format is not None and not tool_calls:
        parsed = request.response_format.parse(text, model_name=model.name)
    return Completion(
        model=model.name,
        text=text,
        finish_reason=finish,
        usage=usage,
        logprobs=tuple(logprobs) if logprobs is not None else None,
        timings=timings,
        tool_calls=tuple(tool_calls),
        parsed=parsed,
    )


async def complete_valid(model: Model, request: ModelRequest, *, attempts: int = 3) -> Completion:
    """``complete``, asked again when the answer is invalid (``InvalidOutput``): the
    model's answer and the validation error go back to it as the next messages. Gives
    up — re-raising the last error — after ``attempts`` calls, or when the deadline in
    force leaves less time than the last call took."""
    if attempts < 1:
        raise ConfigError("attempts must be >= 1")
    if request.messages is None:
        raise ConfigError("complete_valid feeds errors back in a conversation: use messages=")
    current = request
    for attempt in range(1, attempts + 1):
        loop_start = _now()
        try:
            return await complete(model, current)
        except InvalidOutput as exc:
            took = _now() - loop_start
            left = remaining()
            if attempt == attempts or (left is not None and left < took):
                raise
            _log.info("%s: invalid answer (attempt %d): %s; asking again",
                      model.name, attempt, exc.feedback)  # fmt: skip
            assert current.messages is not None
            fix = (
                Message(role="assistant", content=exc.output),
                Message(role="user", content=f"That answer was invalid: {exc.feedback}. "
                        "Answer again, correctly."),
            )  # fmt: skip
            current = current.model_copy(update={"messages": (*current.messages, *fix)})
    raise AssertionError("unreachable")  # pragma: no cover


def _now() -> float:
    return asyncio.get_running_loop().time()
