"""The model protocol: one streaming method, a validated request, typed chunks.

Every backend (HTTP, in-process vLLM, simulated) and every policy (retry, hedge, pool,
cache, cascade) is a ``Model``: an object with a ``name`` and ``stream(request)``, an
async iterator of ``Chunk`` (write it as an async generator: ``async def stream``).
Policies wrap a model and are models (``wrapper.WrapperModel``), so they compose like
middleware. A non-streaming call is the stream consumed (``complete``).

Close a stream you stop reading early (``contextlib.aclosing``), or cancel the task
reading it: either closes the underlying request at once, which is what makes vLLM
abort the generation and free its KV cache.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from critpath.errors import InvalidRequestError

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
    """One chat message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str
    name: str | None = None


class ModelRequest(BaseModel):
    """What to ask a model. Exactly one of ``messages`` (chat) or ``prompt`` (completion).

    ``priority``: lower is served first by vLLM's priority scheduler; ``None`` takes the
    running critpath step's critical-path priority. ``timeout``: seconds for the whole
    call (the deadline scope in force also applies; the earlier wins).
    ``extra_body``: server-specific fields merged into the JSON body (e.g. vLLM's
    ``top_k``, ``min_p``, ``repetition_penalty``).
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
        reserved = {"model", "messages", "prompt", "stream"} & set(self.extra_body)
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
    content chunk; ``usage`` once, at the end, when the server reports it.
    """

    text: str = ""
    tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None


@runtime_checkable
class Model(Protocol):
    """Anything that streams answers: a backend or a policy wrapping one."""

    @property
    def name(self) -> str: ...

    def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]: ...
