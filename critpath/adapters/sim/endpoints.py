"""The completion endpoints of the simulated server, as raw ASGI.

``CompletionEndpoint`` answers ``/v1/chat/completions`` or ``/v1/completions`` with a
replica picked by ``FleetService`` (the one with the fewest outstanding requests).
Each answer runs in a task beside a watcher of the client's connection: when the
client goes away — queued, before its first token, between two tokens — the task is
cancelled at once, which cancels the model's stream (its place in the queue or its
slot is freed, and the model counts the request as aborted).

The response headers go out with the first token, so an error the model raises
before it (a simulated server error) is an HTTP error status with an OpenAI-style
body; a simulated connection reset raises ``SimulatedReset`` out of the app, after
the headers, so that the ASGI server drops the connection in the middle of the body.
``FleetService`` also counts requests and renders ``/v1/models`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from critpath.adapters.protocol import Chunk, TokenLogprob, Usage
from critpath.adapters.sim.fleet import Fleet
from critpath.adapters.sim.limits import ContextLimits
from critpath.adapters.sim.model import SimulatedModel
from critpath.adapters.sim.wire import (
    APIError,
    ParsedRequest,
    ResponseEncoder,
    error_body,
    parse_request,
)
from critpath.adapters.toolcalls import ToolCallAssembler
from critpath.adapters.tools import ToolCall
from critpath.errors import ConfigError, ModelConnectionError, ModelError
from critpath.serve.guard import JSONBodyError, loads_json

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

__all__ = ["CompletionEndpoint", "Counters", "FleetService", "SimulatedReset"]

_MAX_BODY = 8 << 20
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
_JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(slots=True)
class Counters:
    requests: int = 0
    success: int = 0
    aborted: int = 0
    errors: int = 0
    resets: int = 0


class FleetService:
    """Routing to replicas, request counters, the ``/v1/models`` and ``/metrics`` bodies."""

    def __init__(self, fleet: Fleet, limits: ContextLimits | None = None) -> None:
        if not fleet.models:
            raise ConfigError("the fleet has no models to serve")
        self.fleet = fleet
        self.limits = limits or ContextLimits()
        self.created = int(time.time())
        self.counters = {name: Counters() for name in fleet.models}
        self._outstanding: dict[SimulatedModel, int] = {}
        self._assigned: dict[SimulatedModel, int] = {}
        self._answering: set[_Answer] = set()

    def drop_all(self) -> None:
        """Stop every answer in progress (the server is going away): their generations
        are cancelled and their connections dropped."""
        for answer in list(self._answering):
            answer.drop()

    def resolve(self, name: str | None) -> str:
        if name is None:
            names = self.fleet.names()
            if len(names) == 1:
                return names[0]
            raise APIError(
                400, "model is required: this server has " + ", ".join(names), param="model"
            )
        if name not in self.fleet.models:
            raise APIError(404, f"The model `{name}` does not exist.", param="model")
        return name

    def acquire(self, name: str) -> SimulatedModel:
        """The replica with the fewest outstanding requests (ties: the least used)."""
        replica = min(
            self.fleet.replicas(name),
            key=lambda r: (self._outstanding.get(r, 0), self._assigned.get(r, 0)),
        )
        self._outstanding[replica] = self._outstanding.get(replica, 0) + 1
        self._assigned[replica] = self._assigned.get(replica, 0) + 1
        return replica

    def release(self, replica: SimulatedModel) -> None:
        self._outstanding[replica] -= 1

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "critpath-sim",
                    "root": name,
                    "parent": None,
                }
                for name in self.fleet.names()
            ],
        }

    def metrics(self) -> str:
        names = self.fleet.names()
        running: dict[str, float] = {}
        waiting: dict[str, float] = {}
        usage: dict[str, float] = {}
        for name in names:
            schedulers = [r.scheduler for r in self.fleet.replicas(name)]
            running[name] = float(sum(s.running for s in schedulers))
            waiting[name] = float(sum(s.waiting for s in schedulers))
            usage[name] = running[name] / sum(s.slots for s in schedulers)
        c = self.counters
        queries: dict[str, float] = {}
        hits: dict[str, float] = {}
        for name in names:
            caches = [r.prefix_cache for r in self.fleet.replicas(name)]
            queries[name] = float(sum(pc.queries for pc in caches if pc is not None))
            hits[name] = float(sum(pc.hits for pc in caches if pc is not None))
        families: list[tuple[str, str, str, dict[str, float]]] = [
            (
                "vllm:num_requests_running",
                "gauge",
                "Number of requests in model execution batches.",
                running,
            ),
            (
                "vllm:num_requests_waiting",
                "gauge",
                "Number of requests waiting to be processed.",
                waiting,
            ),
            (
                "vllm:kv_cache_usage_perc",
                "gauge",
                "KV-cache usage. 1 means 100 percent usage (here: running / slots).",
                usage,
            ),
            (
                "vllm:request_success_total",
                "counter",
                "Count of successfully processed requests.",
                {n: c[n].success for n in names},
            ),
            (
                "vllm:prefix_cache_queries_total",
                "counter",
                "Prefix cache queries, in terms of number of queried tokens.",
                queries,
            ),
            (
                "vllm:prefix_cache_hits_total",
                "counter",
                "Prefix cache hits, in terms of number of cached tokens.",
                hits,
            ),
            (
                "critpath_sim_requests_total",
                "counter",
                "Completion requests received.",
                {n: c[n].requests for n in names},
            ),
            (
                "critpath_sim_requests_aborted_total",
                "counter",
                "Requests cancelled before their answer was complete (client gone, shutdown).",
                {n: c[n].aborted for n in names},
            ),
            (
                "critpath_sim_request_errors_total",
                "counter",
                "Requests answered with a simulated server error.",
                {n: c[n].errors for n in names},
            ),
            (
                "critpath_sim_connection_resets_total",
                "counter",
                "Connections dropped by a simulated reset.",
                {n: c[n].resets for n in names},
            ),
        ]
        lines: list[str] = []
        for name, kind, text, values in families:
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            for model, value in values.items():
                lines.append(f'{name}{{model_name="{_label(model)}"}} {float(value)!r}')
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class SimulatedReset(Exception):
    """Raised out of the app so that the ASGI server drops the connection mid-body."""


class CompletionEndpoint:
    """The ASGI endpoint of ``/v1/chat/completions`` (``chat``) or ``/v1/completions``."""

    def __init__(self, service: FleetService, *, chat: bool) -> None:
        self.service = service
        self.chat = chat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            raw = await _read_body(receive)
            if raw is None:
                return  # the client left before its request arrived
            try:
                body = loads_json(raw)
            except (JSONBodyError, UnicodeDecodeError) as exc:
                raise APIError(400, f"the request body is not valid JSON: {exc}") from None
            parsed = parse_request(body, chat=self.chat, request_id=_header(scope, b"x-request-id"))
            name = self.service.resolve(parsed.model)
            asked = isinstance(body, dict) and (
                "max_tokens" in body or "max_completion_tokens" in body
            )
            self.service.limits.check(name, parsed.request, completion=asked)
        except APIError as exc:
            await _send_json(send, exc.status, exc.body())
            return
        await _Answer(self.service, name, parsed, chat=self.chat).run(receive, send)


class _Answer:
    """One request answered by one replica, cancelled at once if the client goes away."""

    def __init__(
        self, service: FleetService, name: str, parsed: ParsedRequest, *, chat: bool
    ) -> None:
        self.service = service
        self.counters = service.counters[name]
        self.parsed = parsed
        self.chat = chat
        request_id = parsed.request.request_id or uuid.uuid4().hex
        self.encoder = ResponseEncoder(
            chat=chat,
            model=name,
            request=parsed.request,
            completion_id=("chatcmpl-" if chat else "cmpl-") + request_id,
            created=int(time.time()),
        )
        self.name = name
        self.started = False  # response headers sent
        self.ending = False  # the last message of the response is being sent
        self.dropped = False  # by the server (drop_all), not by the client
        self._work: asyncio.Task[None] | None = None

    def drop(self) -> None:
        if self._work is not None and not self.ending:
            self.dropped = True
            self._work.cancel()

    async def run(self, receive: Receive, send: Send) -> None:
        self.counters.requests += 1
        replica = self.service.acquire(self.name)
        self._work = work = asyncio.create_task(self._generate(replica, send))
        watch = asyncio.create_task(_until_disconnect(receive))
        self.service._answering.add(self)
        try:
            await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and not self.ending:
                work.cancel()  # the client went away: stop generating now
            await asyncio.wait((work,))
        finally:
            self.service._answering.discard(self)
            watch.cancel()
            work.cancel()  # only does something when we are cancelled ourselves
            await asyncio.wait((work, watch))
            self.service.release(replica)
        if work.cancelled():
            self.counters.aborted += 1
            if self.dropped:
                raise SimulatedReset("the server shut down before the answer was complete")
            return
        exc = work.exception()
        if exc is not None:
            raise exc  # a simulated reset (the server drops the connection) or a bug

    async def _generate(self, replica: SimulatedModel, send: Send) -> None:
        stream = replica.stream(self.parsed.request)
        try:
            try:
                head = await _first_token(stream)
            except ModelConnectionError as exc:
                await self._reset(send, exc)
            except ModelError as exc:
                await self._fail(send, exc)
                return
            if self.parsed.stream:
                await self._stream(stream, head, send)
            else:
                await self._whole(stream, head, send)
        finally:
            await stream.aclose()

    async def _start(self, send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        await send({"type": "http.response.start", "status": status, "headers": headers})

    async def _reset(self, send: Send, exc: ModelConnectionError) -> NoReturn:
        self.counters.resets += 1
        if not self.started:  # a real reset would be seen after the request was sent
            await self._start(send, 200, _SSE_HEADERS if self.parsed.stream else _JSON_HEADERS)
        raise SimulatedReset(str(exc)) from exc

    async def _fail(self, send: Send, exc: ModelError) -> None:
        """A model error before the first token: an HTTP error status."""
        self.counters.errors += 1
        status = exc.status if isinstance(exc.status, int) and 400 <= exc.status < 600 else 500
        self.ending = True
        await _send_json(send, status, error_body(status, str(exc)))

    async def _event(self, send: Send, data: dict[str, Any]) -> None:
        payload = b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": payload, "more_body": True})

    async def _stream(
        self, stream: AsyncGenerator[Chunk, None], head: list[Chunk], send: Send
    ) -> None:
        enc = self.encoder
        await self._start(send, 200, _SSE_HEADERS)
        if self.chat:
            await self._event(send, enc.role_chunk())
        usage: Usage | None = None
        tokens = 0
        try:
            async with aclosing(_chain(head, stream)) as chunks:
                async for chunk in chunks:
                    tokens += chunk.tokens
                    usage = chunk.usage or usage
                    await self._event(send, enc.chunk(chunk))
        except ModelConnectionError as exc:
            await self._reset(send, exc)
        except ModelError as exc:  # after the first token: an error event, as vLLM sends
            self.counters.errors += 1
            await self._event(send, error_body(500, str(exc)))
        else:
            self.counters.success += 1
            if self.parsed.include_usage:
                await self._event(send, enc.usage_chunk(usage or Usage(0, tokens)))
        self.ending = True
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _whole(
        self, stream: AsyncGenerator[Chunk, None], head: list[Chunk], send: Send
    ) -> None:
        parts: list[str] = []
        logprobs: list[TokenLogprob] = []
        finish: str | None = None
        usage: Usage | None = None
        tokens = 0
        calls = ToolCallAssembler()
        try:
            async with aclosing(_chain(head, stream)) as chunks:
                async for chunk in chunks:
                    calls.feed(chunk.tool_calls)
                    parts.append(chunk.text)
                    logprobs.extend(chunk.logprobs or ())
                    tokens += chunk.tokens
                    finish = chunk.finish_reason or finish
                    usage = chunk.usage or usage
        except ModelConnectionError as exc:
            await self._reset(send, exc)
        except ModelError as exc:
            await self._fail(send, exc)
            return
        calls.finish()
        whole = [c for c in calls.calls() if isinstance(c, ToolCall)]
        body = self.encoder.response(
            "".join(parts), logprobs, finish, usage or Usage(0, tokens), whole
        )
        self.counters.success += 1
        self.ending = True
        await _send_json(send, 200, body)


def _has_content(chunk: Chunk) -> bool:
    return bool(chunk.text or chunk.tokens or chunk.finish_reason or chunk.usage)


async def _first_token(stream: AsyncGenerator[Chunk, None]) -> list[Chunk]:
    """Read up to the first chunk with content (or the end); ``[]`` if there is none."""
    async for chunk in stream:
        if _has_content(chunk):
            return [chunk]
    return []


async def _chain(
    head: list[Chunk], stream: AsyncGenerator[Chunk, None]
) -> AsyncGenerator[Chunk, None]:
    for chunk in head:
        yield chunk
    async for chunk in stream:
        if _has_content(chunk):
            yield chunk


async def _read_body(receive: Receive) -> bytes | None:
    """The request body; ``None`` if the client disconnected first."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body = message.get("body", b"")
        size += len(body)
        if size > _MAX_BODY:
            raise APIError(413, f"the request body is larger than {_MAX_BODY} bytes")
        parts.append(body)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _until_disconnect(receive: Receive) -> None:
    message: Message = await receive()
    while message["type"] != "http.disconnect":
        message = await receive()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON_HEADERS})
    data = json.dumps(body, separators=(",", ":")).encode()
    await send({"type": "http.response.body", "body": data, "more_body": False})
