"""The OpenAI-compatible HTTP adapter: vLLM, SGLang, llama.cpp server, OpenAI.

One pooled ``httpx.AsyncClient`` per adapter; ``/v1/chat/completions`` for chat
requests and ``/v1/completions`` for prompts, streamed (SSE) or not. Everything the
server can do wrong becomes a typed ``critpath.errors.ModelError`` here, at the
boundary, marked retryable or not.

Clocks (``Timeouts``): connect; **time to first token** (a watchdog: a request the
server has queued or stalled on is abandoned, and retried if the policy allows);
idle gap between two reads of the stream; and the call's total, which the request's
``timeout`` and the enclosing ``critpath.deadline`` scope can only shorten.

Retries (tenacity, via ``RetryPolicy``) cover retryable errors before the first
token only — after that the caller has already seen part of the answer — with
jittered exponential back-off that never sleeps past the deadline.

Limits (``ResponseLimits``): the size of an SSE line, an event, a whole body, a whole
stream and the part of an error body that is read, all decoded; gzip/deflate bodies
are inflated incrementally, a bounded piece at a time with the event loop running
between pieces, so a gzip bomb or an endless line is a ``MalformedResponse``, not a
frozen loop or a memory blow-up.

Secrets: the API key, secret-looking headers and credentials in ``base_url``
(``http://user:key@host/v1``) are masked (``redact.Redactor``) in every exception the
adapter raises (a server that echoes the key back included) and never appear in its
``repr``, its logs or its spans; ``base_url`` is the URL without its credentials.

Cancelling the task that reads the stream, or closing the stream, closes the HTTP
response at once; vLLM sees the disconnect, aborts the request and frees its KV cache.

With ``vllm=True`` the adapter also sends vLLM's ``priority`` (the request's, or the
running critpath step's critical-path priority) and ``request_id``; ``load()`` reads
``/metrics`` for running/waiting requests and KV-cache usage. vLLM refuses a non-zero
``priority`` unless the server runs ``--scheduling-policy priority``: against one that
does not, pass ``send_priority=False`` (keeps ``request_id``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, cast

import httpx

from critpath import telemetry
from critpath.adapters.bounded import ACCEPT_ENCODING, ResponseLimits, decoded, read_limited
from critpath.adapters.logs import get_logger
from critpath.adapters.openai_tools import message_json, request_fields
from critpath.adapters.openai_wire import (
    loads,
    parse_chat_chunk,
    parse_completion_chunk,
    parse_whole,
    status_error,
)
from critpath.adapters.prometheus import ServerLoad, parse_metrics, server_load
from critpath.adapters.protocol import Chunk, ModelRequest, Usage
from critpath.adapters.redact import Redactor, redacted_url
from critpath.adapters.sse import SSEDecoder
from critpath.adapters.stats import EndpointStats, StreamClock
from critpath.deadlines import current_deadline, deadline_before_scope
from critpath.errors import (
    ConfigError,
    ConnectTimeout,
    FirstTokenTimeout,
    IdleTimeout,
    IncompleteStream,
    MalformedResponse,
    ModelConnectionError,
    ModelError,
    TotalTimeout,
    is_retryable,
)
from critpath.orchestrator.context import current_step
from critpath.orchestrator.policy import RetryPolicy, call_with_retry

__all__ = ["OpenAICompatible", "ResponseLimits", "Timeouts"]

_log = get_logger(__name__)

_DONE = b"[DONE]"
_AUX_TIMEOUT = 5.0  # seconds for /metrics and /models
_DRAIN_S = 1.0  # at most this long to read the end of a body after [DONE]
_SCOPE_MARGIN_S = 0.002  # give up this much before a deadline scope, to say TotalTimeout


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; ``None`` disables a clock."""

    connect: float | None = 5.0
    first_token: float | None = 60.0
    idle: float | None = 30.0
    total: float | None = 600.0

    def __post_init__(self) -> None:
        for name in ("connect", "first_token", "idle", "total"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError(f"Timeouts.{name} must be > 0 seconds or None, got {v!r}")


DEFAULT_RETRY = RetryPolicy(attempts=3, initial=0.1, maximum=2.0, jitter=0.1, retry_if=is_retryable)


class OpenAICompatible:
    """A model served over the OpenAI-compatible HTTP API.

    ``base_url`` includes the API prefix (``http://127.0.0.1:8000/v1``). The API key
    comes from ``api_key`` or the environment variable ``api_key_env``; it is sent
    as a bearer token and never logged, printed, put in spans or in errors (nor are
    credentials in ``base_url``: the attribute keeps the URL without them).
    ``limits`` bounds what the server may send (``ResponseLimits``).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        name: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        streaming: bool = True,
        vllm: bool = False,
        send_priority: bool | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 256,
        client: httpx.AsyncClient | None = None,
        stats: EndpointStats | None = None,
        limits: ResponseLimits | None = None,
    ) -> None:
        try:
            shown, _ = redacted_url(base_url)
        except Exception:  # httpx.InvalidURL and friends: never echo the URL's secrets
            shown = "(an invalid URL)"
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {shown!r}")
        if not model:
            raise ConfigError("model must name the served model")
        self._url = base_url.rstrip("/")
        self.base_url = shown.rstrip("/")
        """The server's URL as shown (credentials removed); requests use the given one."""
        self.limits = limits or ResponseLimits()
        self.model = model
        self._name = name or model
        self.timeouts = timeouts or Timeouts()
        self.retry = retry
        self.streaming = streaming
        self.vllm = vllm
        self.send_priority = vllm if send_priority is None else send_priority
        self.stats = stats if stats is not None else EndpointStats()
        key = (
            api_key
            if api_key is not None
            else (os.environ.get(api_key_env) if api_key_env else None)
        )
        hdrs = {"Accept": "application/json", "Accept-Encoding": ACCEPT_ENCODING,
                **dict(headers or {})}  # fmt: skip
        if key:
            hdrs["Authorization"] = f"Bearer {key}"
        self._redact = Redactor.for_request(self._url, hdrs, [key] if key else [])
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=self.timeouts.connect),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self._headers = hdrs

    # ---- lifecycle ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        """Close the connection pool (only if this adapter created the client)."""
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> OpenAICompatible:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:  # no headers: they hold the API key
        return f"OpenAICompatible({self.base_url!r}, model={self.model!r})"

    # ---- the protocol ---------------------------------------------------------------

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        loop = asyncio.get_running_loop()
        total_at = self._total_deadline(loop, request)
        body = self._body(request)
        path = "/chat/completions" if request.is_chat else "/completions"
        headers = self._headers
        if request.request_id is not None:
            headers = {**headers, "X-Request-Id": request.request_id}
        failed: list[tuple[ModelError, float]] = []  # this call's failed attempts, and when

        async def open_stream() -> tuple[list[Chunk], AsyncGenerator[Chunk, None]]:
            if failed:
                error, at = failed[-1]
                _log.info(
                    "retrying %s (request %s): attempt %d after %s: %s; waited %.3fs",
                    self.name, request.request_id, len(failed) + 1, type(error).__name__,
                    error, loop.time() - at,
                )  # fmt: skip
            gen = self._attempt(path, body, headers, request, total_at)
            try:
                return await _until_first_token(gen)
            except ModelError as exc:
                failed.append((exc, loop.time()))
                raise

        if self.retry is not None:
            try:
                first, rest = await call_with_retry(self.retry, open_stream, deadline_at=total_at)
            except ModelError as exc:
                if len(failed) > 1:
                    _log.info(
                        "giving up on %s (request %s) after %d attempts: %s: %s",
                        self.name, request.request_id, len(failed), type(exc).__name__, exc,
                    )  # fmt: skip
                raise
        else:
            first, rest = await open_stream()
        try:
            for chunk in first:
                yield chunk
            async for chunk in rest:
                yield chunk
        finally:
            await rest.aclose()

    def _total_deadline(
        self, loop: asyncio.AbstractEventLoop, request: ModelRequest
    ) -> float | None:
        now = loop.time()
        # Fire just before the scope does, so the caller gets a typed TotalTimeout rather
        # than the scope's bare TimeoutError when both clocks run out together.
        candidates = [deadline_before_scope(_SCOPE_MARGIN_S)]
        if self.timeouts.total is not None:
            candidates.append(now + self.timeouts.total)
        if request.timeout is not None:
            candidates.append(now + request.timeout)
        present = [c for c in candidates if c is not None]
        return min(present) if present else None

    def _body(self, r: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": r.max_tokens}
        if r.messages is not None:
            body["messages"] = [message_json(m) for m in r.messages]
        else:
            body["prompt"] = r.prompt
        body.update(r.sampling())
        body.update(request_fields(r))
        if r.logprobs:
            if r.is_chat:
                body["logprobs"] = True
                if r.top_logprobs:
                    body["top_logprobs"] = r.top_logprobs
            else:
                body["logprobs"] = r.top_logprobs or 0
        if self.streaming:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if self.send_priority:
            priority = r.priority
            if priority is None:
                step = current_step()
                priority = step.priority if step is not None else None
            if priority is not None:
                body["priority"] = priority
        if self.vllm and r.request_id is not None:
            body["request_id"] = r.request_id
        body.update(r.extra_body)
        return body

    async def _attempt(
        self,
        path: str,
        body: dict[str, Any],
        headers: Mapping[str, str],
        request: ModelRequest,
        total_at: float | None,
    ) -> AsyncGenerator[Chunk, None]:
        """One HTTP request, streamed into chunks; records stats; maps every error."""
        loop = asyncio.get_running_loop()
        clock = self.stats.clock()
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        first_at = _earliest(
            total_at, loop.time() + self.timeouts.first_token if self.timeouts.first_token else None
        )
        usage: Usage | None = None
        span = telemetry.start_model_span(
            self.name,
            {
                "critpath.endpoint": self.base_url + path,
                "critpath.model": self.model,
                "critpath.priority": int(body.get("priority", 0)),
                "critpath.max_tokens": request.max_tokens,
            },
        )
        error: BaseException | None = None
        ended = False  # the server sent its whole answer (or an error status)
        try:
            req = self._client.build_request("POST", self._url + path, json=body, headers=headers)
            try:
                async with asyncio.timeout_at(first_at):
                    resp = await self._client.send(req, stream=True)
            except TimeoutError:
                raise self._timeout("first", total_at, loop) from None
            try:
                if resp.status_code != 200:
                    ended = True
                    raw = await self._read_body(
                        resp, first_at, "first", total_at, self.limits.max_error_body, truncate=True
                    )
                    raise status_error(resp, self.name, raw)
                clock.accepted()
                yield Chunk()  # the server accepted the request
                if not self.streaming:
                    raw = await self._read_body(
                        resp, first_at, "first", total_at, self.limits.max_body
                    )
                    ended = True
                    whole = parse_whole(raw, request.is_chat, self.name, request.top_logprobs or 0)
                    if whole.tokens or whole.text:
                        clock.token(whole.tokens or 1)
                    usage = whole.usage
                    yield whole
                else:
                    async with aclosing(
                        self._read_sse(resp, request, clock, first_at, total_at)
                    ) as events:
                        async for chunk in events:
                            if chunk.usage is not None:
                                usage = chunk.usage
                            yield chunk
                ended = True
            finally:
                await resp.aclose()
            timings = clock.finish(usage.completion_tokens if usage is not None else None)
            stats.record(timings)
            telemetry.end_model_span(
                span, ttft=timings.ttft, e2e=timings.e2e, tokens=timings.tokens
            )
            span = None
        except httpx.HTTPError as exc:
            error = self._map_httpx(exc)
            error.__cause__ = exc
            self._redact.exception(error)
            stats.record_error(error)
            raise error from exc
        except ModelError as exc:
            error = self._redact.exception(exc)
            stats.record_error(exc)
            raise
        except GeneratorExit:
            if not ended:
                self._log_abort(request, "closed by its reader")
            raise
        except asyncio.CancelledError:
            if not _cancelled_by_expired_scope(loop):
                if not ended:
                    self._log_abort(request, "cancelled")
                raise
            # The enclosing deadline scope fired before our own clock (both were due
            # together): report it as what it is. TotalTimeout is a TimeoutError, and the
            # scope lets a non-CancelledError through, so its contract still holds.
            error = TotalTimeout("the deadline in force ran out", model=self.name)
            stats.record_error(error)
            raise error from None
        finally:
            stats.in_flight -= 1
            if span is not None:  # failed, cancelled or closed early
                telemetry.end_model_span(span, error=error)

    def _log_abort(self, request: ModelRequest, why: str) -> None:
        _log.debug(
            "%s: request %s %s before its end: its HTTP stream is closed, the server aborts it",
            self.name, request.request_id, why,
        )  # fmt: skip

    def _decoded(self, resp: httpx.Response) -> AsyncGenerator[bytes, None]:
        raw = cast(AsyncGenerator[bytes, None], resp.aiter_raw())
        return decoded(raw, resp.headers.get("content-encoding"), model=self.name)

    async def _read_body(
        self,
        resp: httpx.Response,
        until: float | None,
        phase: str,
        total_at: float | None,
        limit: int,
        *,
        truncate: bool = False,
    ) -> bytes:
        """The body (decoded, at most ``limit`` bytes: past it ``MalformedResponse``, or
        with ``truncate`` the first ``limit`` bytes), or the typed timeout of ``phase``
        if it does not come in time."""
        try:
            async with asyncio.timeout_at(until), aclosing(self._decoded(resp)) as pieces:
                return await read_limited(pieces, limit, model=self.name, truncate=truncate)
        except TimeoutError:
            raise self._timeout(phase, total_at, asyncio.get_running_loop()) from None

    async def _read_sse(
        self,
        resp: httpx.Response,
        request: ModelRequest,
        clock: StreamClock,
        first_at: float | None,
        total_at: float | None,
    ) -> AsyncGenerator[Chunk, None]:
        """Decode the SSE body into chunks under the first-token, idle and total clocks."""
        loop = asyncio.get_running_loop()
        limits = self.limits
        decoder = SSEDecoder(self.name, max_line=limits.max_line, max_event=limits.max_event)
        received = 0
        idle = self.timeouts.idle
        top_k = request.top_logprobs or 0
        parse = parse_chat_chunk if request.is_chat else parse_completion_chunk
        phase = "first"
        when = first_at
        finished = False
        # The decoded body is an async generator: close it ourselves, not the loop later.
        async with aclosing(self._decoded(resp)) as reads:
            while True:
                try:
                    async with asyncio.timeout_at(when):
                        data = await anext(reads, None)
                except TimeoutError:
                    raise self._timeout(phase, total_at, loop) from None
                if data is not None:
                    received += len(data)
                    if received > limits.max_stream:
                        raise MalformedResponse(
                            f"a stream larger than {limits.max_stream} bytes", model=self.name
                        )
                events = decoder.close() if data is None else decoder.feed(data)
                for payload in events:
                    if payload == _DONE:
                        await _drain(reads, _earliest(total_at, loop.time() + _DRAIN_S))
                        return
                    chunk = parse(loads(payload, self.name), self.name, top_k)
                    if chunk is None:
                        continue
                    if chunk.tokens or chunk.text:
                        clock.token(chunk.tokens or 1)
                        phase = "idle"
                    if chunk.finish_reason is not None:
                        finished = True
                    yield chunk
                if data is None:
                    if finished:
                        return  # a complete answer; the server just omitted [DONE]
                    raise IncompleteStream(
                        "the stream ended without [DONE] or a finish reason", model=self.name
                    )
                if phase == "idle":
                    when = _earliest(total_at, loop.time() + idle if idle else None)

    def _map_httpx(self, exc: httpx.HTTPError) -> ModelError:
        if isinstance(exc, httpx.ConnectTimeout):
            return ConnectTimeout(f"connect timed out: {exc!r}", model=self.name)
        if isinstance(exc, httpx.ConnectError):
            return ModelConnectionError(
                f"cannot connect to {self.base_url}: {exc!r}", model=self.name
            )
        if isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError | httpx.WriteError):
            return ModelConnectionError(f"connection lost: {exc!r}", model=self.name)
        return ModelConnectionError(f"HTTP error: {exc!r}", model=self.name)

    def _timeout(
        self, phase: str, total_at: float | None, loop: asyncio.AbstractEventLoop
    ) -> ModelError:
        if total_at is not None and loop.time() >= total_at - 1e-3:
            return TotalTimeout("the call's total budget or deadline ran out", model=self.name)
        if phase == "first":
            return FirstTokenTimeout(
                f"no token within {self.timeouts.first_token}s (time-to-first-token watchdog)",
                model=self.name,
            )
        return IdleTimeout(f"no data for {self.timeouts.idle}s mid-stream", model=self.name)

    # ---- load signal and discovery --------------------------------------------------

    def _root(self) -> str:
        root = self._url
        return root[: -len("/v1")] if root.endswith("/v1") else root

    async def load(self) -> ServerLoad | None:
        """This model's running/waiting requests and the KV-cache usage, from the server's
        ``/metrics`` (None if it exports none)."""
        try:
            code, raw, resp = await self._aux_get(self._root() + "/metrics", {}, "read /metrics")
            if code == 404:
                return None
            if code != 200:
                raise status_error(resp, self.name, raw)
            return server_load(parse_metrics(raw.decode("utf-8", "replace"), model=self.model))
        except ModelError as exc:
            raise self._redact.exception(exc) from exc.__cause__

    async def models(self) -> list[str]:
        """The model ids the server serves (``GET /v1/models``)."""
        try:
            code, raw, resp = await self._aux_get(self._url + "/models", self._headers,
                                                  "list models")  # fmt: skip
            if code != 200:
                raise status_error(resp, self.name, raw)
            data = loads(raw, self.name)
            try:
                return [str(m["id"]) for m in data["data"]]
            except (KeyError, TypeError) as exc:
                raise MalformedResponse(
                    f"unexpected /models body: {exc!r:.200}", model=self.name
                ) from exc
        except ModelError as exc:
            raise self._redact.exception(exc) from exc.__cause__

    async def _aux_get(
        self, url: str, headers: Mapping[str, str], what: str
    ) -> tuple[int, bytes, httpx.Response]:
        """A small GET (``/metrics``, ``/models``): status and body, bounded in size and time."""
        try:
            async with asyncio.timeout(_AUX_TIMEOUT):
                async with self._client.stream("GET", url, headers=headers) as resp:
                    limit = self.limits.max_body if resp.status_code == 200 else (
                        self.limits.max_error_body)  # fmt: skip
                    pieces = self._decoded(resp)
                    async with aclosing(pieces):
                        raw = await read_limited(pieces, limit, model=self.name,
                                                 truncate=resp.status_code != 200)  # fmt: skip
                    return resp.status_code, raw, resp
        except TimeoutError:
            raise ModelConnectionError(
                f"cannot {what}: no answer within {_AUX_TIMEOUT}s", model=self.name
            ) from None
        except httpx.HTTPError as exc:
            error = ModelConnectionError(f"cannot {what}: {exc!r}", model=self.name)
            error.__cause__ = exc
            raise self._redact.exception(error) from exc


async def _until_first_token(
    gen: AsyncGenerator[Chunk, None],
) -> tuple[list[Chunk], AsyncGenerator[Chunk, None]]:
    """Read ``gen`` up to its first token (or its end); errors close it and propagate."""
    first: list[Chunk] = []
    try:
        async for chunk in gen:
            first.append(chunk)
            if chunk.text or chunk.tokens or chunk.finish_reason is not None or chunk.usage:
                break
    except BaseException:
        await gen.aclose()
        raise
    return first, gen


def _cancelled_by_expired_scope(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the only pending cancellation is the expired deadline scope's."""
    scope = current_deadline()
    task = asyncio.current_task()
    return (
        scope is not None and loop.time() >= scope and task is not None and task.cancelling() == 1
    )


async def _drain(reads: AsyncIterator[bytes], until: float | None) -> None:
    """Read what is left after ``[DONE]`` (the chunked body's end), so the connection
    goes back to the pool instead of being closed; give up quietly at ``until``."""
    try:
        async with asyncio.timeout_at(until):
            async for _ in reads:
                pass
    except TimeoutError:
        pass


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
