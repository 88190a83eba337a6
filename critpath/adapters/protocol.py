"""The model protocol: one streaming method, a validated request, typed chunks.

Every backend (HTTP, in-process vLLM, simulated) and every policy (retry, hedge, pool,
cache, cascade) is a ``Model``: an object with a ``name`` and ``stream(request)``, an
async iterator of ``Chunk`` (write it as an async generator: ``async def stream``).
Policies wrap a model and are models (``wrapper.WrapperModel``), so they compose like
middleware. A non-streaming call is the stream consumed (``complete``).

Tools and typed answers (``critpath.adapters.tools``): a request may offer ``tools``
with a ``tool_choice`` and ask for a ``response_format``; a stream then carries
``Chunk.tool_calls`` deltas (``critpath.adapters.toolcalls`` says when each call's
arguments are complete), and ``complete`` returns ``Completion.tool_calls`` and
``Completion.parsed``. Assistant messages carry their ``tool_calls``; a ``tool``
message answers one by its ``tool_call_id``.

Close a stream you stop reading early (``contextlib.aclosing``), or cancel the task
reading it: either closes the underlying request at once, which is what makes vLLM
abort the generation and free its KV cache.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from critpath.adapters.tools import (
    NamedTool,
    ResponseFormat,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolMode,
    ToolSpec,
)
from critpath.errors import ConfigError, InvalidRequestError

__all__ = [
    "Chunk",
    "Message",
    "Model",
    "ModelRequest",
    "TokenLogprob",
    "Usage",
    "make_request",
]


class Message(BaseModel):
    """One chat message. An assistant message may carry ``tool_calls``; a ``tool``
    message answers one call, named by its ``tool_call_id``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str = ""
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _tool_fields(self) -> Message:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message, and only a tool message, has a tool_call_id")
        return self


class ModelRequest(BaseModel):
    """What to ask a model. Exactly one of ``messages`` (chat) or ``prompt`` (completion).

    ``priority``: lower is served first by vLLM's priority scheduler; ``None`` takes the
    running critpath step's critical-path priority. ``timeout``: seconds for the whole
    call (the deadline scope in force also applies; the earlier wins).
    ``extra_body``: server-specific fields merged into the JSON body (e.g. vLLM's
    ``top_k``, ``min_p``, ``repetition_penalty``).

    ``tools``: functions the model may call (typed functions, pydantic models or
    ``ToolSpec``s; chat only); ``tool_choice``: a ``ToolMode`` or ``NamedTool`` (a
    ``ToolSpec`` or function names one); ``parallel_tool_calls``: whether one message
    may call several; ``response_format``: a pydantic model class or a JSON schema the
    answer must follow.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    max_tokens: int = Field(default=256, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    priority: int | None = None
    timeout: float | None = Field(default=None, gt=0.0)
    request_id: str | None = Field(default=None, min_length=1, max_length=256)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    tools: tuple[ToolSpec, ...] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    @field_validator("tools", mode="before")
    @classmethod
    def _tool_specs(cls, value: Any) -> Any:
        if value is None or isinstance(value, tuple | list):
            try:
                return None if value is None else tuple(ToolSpec.of(t) for t in value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        raise ValueError("tools must be a list of functions, pydantic models or ToolSpecs")

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _tool_choice(cls, value: Any) -> Any:
        if value is None or isinstance(value, ToolMode | NamedTool):
            return value
        if isinstance(value, str):
            try:
                return ToolMode(value)
            except ValueError:
                raise ValueError(
                    f"tool_choice {value!r}: use ToolMode.AUTO/NONE/REQUIRED or NamedTool(name)"
                ) from None
        try:
            return NamedTool(ToolSpec.of(value).name)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("response_format", mode="before")
    @classmethod
    def _response_format(cls, value: Any) -> Any:
        try:
            return None if value is None else ResponseFormat.of(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    @model_validator(mode="after")
    def _tools_consistent(self) -> ModelRequest:
        if self.tools is not None:
            if self.messages is None:
                raise ValueError("tools need a chat request (messages=)")
            names = [t.name for t in self.tools]
            if len(set(names)) != len(names):
                raise ValueError(f"tool names must be unique: {names}")
        choice = self.tool_choice
        if choice is not None and choice is not ToolMode.NONE and not self.tools:
            raise ValueError(f"tool_choice {choice} needs tools")
        if isinstance(choice, NamedTool) and choice.name not in {t.name for t in self.tools or ()}:
            raise ValueError(f"tool_choice names {choice.name!r}, which is not one of the tools")
        return self

    def tool(self, name: str) -> ToolSpec | None:
        """The offered tool called ``name``, or ``None``."""
        for t in self.tools or ():
            if t.name == name:
                return t
        return None

    @model_validator(mode="after")
    def _one_input(self) -> ModelRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of messages= (chat) or prompt= (completion)")
        if self.messages is not None and not self.messages:
            raise ValueError("messages must not be empty")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=True")
        if self.stop is not None and any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")
        reserved = {
            "model", "messages", "prompt", "stream", "tools", "tool_choice", "response_format",
        } & set(self.extra_body)  # fmt: skip
        if reserved:
            raise ValueError(f"extra_body must not set {sorted(reserved)}")
        return self

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def sampling(self) -> dict[str, Any]:
        """The sampling fields that are set (temperature, top_p, seed, stop), by name."""
        out: dict[str, Any] = {}
        for name in ("temperature", "top_p", "seed"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.stop is not None:
            out["stop"] = list(self.stop)
        return out


def make_request(**fields: Any) -> ModelRequest:
    """Build a ``ModelRequest``; invalid fields raise ``InvalidRequestError`` (not pydantic's).

    ``messages`` may be given as dicts or ``Message``; a plain string becomes one user
    message.
    """
    msgs = fields.get("messages")
    if isinstance(msgs, str):
        fields["messages"] = (Message(role="user", content=msgs),)
    try:
        return ModelRequest(**fields)
    except ValidationError as exc:
        raise InvalidRequestError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "request"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid request: " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A generated token, its log-probability, and the most likely alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of a call; ``cached``: the answer came from a response cache (``Cache``),
    so no model generated these tokens for this call."""

    prompt_tokens: int
    completion_tokens: int
    cached: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a streamed answer.

    ``text`` is the delta; ``tokens`` how many tokens it carries (as reported, or 1 per
    delta); ``logprobs`` per token when asked for; ``finish_reason`` on the last
    content chunk; ``usage`` once, at the end, when the server reports it;
    ``tool_calls``: pieces of the message's tool calls (``ToolCallDelta``), assembled by
    ``critpath.adapters.toolcalls.ToolCallAssembler``.
    """

    text: str = ""
    tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


@runtime_checkable
class Model(Protocol):
    """Anything that streams answers: a backend or a policy wrapping one."""

    @property
    def name(self) -> str: ...

    def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]: ...
