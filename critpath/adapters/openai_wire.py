"""The OpenAI-compatible wire format: response bodies and stream events into ``Chunk``s,
HTTP error statuses into typed ``ModelError``s.

Pure functions (no I/O), used by ``OpenAICompatible``. Chat events carry
``choices[0].delta.content`` and ``logprobs.content[...]``; completion events carry
``choices[0].text`` and the legacy ``logprobs`` object; chat deltas and messages may
carry ``tool_calls`` (read by ``openai_tools``); the last event may carry
``usage`` with ``choices: []``; an ``{"error": ...}`` event is an error.
"""

from __future__ import annotations

import json
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


def loads(payload: bytes, model: str) -> Any:
    try:
        return json.loads(payload)
    except ValueError as exc:
        raise MalformedResponse(
            f"invalid JSON from the server: {payload[:120]!r}", model=model
        ) from exc


def _error_message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        text = resp.text.strip()
        return text[:300] or resp.reason_phrase or f"HTTP {resp.status_code}"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:500]
        if "detail" in data:
            return str(data["detail"])[:500]
        return str(err)[:500]
    return str(data)[:500]


def status_error(resp: httpx.Response, model: str) -> ModelError:
    code = resp.status_code
    msg = f"HTTP {code}: {_error_message(resp)}"
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
        return max(0.0, float(value))
    except ValueError:
        return None


def _stream_error(data: dict[str, Any], model: str) -> ModelError:
    err = data.get("error")
    message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    code = err.get("code") if isinstance(err, dict) else None
    if isinstance(code, int) and 400 <= code < 500:
        text = f"error event in the stream: {message}"
        if "context length" in str(message).lower():
            return ContextLengthExceeded(text, model=model, status=code)
        return BadRequest(text, model=model, status=code)
    return ServerError(f"error event in the stream: {message}", model=model)


def _usage(data: dict[str, Any], model: str) -> Usage | None:
    u = data.get("usage")
    if not u:
        return None
    try:
        return Usage(int(u["prompt_tokens"]), int(u["completion_tokens"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedResponse(f"malformed usage: {u!r}", model=model) from exc


def _envelope(data: Any, model: str) -> tuple[dict[str, Any] | None, Usage | None]:
    """Check a stream event's envelope; return its first choice (if any) and usage."""
    if not isinstance(data, dict):
        raise MalformedResponse(f"a stream event that is not an object: {data!r:.120}", model=model)
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
        text = delta.get("content") or ""
        calls = stream_deltas(delta)
        lp = choice.get("logprobs")
        logprobs = _chat_logprobs(lp["content"]) if lp and lp.get("content") else None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise MalformedResponse(f"malformed chat chunk: {exc!r}", model=model) from exc
    return _chunk(text, logprobs, choice.get("finish_reason"), usage, calls)


def _chat_logprobs(content: list[dict[str, Any]]) -> tuple[TokenLogprob, ...]:
    return tuple(
        TokenLogprob(
            token=str(c["token"]),
            logprob=float(c["logprob"]),
            top=tuple((str(t["token"]), float(t["logprob"])) for t in c.get("top_logprobs") or ()),
        )
        for c in content
    )


def parse_completion_chunk(data: Any, model: str, top_k: int = 0) -> Chunk | None:
    choice, usage = _envelope(data, model)
    if choice is None:
        return Chunk(usage=usage) if usage is not None else None
    try:
        text = choice.get("text") or ""
        lp = choice.get("logprobs")
        logprobs = _completion_logprobs(lp, top_k) if lp and lp.get("tokens") else None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise MalformedResponse(f"malformed completion chunk: {exc!r}", model=model) from exc
    return _chunk(text, logprobs, choice.get("finish_reason"), usage)


def _completion_logprobs(lp: dict[str, Any], top_k: int) -> tuple[TokenLogprob, ...]:
    """The legacy completions format; its ``top_logprobs`` dicts may also hold the chosen
    token (vLLM does this), so keep the ``top_k`` most likely, as the chat format has."""
    tokens = lp["tokens"]
    values = lp["token_logprobs"]
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    return tuple(
        TokenLogprob(
            token=str(tok),
            logprob=float(val) if val is not None else float("nan"),
            top=tuple(
                sorted(((str(k), float(v)) for k, v in (top or {}).items()), key=lambda t: -t[1])[
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
        finish = choice.get("finish_reason")
        lp = choice.get("logprobs")
        calls: tuple[ToolCallDelta, ...] = ()
        if chat:
            message = choice.get("message") or {}
            text = message.get("content") or ""
            calls = message_calls(message)
            logprobs = _chat_logprobs(lp["content"]) if lp and lp.get("content") else None
        else:
            text = choice.get("text") or ""
            logprobs = _completion_logprobs(lp, top_k) if lp and lp.get("tokens") else None
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise MalformedResponse(f"malformed response body: {exc!r}", model=model) from exc
    some = int(bool(text or calls))
    tokens = usage.completion_tokens if usage else (len(logprobs) if logprobs else some)
    return Chunk(text=text, tokens=tokens, logprobs=logprobs, finish_reason=finish, usage=usage,
                 tool_calls=calls)  # fmt: skip
