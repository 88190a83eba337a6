"""The OpenAI wire format, server side: request bodies in, response JSON out.

Pure functions and a small encoder, no I/O, for the simulated server (``server``):

- ``parse_request`` turns a ``/v1/chat/completions`` or ``/v1/completions`` body into
  a validated ``ModelRequest`` (through ``make_request``) plus how to answer it
  (streamed or not, usage at the end of the stream). Fields it does not know, such as
  ``question_id``, travel to the model in ``ModelRequest.extra_body``. Invalid input
  raises ``APIError`` (status 400), which carries an OpenAI-style error body.
- ``ResponseEncoder`` turns the model's ``Chunk``s into what vLLM and OpenAI send:
  stream chunks (``chat.completion.chunk`` / ``text_completion``), the final usage
  chunk (``choices: []``), or one whole response, with logprobs in the chat format
  (``logprobs.content[{token, logprob, bytes, top_logprobs}]``) or the legacy
  completions format (``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``).

A request without ``max_tokens`` (or ``max_completion_tokens``) gets the whole answer,
as vLLM's chat endpoint does (vLLM's completions endpoint would stop at 16 tokens).
Top alternatives are the ones the model reports with each token; a simulated model
reports none, so ``top_logprobs`` then holds the chosen token alone. ``stop``,
``temperature``, ``top_p`` and ``seed`` are validated and passed on; simulated models
do not act on them (their answers depend on the question and the fleet's seed).
``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``response_format`` are read
into the request (``openai_tools``), and the model's tool calls are written as vLLM
writes them: ``delta.tool_calls`` pieces in a stream, ``message.tool_calls`` whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from critpath.adapters.openai_tools import (
    calls_json,
    delta_json,
    message_from_json,
    response_format_from_json,
    tool_choice_from_json,
    tools_from_json,
)
from critpath.adapters.protocol import Chunk, ModelRequest, TokenLogprob, Usage, make_request
from critpath.adapters.tools import ToolCall
from critpath.errors import InvalidRequestError

__all__ = ["APIError", "ParsedRequest", "ResponseEncoder", "error_body", "parse_request"]

WHOLE_ANSWER = 1 << 20
"""``max_tokens`` of a request that sets none: more than any simulated answer."""

_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    413: "RequestTooLargeError",
    429: "RateLimitError",
}
_COMMON = frozenset(
    {
        "model",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "logprobs",
        "stream",
        "stream_options",
        "priority",
        "request_id",
        "n",
        "response_format",
    }
)
_CHAT_FIELDS = _COMMON | {
    "messages", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls",
}  # fmt: skip
_COMPLETION_FIELDS = _COMMON | {"prompt"}


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """``{"error": {message, type, param, code}}``, as vLLM and OpenAI answer errors."""
    kind = _ERROR_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


class APIError(Exception):
    """A request the server answers with an error status and an OpenAI-style body."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param)


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A valid completion request: the model it names, what to ask it, how to answer."""

    model: str | None
    request: ModelRequest
    stream: bool
    include_usage: bool


def parse_request(body: object, *, chat: bool, request_id: str | None = None) -> ParsedRequest:
    """Validate an OpenAI request body; raise ``APIError(400)`` for anything invalid.

    ``request_id`` (e.g. from an ``X-Request-Id`` header) applies when the body sets
    no ``request_id`` of its own (vLLM's extension).
    """
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError(400, "model must be a string", param="model")
    stream = _optional_bool(body, "stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise APIError(
                400, "stream_options can only be set when stream is true", param="stream_options"
            )
        if not isinstance(options, dict):
            raise APIError(400, "stream_options must be an object", param="stream_options")
        include_usage = _optional_bool(options, "include_usage", param="stream_options")
    if body.get("n") not in (None, 1):
        raise APIError(400, "the simulated server answers with one choice: n must be 1", param="n")

    fields: dict[str, Any] = {}
    if chat:
        if "prompt" in body:
            raise APIError(400, "/v1/chat/completions takes messages, not prompt", param="prompt")
        fields["messages"] = _messages(body.get("messages"))
        handled = _CHAT_FIELDS
    else:
        if "messages" in body:
            raise APIError(400, "/v1/completions takes prompt, not messages", param="messages")
        fields["prompt"] = _prompt(body.get("prompt"))
        handled = _COMPLETION_FIELDS
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    fields["max_tokens"] = WHOLE_ANSWER if limit is None else limit
    for key in ("temperature", "top_p", "seed", "priority"):
        if body.get(key) is not None:
            fields[key] = body[key]
    stop = body.get("stop")
    if stop is not None:
        fields["stop"] = (stop,) if isinstance(stop, str) else stop
    fields.update(_logprobs(body, chat))
    fields.update(_tool_fields(body, chat))
    rid = body.get("request_id")
    if rid is None:
        rid = request_id
    if rid is not None:
        fields["request_id"] = rid
    fields["extra_body"] = {k: v for k, v in body.items() if k not in handled}
    try:
        request = make_request(**fields)
    except InvalidRequestError as exc:
        raise APIError(400, str(exc), param=_param(exc)) from exc
    return ParsedRequest(model, request, stream, include_usage)


def _tool_fields(body: Mapping[str, Any], chat: bool) -> dict[str, Any]:
    """``tools``, ``tool_choice``, ``parallel_tool_calls``, ``response_format``."""
    fields: dict[str, Any] = {}
    readers: list[tuple[str, Callable[[object], object]]] = [
        ("response_format", response_format_from_json)
    ]
    if chat:
        readers += [("tools", tools_from_json), ("tool_choice", tool_choice_from_json)]
        if body.get("parallel_tool_calls") is not None:
            fields["parallel_tool_calls"] = _optional_bool(body, "parallel_tool_calls")
    for key, read in readers:
        try:
            value = read(body.get(key))
        except (ValueError, TypeError) as exc:
            raise APIError(400, f"invalid {key}: {exc}", param=key) from None
        if value is not None:
            fields[key] = value
    if fields.get("tool_choice") is not None and "tools" not in fields:
        fields.pop("tool_choice")  # OpenAI ignores a tool_choice without tools
    return fields


def _optional_bool(body: Mapping[str, Any], key: str, *, param: str | None = None) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise APIError(400, f"{key} must be true or false", param=param or key)
    return value


def _messages(raw: object) -> object:
    """OpenAI messages as critpath's: text content parts joined, null content as ""."""
    if raw is None:
        return None  # make_request says that messages are missing
    if not isinstance(raw, list):
        raise APIError(400, "messages must be a list of messages", param="messages")
    out: list[object] = []
    for msg in raw:
        if not isinstance(msg, dict):
            out.append(msg)  # make_request names what is wrong with it
            continue
        content = msg.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):
            content = "".join(_text_part(part) for part in content)
        try:
            out.append(message_from_json(msg, content))
        except (ValueError, TypeError) as exc:
            raise APIError(400, f"invalid message: {exc}", param="messages") from None
    return out


def _text_part(part: object) -> str:
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return str(part["text"])
    raise APIError(400, "the simulated server reads text content parts only", param="messages")


def _prompt(raw: object) -> object:
    if isinstance(raw, list):
        if len(raw) == 1 and isinstance(raw[0], str):
            return raw[0]
        raise APIError(
            400, "the simulated server takes one text prompt per request", param="prompt"
        )
    return raw


def _logprobs(body: Mapping[str, Any], chat: bool) -> dict[str, Any]:
    value = body.get("logprobs")
    if chat:
        fields: dict[str, Any] = {}
        if value is not None:
            if not isinstance(value, bool):
                raise APIError(400, "logprobs must be true or false for chat", param="logprobs")
            fields["logprobs"] = value
        if body.get("top_logprobs") is not None:
            fields["top_logprobs"] = body["top_logprobs"]
        return fields
    if value is None:
        return {}
    if isinstance(value, bool) or not isinstance(value, int):
        raise APIError(
            400,
            "logprobs must be an integer (how many alternatives) for completions",
            param="logprobs",
        )
    return {"logprobs": True, "top_logprobs": value}


def _param(exc: InvalidRequestError) -> str | None:
    cause = exc.__cause__
    if isinstance(cause, ValidationError):
        errors = cause.errors()
        if errors and errors[0]["loc"]:
            return str(errors[0]["loc"][0])
    return None


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


class ResponseEncoder:
    """The JSON of one answer: its stream chunks, or the whole response.

    ``completion_id`` becomes ``id``; ``created`` is the Unix time of the request.
    Completions logprobs carry ``text_offset``s (characters into the answer), so encode
    a stream's chunks in order.
    """

    def __init__(
        self, *, chat: bool, model: str, request: ModelRequest, completion_id: str, created: int
    ) -> None:
        self.chat = chat
        self.model = model
        self.top_k = request.top_logprobs or 0
        self.logprobs = request.logprobs
        self.completion_id = completion_id
        self.created = created
        self._offset = 0

    def _envelope(self, choices: list[dict[str, Any]], *, stream: bool) -> dict[str, Any]:
        if self.chat:
            obj = "chat.completion.chunk" if stream else "chat.completion"
        else:
            obj = "text_completion"
        return {
            "id": self.completion_id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def role_chunk(self) -> dict[str, Any]:
        """The first chunk of a chat stream: the role, no content yet."""
        choice = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        return self._envelope([choice], stream=True)

    def chunk(self, chunk: Chunk) -> dict[str, Any]:
        """A content chunk (the finish reason rides on the last one)."""
        lp = self._logprobs(chunk.logprobs or (), self._offset) if self.logprobs else None
        self._offset += len(chunk.text)
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            choice["delta"] = {"content": chunk.text}
            if chunk.tool_calls:
                choice["delta"] = {"tool_calls": delta_json(chunk.tool_calls)}
                if chunk.text:
                    choice["delta"]["content"] = chunk.text
        else:
            choice["text"] = chunk.text
        choice["logprobs"] = lp
        choice["finish_reason"] = chunk.finish_reason
        return self._envelope([choice], stream=True)

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        """The last chunk when the client asked for usage: no choices."""
        return {**self._envelope([], stream=True), "usage": _usage(usage)}

    def response(
        self,
        text: str,
        logprobs: Sequence[TokenLogprob],
        finish_reason: str | None,
        usage: Usage,
        tool_calls: Sequence[ToolCall] = (),
    ) -> dict[str, Any]:
        """The whole (non-streamed) response."""
        lp = self._logprobs(logprobs, 0) if self.logprobs else None
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
            if tool_calls:
                choice["message"] = {"role": "assistant", "content": text or None,
                                     "tool_calls": calls_json(tool_calls)}  # fmt: skip
        else:
            choice["text"] = text
        choice["logprobs"] = lp
        choice["finish_reason"] = finish_reason
        return {**self._envelope([choice], stream=False), "usage": _usage(usage)}

    def _top(self, t: TokenLogprob) -> list[tuple[str, float]]:
        if self.top_k == 0:
            return []
        alternatives = list(t.top) if t.top else [(t.token, t.logprob)]
        return alternatives[: self.top_k]

    def _logprobs(self, tokens: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
        if self.chat:
            return {
                "content": [
                    {
                        "token": t.token,
                        "logprob": t.logprob,
                        "bytes": list(t.token.encode()),
                        "top_logprobs": [
                            {"token": tok, "logprob": lp, "bytes": list(tok.encode())}
                            for tok, lp in self._top(t)
                        ],
                    }
                    for t in tokens
                ]
            }
        offsets = []
        for t in tokens:
            offsets.append(offset)
            offset += len(t.token)
        return {
            "tokens": [t.token for t in tokens],
            "token_logprobs": [t.logprob for t in tokens],
            # vLLM's dicts hold the chosen token and the top alternatives.
            "top_logprobs": [{t.token: t.logprob, **dict(self._top(t))} for t in tokens],
            "text_offset": offsets,
        }
