"""The OpenAI-compatible wire format: response bodies and stream events into ``Chunk``s,
HTTP error statuses into typed ``ModelError``s.

Whatever the server sends, the result is a ``Chunk`` or a ``MalformedResponse``, never
a plain Python error: JSON nested too deeply, numbers that overflow (``1e999``, a
400-digit logprob), fields of the wrong type (``content`` as a number,
``finish_reason: 7``) and negative token counts are all refused here.

Pure functions (no I/O), used by ``OpenAICompatible``. Chat events carry
``choices[0].delta.content`` and ``logprobs.content[...]``; completion events carry
``choices[0].text`` and the legacy ``logprobs`` object; chat deltas and messages may
carry ``tool_calls`` (read by ``openai_tools``); the last event may carry
``usage`` with ``choices: []``; an ``{"error": ...}`` event is an error.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from typing import Any

import httpx

from critpath.adapters.openai_tools import message_calls, stream_deltas
from critpath.adapters.protocol import Chunk, TokenLogprob, Usage
from critpath.adapters.tools import ToolCallDelta
from critpath.errors import (
    AuthenticationError,
    BadRequest,
    ContextLengthExceeded,
    MalformedResponse,
    ModelError,
    ModelNotFound,
    RateLimited,
    ServerError,
)

__all__ = ["loads", "parse_chat_chunk", "parse_completion_chunk", "parse_whole", "status_error"]

_BAD_VALUE = (AttributeError, KeyError, TypeError, ValueError, OverflowError, RecursionError)
"""What reading a decoded JSON value of the wrong shape can raise."""


def loads(payload: bytes, model: str) -> Any:
    try:
        return json.loads(payload)
    except RecursionError:
        raise MalformedResponse("JSON from the server nested too deeply", model=model) from None
    except ValueError as exc:
        raise MalformedResponse(
            f"invalid JSON from the server: {payload[:120]!r}", model=model
        ) from exc


def _short(value: object, limit: int = 500) -> str:
    """``str(value)`` cut to ``limit`` characters, whatever ``value`` holds."""
    try:
        text = value if isinstance(value, str) else str(value)
    except RecursionError:
        return "(a value nested too deeply)"
    return text[:limit]


def _error_message(resp: httpx.Response, body: bytes | None = None) -> str:
    raw = resp.content if body is None else body
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        text = raw.decode("utf-8", "replace").strip()
        return text[:300] or resp.reason_phrase or f"HTTP {resp.status_code}"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return _short(err.get("message") or err.get("detail") or err)
        if "detail" in data:
            return _short(data["detail"])
        return _short(err)
    return _short(data)


def status_error(resp: httpx.Response, model: str, body: bytes | None = None) -> ModelError:
    """The typed error of an HTTP error status; ``body``: what was read of the body
    (by default the response's whole content, which must have been read)."""
    code = resp.status_code
    msg = f"HTTP {code}: {_error_message(resp, body)}"
    if code == 429:
        return RateLimited(msg, model=model, retry_after=_retry_after(resp))
    if code in (401, 403):
        return AuthenticationError(msg, model=model, status=code)
    if code == 404:
        return ModelNotFound(msg, model=model, status=code)
    if code == 408:
        return ServerError(msg, model=model, status=code)
    if 400 <= code < 500:
        low = msg.lower()
        if "context length" in low or "context_length" in low or "maximum context" in low:
            return ContextLengthExceeded(msg, model=model, status=code)
        return BadRequest(msg, model=model, status=code)
    if code >= 500:
        return ServerError(msg, model=model, status=code)
    return MalformedResponse(f"unexpected HTTP status {code}", model=model, status=code)


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:  # the HTTP-date form
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)  # may be inf: the retry policy decides what it accepts


def _stream_error(data: dict[str, Any], model: str) -> ModelError:
    err = data.get("error")
    message = _short(err.get("message", err) if isinstance(err, dict) else err)
    code = err.get("code") if isinstance(err, dict) else None
    if isinstance(code, int) and 400 <= code < 500:
        text = f"error event in the stream: {message}"
        if "context length" in message.lower():
            return ContextLengthExceeded(text, model=model, status=code)
        return BadRequest(text, model=model, status=code)
    return ServerError(f"error event in the stream: {message}", model=model)


def _usage(data: dict[str, Any], model: str) -> Usage | None:
    u = data.get("usage")
    if not u:
        return None
    try:
        return Usage(_count(u["prompt_tokens"]), _count(u["completion_tokens"]))
    except _BAD_VALUE as exc:
        raise MalformedResponse(f"malformed usage: {_short(u, 120)}", model=model) from exc


def _count(value: Any) -> int:
    """A token count: a non-negative integer (an integral float is accepted)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a token count that is not a number: {_short(value, 40)}")
    if isinstance(value, float) and not value.is_integer():  # also inf and nan
        raise ValueError(f"a token count that is not an integer: {value!r}")
    count = int(value)
    if count < 0:
        raise ValueError(f"a negative token count: {count}")
    return count


def _number(value: Any) -> float:
    """A log-probability: a number (``None`` is ``nan``); huge integers are refused."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a logprob that is not a number: {_short(value, 40)}")
    return float(value)  # OverflowError for a 400-digit integer


def _text(value: Any, what: str) -> str:
    """A text field: a string, or nothing (``None``)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{what} is a {type(value).__name__}, not a string")
    return value


def _finish(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"finish_reason is a {type(value).__name__}, not a string")


def _envelope(data: Any, model: str) -> tuple[dict[str, Any] | None, Usage | None]:
    """Check a stream event's envelope; return its first choice (if any) and usage."""
    if not isinstance(data, dict):
        raise MalformedResponse(
            f"a stream event that is not an object: {_short(data, 120)}", model=model
        )
    if "error" in data:
        raise _stream_error(data, model)
    usage = _usage(data, model)
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise MalformedResponse("a stream event without 'choices'", model=model)
    if choices and not isinstance(choices[0], dict):
        raise MalformedResponse("a choice that is not an object", model=model)
    return (choices[0] if choices else None), usage


def _chunk(
    text: str,
    logprobs: tuple[TokenLogprob, ...] | None,
    finish: str | None,
    usage: Usage | None,
    calls: tuple[ToolCallDelta, ...] = (),
) -> Chunk | None:
    tokens = len(logprobs) if logprobs else (1 if text or calls else 0)
    if not text and not tokens and finish is None and usage is None:
        return None  # e.g. the role-only first chunk of a chat stream
    return Chunk(text=text, tokens=tokens, logprobs=logprobs, finish_reason=finish, usage=usage,
                 tool_calls=calls)  # fmt: skip


def parse_chat_chunk(data: Any, model: str, top_k: int = 0) -> Chunk | None:
    choice, usage = _envelope(data, model)
    if choice is None:
        return Chunk(usage=usage) if usage is not None else None
    try:
        delta = choice.get("delta") or {}
        text = _text(delta.get("content"), "content")
        calls = stream_deltas(delta)
        lp = choice.get("logprobs")
        logprobs = _chat_logprobs(lp["content"]) if lp and lp.get("content") else None
        finish = _finish(choice.get("finish_reason"))
    except _BAD_VALUE as exc:
        raise MalformedResponse(f"malformed chat chunk: {exc!r:.300}", model=model) from exc
    return _chunk(text, logprobs, finish, usage, calls)


def _chat_logprobs(content: list[dict[str, Any]]) -> tuple[TokenLogprob, ...]:
    return tuple(
        TokenLogprob(
            token=str(c["token"]),
            logprob=_number(c["logprob"]),
            top=tuple(
                (str(t["token"]), _number(t["logprob"])) for t in c.get("top_logprobs") or ()
            ),
        )
        for c in content
    )


def parse_completion_chunk(data: Any, model: str, top_k: int = 0) -> Chunk | None:
    choice, usage = _envelope(data, model)
    if choice is None:
        return Chunk(usage=usage) if usage is not None else None
    try:
        text = _text(choice.get("text"), "text")
        lp = choice.get("logprobs")
        logprobs = _completion_logprobs(lp, top_k) if lp and lp.get("tokens") else None
        finish = _finish(choice.get("finish_reason"))
    except _BAD_VALUE as exc:
        raise MalformedResponse(f"malformed completion chunk: {exc!r:.300}", model=model) from exc
    return _chunk(text, logprobs, finish, usage)


def _completion_logprobs(lp: dict[str, Any], top_k: int) -> tuple[TokenLogprob, ...]:
    """The legacy completions format; its ``top_logprobs`` dicts may also hold the chosen
    token (vLLM does this), so keep the ``top_k`` most likely, as the chat format has."""
    tokens = lp["tokens"]
    values = lp["token_logprobs"]
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    return tuple(
        TokenLogprob(
            token=str(tok),
            logprob=_number(val),
            top=tuple(
                sorted(((str(k), _number(v)) for k, v in (top or {}).items()), key=lambda t: -t[1])[
                    :top_k
                ]
            ),
        )
        for tok, val, top in zip(tokens, values, tops, strict=False)
    )


def parse_whole(raw: bytes, chat: bool, model: str, top_k: int = 0) -> Chunk:
    data = loads(raw, model)
    if not isinstance(data, dict):
        raise MalformedResponse("a response body that is not an object", model=model)
    if "error" in data:
        raise _stream_error(data, model)
    usage = _usage(data, model)
    try:
        choice = data["choices"][0]
        finish = _finish(choice.get("finish_reason"))
        lp = choice.get("logprobs")
        calls: tuple[ToolCallDelta, ...] = ()
        if chat:
            message = choice.get("message") or {}
            text = _text(message.get("content"), "content")
            calls = message_calls(message)
            logprobs = _chat_logprobs(lp["content"]) if lp and lp.get("content") else None
        else:
            text = _text(choice.get("text"), "text")
            logprobs = _completion_logprobs(lp, top_k) if lp and lp.get("tokens") else None
    except (IndexError, *_BAD_VALUE) as exc:
        raise MalformedResponse(f"malformed response body: {exc!r:.300}", model=model) from exc
    some = int(bool(text or calls))
    tokens = usage.completion_tokens if usage else (len(logprobs) if logprobs else some)
    return Chunk(text=text, tokens=tokens, logprobs=logprobs, finish_reason=finish, usage=usage,
                 tool_calls=calls)  # fmt: skip
