"""A tiny OpenAI-compatible HTTP/1.1 server on loopback that misbehaves on demand.

Built directly on ``asyncio.start_server`` (real sockets on 127.0.0.1, an ephemeral
port), so the adapter under test goes through its real HTTP stack: connection pool,
chunked transfer encoding, connection resets, client disconnects.

Use it as an async context manager::

    async with FaultServer() as server:
        server.push(status(503), ok(["Hel", "lo"]))   # one scenario per request
        adapter = OpenAICompatible(server.base_url, "m")

A *scenario* is an async function of an ``Exchange`` (the recorded request and a
writer for the response); the factories below build the usual ones. Completion
requests (``/v1/chat/completions``, ``/v1/completions``) consume ``server.push``-ed
scenarios one per request, then fall back to ``server.scenario``. ``/v1/models`` and
``/metrics`` answer from ``server.models_body`` and ``server.metrics_text``.

The server records every request (``server.requests``), counts the connections open
right now (accepted and not yet closed by either side), and notices when the client
goes away: ``RecordedRequest.disconnected`` is set when the client closes the
connection that request came on.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = [
    "COMPLETION_PATHS",
    "PROMPT_TOKENS",
    "Exchange",
    "FaultServer",
    "RecordedRequest",
    "Scenario",
    "big_body",
    "echo_auth",
    "encoded",
    "error_event",
    "expected_logprob",
    "expected_top",
    "ok",
    "raw_sse",
    "reset",
    "stall_after",
    "stall_before_first_token",
    "stall_before_headers",
    "stall_body",
    "status",
]

Scenario = Callable[["Exchange"], Awaitable[None]]

COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions")
PROMPT_TOKENS = 7  # what the usage chunk reports as prompt_tokens
_MAX_HEAD = 64 * 1024


@dataclass(eq=False)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    raw_body: bytes
    body: Any  # the parsed JSON body, or None
    connection: int  # id of the connection it came on
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the client closed the connection this request came on."""
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server stopped serving it (answered, aborted or cancelled)."""

    @property
    def is_chat(self) -> bool:
        return self.path == "/v1/chat/completions"

    @property
    def wants_stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))


class _Connection:
    """One accepted connection: a pump reading everything the client sends."""

    def __init__(
        self,
        server: FaultServer,
        cid: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.id = cid
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.arrived = asyncio.Event()
        self.eof = asyncio.Event()
        self.closed_by: str | None = None
        self.current: RecordedRequest | None = None
        self.task: asyncio.Task[None] | None = None

    async def pump(self) -> None:
        """Read until the client closes (FIN or reset), then stop serving it."""
        try:
            while data := await self.reader.read(65536):
                self.buf += data
                self.arrived.set()
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:  # the server is done with this connection
            self.eof.set()
            self.arrived.set()
            raise
        self.eof.set()
        self.arrived.set()
        self.mark_closed("client")  # a no-op if the server closed it first
        task = self.task
        if task is not None and not task.done():
            task.cancel()  # stop serving a client that has gone

    def mark_closed(self, by: str) -> None:
        if self.closed_by is not None:
            return
        self.closed_by = by
        if by == "client" and self.current is not None:
            self.current.disconnected.set()
        self.server._connection_closed(self)

    async def _more(self) -> bool:
        if self.eof.is_set():
            return False
        self.arrived.clear()
        await self.arrived.wait()
        return True

    async def read_request(self) -> tuple[str, str, dict[str, str], bytes] | None:
        """The next request (method, path, headers, body), or None at end of input."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > _MAX_HEAD or not await self._more():
                return None
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[: end + 4]
        request_line, *header_lines = head.split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            if not await self._more():
                return None
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return method, target.split("?", 1)[0], headers, body


class Exchange:
    """A request being answered: what came in, and how to write the response."""

    def __init__(self, conn: _Connection, request: RecordedRequest) -> None:
        self._conn = conn
        self.request = request
        self.server = conn.server

    @property
    def _writer(self) -> asyncio.StreamWriter:
        return self._conn.writer

    async def _write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()
        self.server.bytes_written += len(data)

    async def send_head(
        self,
        code: int = 200,
        headers: Sequence[tuple[str, str]] = (),
        *,
        content_type: str = "text/event-stream",
        content_length: int | None = None,
    ) -> None:
        """Status line and headers; chunked unless ``content_length`` is given."""
        lines = [f"HTTP/1.1 {code} {_reason(code)}", f"Content-Type: {content_type}"]
        if content_length is None:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append(f"Content-Length: {content_length}")
        lines.extend(f"{k}: {v}" for k, v in headers)
        await self._write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def send_chunk(self, data: bytes) -> None:
        """One chunk of a chunked body."""
        if data:
            await self._write(b"%x\r\n%s\r\n" % (len(data), data))

    async def send_event(self, payload: Any) -> None:
        """One SSE event ``data: <json>`` (a str or bytes payload is sent as is)."""
        if isinstance(payload, bytes):
            raw = payload
        elif isinstance(payload, str):
            raw = payload.encode()
        else:
            raw = json.dumps(payload).encode()
        await self.send_chunk(b"data: " + raw + b"\n\n")

    async def end(self) -> None:
        """Terminate a chunked body (the connection stays open: keep-alive)."""
        await self._write(b"0\r\n\r\n")

    async def respond(
        self,
        code: int,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
        *,
        content_type: str = "application/json",
    ) -> None:
        """A whole response with a Content-Length."""
        await self.send_head(code, headers, content_type=content_type, content_length=len(body))
        if body:
            await self._write(body)

    def abort(self, *, rst: bool = True) -> None:
        """Drop the connection at once: a TCP reset (``rst``) or an abrupt FIN."""
        self._conn.mark_closed("server")
        transport = self._writer.transport
        sock = transport.get_extra_info("socket")
        if rst and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def close(self) -> None:
        """Close the connection cleanly (everything written is delivered, then FIN)."""
        self._conn.mark_closed("server")
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    async def wait_disconnect(self) -> None:
        """Wait (forever if need be) for the client to close the connection."""
        await self._conn.eof.wait()


class FaultServer:
    """An OpenAI-compatible HTTP/1.1 server on 127.0.0.1 whose answers tests choose."""

    def __init__(self, *, model: str = "m") -> None:
        self.model = model
        self.scenario: Scenario = ok()
        self.scenarios: deque[Scenario] = deque()
        self.models_body: bytes = json.dumps(
            {"object": "list", "data": [{"id": model, "object": "model"}]}
        ).encode()
        self.metrics_text: str | None = None  # None: /metrics answers 404
        self.requests: list[RecordedRequest] = []
        self.errors: list[BaseException] = []  # the server's own failures
        self.connections_opened = 0
        self.open_connections = 0
        self.bytes_written = 0  # response bytes the clients' sockets accepted
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()

    # ---- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> FaultServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for conn in list(self._connections):
            conn.writer.transport.abort()
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def tasks(self) -> set[asyncio.Task[Any]]:
        """The server's own tasks (to tell them from tasks leaked by a client)."""
        return set(self._tasks)

    # ---- what tests set and read ----------------------------------------------------

    def push(self, *scenarios: Scenario) -> None:
        """Answer the next completion requests with these, one each, in order."""
        self.scenarios.extend(scenarios)

    @property
    def completion_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path in COMPLETION_PATHS]

    async def wait_until(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked on every change of state)."""
        async with asyncio.timeout(within):
            while not predicate():
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _connection_closed(self, conn: _Connection) -> None:
        self.open_connections -= 1
        self._notify()

    # ---- serving --------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        assert me is not None
        self._tasks.add(me)
        self.connections_opened += 1
        self.open_connections += 1
        conn = _Connection(self, self.connections_opened, reader, writer)
        conn.task = me
        self._connections.add(conn)
        pump = asyncio.create_task(conn.pump())
        self._tasks.add(pump)
        self._notify()
        try:
            await self._serve(conn)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # the client went away (or the server is shutting down)
        except Exception as exc:  # a bug in this server: make the test see it
            self.errors.append(exc)
        finally:
            if conn.current is not None:
                conn.current.finished.set()
            conn.task = None  # the pump must not cancel this task while it cleans up
            conn.mark_closed("server")
            writer.transport.abort()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            self._connections.discard(conn)
            self._tasks.discard(pump)
            self._tasks.discard(me)
            self._notify()

    async def _serve(self, conn: _Connection) -> None:
        while conn.closed_by is None:
            parsed = await conn.read_request()
            if parsed is None:
                return
            method, path, headers, raw = parsed
            body: Any = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
            req = RecordedRequest(method, path, headers, raw, body, conn.id)
            conn.current = req
            self.requests.append(req)
            self._notify()
            exchange = Exchange(conn, req)
            try:
                await self._route(exchange)
            finally:
                req.finished.set()
                self._notify()

    async def _route(self, ex: Exchange) -> None:
        path = ex.request.path
        if path in COMPLETION_PATHS:
            if ex.request.method != "POST":
                await _json(ex, 405, _error_body("method not allowed", "BadRequestError", 405))
                return
            scenario = self.scenarios.popleft() if self.scenarios else self.scenario
            await scenario(ex)
        elif path == "/v1/models":
            await ex.respond(200, self.models_body)
        elif path == "/metrics":
            if self.metrics_text is None:
                await _json(ex, 404, _error_body("no metrics", "NotFoundError", 404))
            else:
                await ex.respond(
                    200, self.metrics_text.encode(), content_type="text/plain; version=0.0.4"
                )
        else:
            await _json(ex, 404, _error_body(f"no route {path}", "NotFoundError", 404))


# ---- response bodies ------------------------------------------------------------------


def _reason(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def _error_body(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"error": {"object": "error", "message": message, "type": kind, "code": code}}


async def _json(ex: Exchange, code: int, obj: Any, headers: Sequence[tuple[str, str]] = ()) -> None:
    await ex.respond(code, json.dumps(obj).encode(), headers)


def expected_logprob(i: int) -> float:
    """The log-probability the server reports for the ``i``-th generated token."""
    return -(i + 1) / 4


def expected_top(token: str, i: int, k: int) -> list[tuple[str, float]]:
    """The ``k`` most likely tokens at position ``i`` (the chosen ``token`` first)."""
    lp = expected_logprob(i)
    return [(token, lp), *((f"{token}#{j}", lp - j) for j in range(1, k))][:k]


def _chat_logprobs(token: str, i: int, k: int) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": token,
                "logprob": expected_logprob(i),
                "bytes": list(token.encode()),
                "top_logprobs": [{"token": t, "logprob": v} for t, v in expected_top(token, i, k)],
            }
        ]
    }


def _completion_logprobs(token: str, i: int, k: int, offset: int) -> dict[str, Any]:
    # vLLM's legacy format: the chosen token plus k alternatives (k + 1 entries),
    # here deliberately in increasing order of likelihood.
    entries = expected_top(token, i, k + 1)
    return {
        "tokens": [token],
        "token_logprobs": [expected_logprob(i)],
        "top_logprobs": [dict(reversed(entries))],
        "text_offset": [offset],
    }


def _top_k(req: RecordedRequest) -> int:
    body = req.body if isinstance(req.body, dict) else {}
    if req.is_chat:
        return int(body.get("top_logprobs") or 0)
    value = body.get("logprobs")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _wants_logprobs(req: RecordedRequest) -> bool:
    body = req.body if isinstance(req.body, dict) else {}
    if req.is_chat:
        return body.get("logprobs") is True
    return body.get("logprobs") is not None


def _choice(
    req: RecordedRequest, token: str | None, i: int, finish: str | None, offset: int
) -> dict[str, Any]:
    lp: dict[str, Any] | None = None
    if token is not None and _wants_logprobs(req):
        k = _top_k(req)
        lp = (
            _chat_logprobs(token, i, k)
            if req.is_chat
            else _completion_logprobs(token, i, k, offset)
        )
    if req.is_chat:
        delta: dict[str, Any] = {} if token is None else {"content": token}
        return {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}
    return {"index": 0, "text": token or "", "logprobs": lp, "finish_reason": finish}


def _chunk(req: RecordedRequest, choices: list[dict[str, Any]]) -> dict[str, Any]:
    body = req.body if isinstance(req.body, dict) else {}
    return {
        "id": f"cmpl-{id(req):x}",
        "object": "chat.completion.chunk" if req.is_chat else "text_completion",
        "created": 0,
        "model": body.get("model", "m"),
        "choices": choices,
    }


def _usage(n: int) -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": n,
        "total_tokens": PROMPT_TOKENS + n,
    }


async def _stream_tokens(
    ex: Exchange,
    tokens: Sequence[str],
    *,
    finish: str | None,
    role_chunk: bool = True,
    delay: float = 0.0,
) -> None:
    """The role-only first chunk (chat), one chunk per token, ``finish`` on the last."""
    req = ex.request
    if role_chunk and req.is_chat:
        first = _chunk(req, [{"index": 0, "delta": {"role": "assistant", "content": ""}}])
        first["choices"][0]["logprobs"] = None
        first["choices"][0]["finish_reason"] = None
        await ex.send_event(first)
    offset = 0
    for i, tok in enumerate(tokens):
        if delay and i:
            await asyncio.sleep(delay)
        last = i == len(tokens) - 1
        await ex.send_event(_chunk(req, [_choice(req, tok, i, finish if last else None, offset)]))
        offset += len(tok)
    if not tokens and finish is not None:
        await ex.send_event(_chunk(req, [_choice(req, None, 0, finish, 0)]))


# ---- scenarios ------------------------------------------------------------------------


def ok(
    tokens: Sequence[str] = ("Hel", "lo", " world"),
    *,
    finish: str | None = "stop",
    usage: bool = True,
    done: bool = True,
    delay: float = 0.0,
    close: bool = False,
) -> Scenario:
    """A correct answer: SSE when the request asks ``stream``, else one JSON body.

    ``finish=None`` with ``done=False`` is a stream cut short (cleanly terminated
    chunked body, no finish reason, no ``[DONE]``); ``close`` then also closes the
    connection cleanly; ``delay`` sleeps between tokens.
    """

    async def scenario(ex: Exchange) -> None:
        req = ex.request
        if not req.wants_stream:
            await _json(ex, 200, _whole(req, tokens, finish))
            return
        await ex.send_head(200)
        await _stream_tokens(ex, tokens, finish=finish, delay=delay)
        if usage:
            await ex.send_event(_chunk(req, []) | {"usage": _usage(len(tokens))})
        if done:
            await ex.send_event("[DONE]")
        await ex.end()
        if close:
            await ex.close()

    return scenario


def _whole(req: RecordedRequest, tokens: Sequence[str], finish: str | None) -> dict[str, Any]:
    text = "".join(tokens)
    lp: dict[str, Any] | None = None
    if _wants_logprobs(req):
        k = _top_k(req)
        if req.is_chat:
            lp = {"content": [_chat_logprobs(t, i, k)["content"][0] for i, t in enumerate(tokens)]}
        else:
            parts = [_completion_logprobs(t, i, k, 0) for i, t in enumerate(tokens)]
            lp = {key: [p[key][0] for p in parts] for key in ("tokens", "token_logprobs")}
            lp["top_logprobs"] = [p["top_logprobs"][0] for p in parts]
    body = req.body if isinstance(req.body, dict) else {}
    if req.is_chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": lp,
            "finish_reason": finish,
        }
    else:
        choice = {"index": 0, "text": text, "logprobs": lp, "finish_reason": finish}
    return {
        "id": "cmpl-whole",
        "object": "chat.completion" if req.is_chat else "text_completion",
        "created": 0,
        "model": body.get("model", "m"),
        "choices": [choice],
        "usage": _usage(len(tokens)),
    }


def raw_sse(*chunks: bytes, head_tokens: Sequence[str] = ()) -> Scenario:
    """A 200 SSE response: ``head_tokens`` as valid chunks, then these raw body bytes
    (e.g. ``b"garbage line\\n\\n"``), then the end of the chunked body."""

    async def scenario(ex: Exchange) -> None:
        await ex.send_head(200)
        await _stream_tokens(ex, head_tokens, finish=None)
        for c in chunks:
            await ex.send_chunk(c)
        await ex.end()

    return scenario


def error_event(
    error: dict[str, Any] | None = None, *, after: Sequence[str] = ("Hel",)
) -> Scenario:
    """Tokens ``after``, then ``data: {"error": {...}}`` (as vLLM sends), then [DONE]."""
    err = error or {"object": "error", "message": "engine died", "type": "InternalServerError"}

    async def scenario(ex: Exchange) -> None:
        await ex.send_head(200)
        await _stream_tokens(ex, after, finish=None)
        await ex.send_event({"error": err})
        await ex.send_event("[DONE]")
        await ex.end()

    return scenario


def status(
    code: int,
    body: Any = None,
    *,
    headers: Sequence[tuple[str, str]] = (),
    content_type: str | None = None,
) -> Scenario:
    """An error status. ``body``: a dict/list (sent as JSON), bytes or str (as is), or
    None (an OpenAI-style JSON error naming the status)."""
    if body is None:
        payload = json.dumps(_error_body(f"status {code}", _reason(code), code)).encode()
        ctype = content_type or "application/json"
    elif isinstance(body, bytes | str):
        payload = body.encode() if isinstance(body, str) else body
        ctype = content_type or "text/plain; charset=utf-8"
    else:
        payload = json.dumps(body).encode()
        ctype = content_type or "application/json"

    async def scenario(ex: Exchange) -> None:
        await ex.respond(code, payload, headers, content_type=ctype)

    return scenario


def reset(
    after: Sequence[str] = ("Hel", "lo"),
    *,
    proceed: asyncio.Event | None = None,
    rst: bool = True,
) -> Scenario:
    """Stream ``after`` tokens, wait for ``proceed`` (if given), then drop the
    connection abruptly: a TCP reset (``rst``) or a FIN in the middle of the body."""

    async def scenario(ex: Exchange) -> None:
        await ex.send_head(200)
        await _stream_tokens(ex, after, finish=None)
        if proceed is not None:
            await proceed.wait()
        ex.abort(rst=rst)

    return scenario


def stall_before_headers() -> Scenario:
    """Read the request, never answer; ends when the client disconnects."""

    async def scenario(ex: Exchange) -> None:
        await ex.wait_disconnect()

    return scenario


def stall_before_first_token() -> Scenario:
    """200 and SSE headers (and the chat role chunk), then nothing until the client
    disconnects."""

    async def scenario(ex: Exchange) -> None:
        await ex.send_head(200)
        await _stream_tokens(ex, (), finish=None)
        await ex.wait_disconnect()

    return scenario


def stall_after(tokens: Sequence[str] = ("Hel", "lo")) -> Scenario:
    """Stream ``tokens`` (no finish reason), then nothing until the client disconnects."""

    async def scenario(ex: Exchange) -> None:
        await ex.send_head(200)
        await _stream_tokens(ex, tokens, finish=None)
        await ex.wait_disconnect()

    return scenario


def stall_body(code: int = 200, length: int = 100) -> Scenario:
    """Headers promising a ``length``-byte JSON body that never comes (a stalled
    non-streaming answer, or an error status whose body stalls)."""

    async def scenario(ex: Exchange) -> None:
        await ex.send_head(code, content_type="application/json", content_length=length)
        await ex.wait_disconnect()

    return scenario


def echo_auth(code: int = 401) -> Scenario:
    """An error status whose message echoes the request's credentials back, as some
    servers do (``Incorrect API key provided: Bearer sk-...``)."""

    async def scenario(ex: Exchange) -> None:
        sent = ex.request.headers.get("authorization", "(none)")
        message = f"Incorrect API key provided: {sent}. Host {ex.request.headers.get('host')}"
        await _json(ex, code, _error_body(message, "AuthenticationError", code))

    return scenario


def big_body(
    code: int, size: int, *, piece: bytes = b"x" * 65536, content_type: str = "text/plain"
) -> Scenario:
    """A ``size``-byte body (``piece`` repeated), written piece by piece with a
    Content-Length, so a client that stops reading is noticed (``bytes_written``)."""

    async def scenario(ex: Exchange) -> None:
        await ex.send_head(code, content_type=content_type, content_length=size)
        left = size
        while left > 0:
            part = piece[:left]
            await ex._write(part)
            left -= len(part)

    return scenario


def encoded(
    body: bytes,
    encoding: str,
    *,
    code: int = 200,
    content_type: str = "text/event-stream",
    piece: int = 16384,
) -> Scenario:
    """``body`` (already encoded) with ``Content-Encoding: encoding``, in chunks of
    ``piece`` bytes (a gzip bomb is a small ``body`` that decodes to a huge one)."""

    async def scenario(ex: Exchange) -> None:
        await ex.send_head(code, [("Content-Encoding", encoding)], content_type=content_type)
        for i in range(0, len(body), piece):
            await ex.send_chunk(body[i : i + piece])
        await ex.end()

    return scenario
