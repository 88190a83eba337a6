"""Model calls, tool calls and decisions as spans in the OpenTelemetry GenAI conventions.

One place emits a model call's span and metrics: ``instrument_stream``, a decorator on
a backend's ``stream`` method (``OpenAICompatible``, ``VLLMEngine``,
``SimulatedModel``). The backend says what it is by ``genai_target()`` (provider,
model, server URL). Each call then gets a span ``chat {model}`` (or
``text_completion {model}``, span kind CLIENT) under the current span — the step's,
a cascade's or a vote's — carrying:

- ``gen_ai.operation.name``, ``gen_ai.provider.name`` (and the older
  ``gen_ai.system``), ``gen_ai.request.model``, ``gen_ai.request.max_tokens``,
  ``gen_ai.request.temperature``, ``gen_ai.request.top_p``, ``gen_ai.request.seed``,
  ``gen_ai.request.stop_sequences``, ``server.address``, ``server.port``;
- at the end ``gen_ai.response.model`` (the model the call was sent to: critpath's
  chunks do not carry the server's echo), ``gen_ai.response.finish_reasons``,
  ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``,
  ``gen_ai.response.time_to_first_chunk`` (s), and on failure ``error.type`` (the
  exception's class) with an ERROR status; a call its reader closed or cancelled
  early ends with ``critpath.cancelled`` (not an error);
- critpath's own: ``critpath.model`` (the backend's name), ``critpath.priority``,
  ``critpath.request_id``, ``critpath.ttft_ms``, ``critpath.e2e_ms``.

Each attempt of the call (an HTTP request, an engine request) is a child span
``critpath.model {name}`` (``critpath.telemetry.start_model_span``): retries show.

Prompt and answer text are recorded only when the user opts in with the environment
variable ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` (the variable
OpenTelemetry's GenAI instrumentations read): ``gen_ai.input.messages`` and
``gen_ai.output.messages`` (JSON, the conventions' parts format), tools' arguments and
results, votes' answers. Off by default.

Tools: ``tool_span(name, call_id=..., arguments=...)`` is a span
``execute_tool {name}`` (``gen_ai.operation.name = execute_tool``,
``gen_ai.tool.name``, ``gen_ai.tool.call.id``, ``gen_ai.tool.type``)::

    with tool_span(call.name, call_id=call.id, arguments=call.arguments) as tool:
        result = await run_tool(call)
        tool.result(result)

Cascades and votes: ``decision_span(kind, name)`` is a span ``critpath.cascade {name}``
or ``critpath.vote {name}``, current while the decision runs so its tier and voter
calls are its children; the decision's outcome goes on it (``set``).

The same call records the GenAI metrics (``critpath.metrics``) when a meter provider is
installed. With neither a tracer nor a meter provider, ``instrument_stream`` returns
the backend's own stream: nothing is added to the call.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace

from critpath import metrics
from critpath._clock import now as _now
from critpath.orchestrator import context as _step_context  # a module: imported in a cycle

if TYPE_CHECKING:
    from critpath.adapters.protocol import Chunk, ModelRequest

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "DecisionKind",
    "DecisionSpan",
    "ModelTarget",
    "Targeted",
    "ToolSpan",
    "capture_content",
    "decision_span",
    "instrument_stream",
    "tool_span",
]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""Set it to ``true`` to record prompts, answers and tool arguments in spans."""

_tracer = trace.get_tracer("critpath")
_CLIENT = trace.SpanKind.CLIENT
_ERROR = trace.StatusCode.ERROR


def capture_content() -> bool:
    """Whether the user opted in to prompt and answer text in spans (see the module)."""
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes")


def _tracing_on() -> bool:
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """What a backend is, for its spans and metrics: ``provider``
    (``gen_ai.provider.name``: ``openai``, ``vllm``, ``critpath.sim``...), the
    ``model`` id requests are sent with, and the server's URL (``None`` in process).
    Never put credentials in ``server_url``: only its host and port are kept."""

    provider: str
    model: str
    server_url: str | None = None

    def attributes(self) -> dict[str, str | int]:
        """The attributes every call to this target shares (spans and metrics)."""
        out: dict[str, str | int] = {
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.model,
        }
        if self.server_url is not None:
            parts = urlsplit(self.server_url)
            if parts.hostname:
                out["server.address"] = parts.hostname
                port = parts.port or (443 if parts.scheme == "https" else 80)
                out["server.port"] = port
        return out


class Targeted(Protocol):
    """A backend ``instrument_stream`` can describe: a ``name`` and a ``genai_target``."""

    @property
    def name(self) -> str: ...

    def genai_target(self) -> ModelTarget: ...


S = TypeVar("S", bound=Targeted)
if TYPE_CHECKING:
    StreamMethod = Callable[[S, ModelRequest], AsyncGenerator[Chunk, None]]


def instrument_stream(fn: StreamMethod[S]) -> StreamMethod[S]:
    """Decorate a backend's ``stream`` method: each call is a GenAI span and metrics
    (see the module docstring); nothing is added while tracing and metrics are off."""

    @functools.wraps(fn)
    def stream(self: S, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        tracing = _tracing_on()
        if not tracing and not metrics.metrics_enabled():
            return fn(self, request)
        return _ModelCall(self, request, tracing).run(fn(self, request))

    return stream


class _ModelCall:
    """The state of one instrumented model call: its span, clock, usage and answer."""

    __slots__ = (
        "_capture", "_ctx", "_first", "_last", "_parts", "_start", "_target_attrs",
        "finish_reasons", "input_tokens", "name", "operation", "output_tokens", "request",
        "span", "target", "tokens",
    )  # fmt: skip

    def __init__(self, backend: Targeted, request: ModelRequest, tracing: bool) -> None:
        self.target = backend.genai_target()
        self.name = backend.name
        self.request = request
        self.operation = "chat" if request.is_chat else "text_completion"
        self._target_attrs = self.target.attributes()
        self._capture = tracing and capture_content()
        self._parts: list[str] = []
        self.finish_reasons: list[str] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.tokens = 0
        self._first: float | None = None
        self._last = 0.0
        self._start = 0.0
        self.span: trace.Span | None = None
        self._ctx: otel_context.Context | None = None
        if tracing:
            self.span = _tracer.start_span(
                f"{self.operation} {self.target.model}",
                kind=_CLIENT,
                attributes=self._start_attributes(),
            )
            self._ctx = trace.set_span_in_context(self.span)

    def _start_attributes(self) -> dict[str, Any]:
        r = self.request
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": self.operation,
            "gen_ai.system": self.target.provider,
            **self._target_attrs,
            "gen_ai.request.max_tokens": r.max_tokens,
            "critpath.model": self.name,
        }
        if r.temperature is not None:
            attrs["gen_ai.request.temperature"] = r.temperature
        if r.top_p is not None:
            attrs["gen_ai.request.top_p"] = r.top_p
        if r.seed is not None:
            attrs["gen_ai.request.seed"] = r.seed
        if r.stop is not None:
            attrs["gen_ai.request.stop_sequences"] = list(r.stop)
        priority = r.priority
        if priority is None:
            step = _step_context.current_step()
            priority = step.priority if step is not None else None
        if priority is not None:
            attrs["critpath.priority"] = priority
        if r.request_id is not None:
            attrs["critpath.request_id"] = r.request_id
        if self._capture:
            attrs["gen_ai.input.messages"] = _input_messages(r)
        return attrs

    async def run(self, inner: AsyncGenerator[Chunk, None]) -> AsyncGenerator[Chunk, None]:
        """``inner``'s chunks, observed; the span is current while ``inner`` runs."""
        self._start = _now()
        ctx = self._ctx
        try:
            async with aclosing(inner):
                while True:
                    if ctx is None:
                        chunk = await anext(inner, None)
                    else:
                        token = otel_context.attach(ctx)
                        try:
                            chunk = await anext(inner, None)
                        finally:
                            otel_context.detach(token)
                    if chunk is None:
                        break
                    self._observe(chunk)
                    yield chunk
        except BaseException as exc:
            self._end(exc)
            raise
        self._end(None)

    def _observe(self, chunk: Chunk) -> None:
        if chunk.tokens or chunk.text:
            t = _now()
            if self._first is None:
                self._first = t
            self._last = t
            self.tokens += chunk.tokens or 1
            if self._capture:
                self._parts.append(chunk.text)
        if chunk.finish_reason is not None:
            self.finish_reasons.append(chunk.finish_reason)
        if chunk.usage is not None:
            self.input_tokens = chunk.usage.prompt_tokens
            self.output_tokens = chunk.usage.completion_tokens

    def _end(self, error: BaseException | None) -> None:
        end = _now()
        duration = end - self._start
        ttft = None if self._first is None else self._first - self._start
        output = self.output_tokens if self.output_tokens is not None else self.tokens
        tpot = None
        if self._first is not None and output > 1:
            tpot = (self._last - self._first) / (output - 1)
        failed = error is not None and isinstance(error, Exception)
        span = self.span
        if span is not None:
            span.set_attribute("gen_ai.response.model", self.target.model)
            if self.finish_reasons:
                span.set_attribute("gen_ai.response.finish_reasons", self.finish_reasons)
            if self.input_tokens is not None:
                span.set_attribute("gen_ai.usage.input_tokens", self.input_tokens)
            if self.output_tokens is not None or self.tokens:
                span.set_attribute("gen_ai.usage.output_tokens", output)
            if ttft is not None:
                span.set_attribute("gen_ai.response.time_to_first_chunk", ttft)
                span.set_attribute("critpath.ttft_ms", ttft * 1000)
            span.set_attribute("critpath.e2e_ms", duration * 1000)
            if self._capture and not failed:
                span.set_attribute("gen_ai.output.messages", self._output_messages())
            if error is not None and not failed:  # closed or cancelled by its reader
                span.set_attribute("critpath.cancelled", True)
            elif error is not None:
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(trace.Status(_ERROR, str(error)[:200]))
            span.end()
        if metrics.metrics_enabled():
            attrs: dict[str, str | int] = {
                "gen_ai.operation.name": self.operation,
                **self._target_attrs,
                "gen_ai.response.model": self.target.model,
            }
            if failed:
                assert error is not None
                attrs["error.type"] = type(error).__qualname__
            elif error is not None:
                attrs["error.type"] = "cancelled"
            metrics.record_model_call(
                attrs,
                duration=duration,
                input_tokens=self.input_tokens,
                output_tokens=output if (self.output_tokens is not None or self.tokens) else None,
                ttft=ttft,
                tpot=tpot,
            )

    def _output_messages(self) -> str:
        message: dict[str, Any] = {
            "role": "assistant",
            "parts": [{"type": "text", "content": "".join(self._parts)}],
        }
        if self.finish_reasons:
            message["finish_reason"] = self.finish_reasons[-1]
        return json.dumps([message], ensure_ascii=False)


def _input_messages(r: ModelRequest) -> str:
    if r.messages is None:
        msgs = [{"role": "user", "parts": [{"type": "text", "content": r.prompt or ""}]}]
    else:
        msgs = [
            {"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in r.messages
        ]
    return json.dumps(msgs, ensure_ascii=False)


# ---- tools --------------------------------------------------------------------------


class ToolSpan:
    """The span of one tool call (``tool_span``); ``result`` records its result (text
    only when content capture is on). A no-op while tracing is off."""

    __slots__ = ("_capture", "span")

    def __init__(self, span: trace.Span | None, capture: bool) -> None:
        self.span = span
        self._capture = capture

    def result(self, value: object) -> None:
        if self.span is not None and self._capture:
            self.span.set_attribute("gen_ai.tool.call.result", _text(value))

    def set(self, key: str, value: str | bool | int | float) -> None:
        """Any other attribute (critpath's own under ``critpath.*``)."""
        if self.span is not None:
            self.span.set_attribute(key, value)


@contextmanager
def tool_span(
    name: str,
    *,
    call_id: str | None = None,
    arguments: object = None,
    description: str | None = None,
    tool_type: str = "function",
) -> Iterator[ToolSpan]:
    """A span ``execute_tool {name}`` around one tool call, current inside the block (a
    model call the tool makes nests under it). An exception ends it with ``error.type``
    and propagates. ``arguments`` (a JSON string or a JSON-able value) is recorded only
    when content capture is on."""
    if not _tracing_on():
        yield ToolSpan(None, False)
        return
    capture = capture_content()
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.type": tool_type,
    }
    if call_id is not None:
        attrs["gen_ai.tool.call.id"] = call_id
    if description is not None:
        attrs["gen_ai.tool.description"] = description
    if capture and arguments is not None:
        attrs["gen_ai.tool.call.arguments"] = _text(arguments)
    with _tracer.start_as_current_span(
        f"execute_tool {name}",
        attributes=attrs,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield ToolSpan(span, capture)
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(trace.Status(_ERROR, str(exc)[:200]))
            raise


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


# ---- cascades and votes -------------------------------------------------------------


class DecisionKind(StrEnum):
    """What made a decision over whole answers."""

    CASCADE = "cascade"
    VOTE = "vote"


class DecisionSpan:
    """The span of one cascade or vote call (``decision_span``); ``set`` records its
    outcome. A no-op while tracing is off."""

    __slots__ = ("span",)

    def __init__(self, span: trace.Span | None) -> None:
        self.span = span

    @property
    def recording(self) -> bool:
        return self.span is not None

    def set(self, attributes: Mapping[str, str | bool | int | float | list[str]]) -> None:
        if self.span is not None:
            self.span.set_attributes(attributes)


@contextmanager
def decision_span(kind: DecisionKind, name: str) -> Iterator[DecisionSpan]:
    """A span ``critpath.{kind} {name}``, current inside the block, so the tier or voter
    calls it makes (tasks copy the current context) are its children."""
    if not _tracing_on():
        yield DecisionSpan(None)
        return
    with _tracer.start_as_current_span(
        f"critpath.{kind.value} {name}",
        attributes={"critpath.decision": kind.value, "critpath.model": name},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield DecisionSpan(span)
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(trace.Status(_ERROR, str(exc)[:200]))
            raise
