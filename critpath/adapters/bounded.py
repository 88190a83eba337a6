"""Bounded reading of HTTP response bodies: size limits and incremental decoding.

A server the adapter talks to may be broken or hostile: a gigabyte error page, a
stream line that never ends, a gzip bomb (a few MB on the wire, hundreds of MB
decoded). ``ResponseLimits`` says how much the adapter accepts; ``decoded`` turns the
raw body into decoded pieces of at most ``PIECE`` bytes, decompressing incrementally
(``zlib``'s ``max_length``) and letting the event loop run between pieces, so a bomb
neither takes memory beyond the limits nor freezes the loop (the first-token and idle
timers still fire); ``read_limited`` collects a body up to a limit.

Content encodings: ``identity``, ``gzip`` and ``deflate`` (the adapter advertises
only those); any other is a ``MalformedResponse``.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from critpath.adapters.sse import DEFAULT_MAX_EVENT, DEFAULT_MAX_LINE
from critpath.errors import ConfigError, MalformedResponse

__all__ = ["ACCEPT_ENCODING", "PIECE", "ResponseLimits", "decoded", "read_limited"]

PIECE = 64 * 1024
"""The most bytes decoded at a time before the event loop gets a turn."""

ACCEPT_ENCODING = "gzip, deflate"


@dataclass(frozen=True, slots=True)
class ResponseLimits:
    """Bytes (decoded) the adapter accepts from a server; past them: ``MalformedResponse``.

    ``max_line`` / ``max_event``: one SSE line / one event's data; ``max_body``: a whole
    (non-streamed) answer; ``max_stream``: everything a stream carries; ``max_error_body``:
    how much of an error status's body is read (the rest is dropped with the
    connection; the error keeps its typed status).
    """

    max_line: int = DEFAULT_MAX_LINE
    max_event: int = DEFAULT_MAX_EVENT
    max_body: int = 32 << 20
    max_stream: int = 256 << 20
    max_error_body: int = 64 << 10

    def __post_init__(self) -> None:
        for name in ("max_line", "max_event", "max_body", "max_stream", "max_error_body"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"ResponseLimits.{name} must be an int >= 1, got {value!r}")


class _Inflater:
    """Incremental gzip / deflate with bounded output per call."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._raw_fallback = encoding == "deflate"  # zlib-wrapped, else raw (as httpx does)
        wbits = zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS
        self._d = zlib.decompressobj(wbits)
        self._started = False

    def piece(self, data: bytes) -> bytes:
        """Decode at most ``PIECE`` bytes from ``data``; the input left over is ``tail``."""
        try:
            out = self._d.decompress(data, PIECE)
        except zlib.error:
            if self._raw_fallback and not self._started:
                self._raw_fallback = False
                self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.piece(data)
            raise
        self._started = True
        return out

    @property
    def tail(self) -> bytes:
        return self._d.unconsumed_tail

    def flush(self) -> bytes:
        return self._d.flush()


async def decoded(
    raw: AsyncIterator[bytes], encoding: str | None, *, model: str | None = None
) -> AsyncGenerator[bytes, None]:
    """The body's bytes, decoded per ``encoding`` (a Content-Encoding header value)."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        async for data in raw:
            yield data
        return
    if enc == "x-gzip":
        enc = "gzip"
    if enc not in ("gzip", "deflate"):
        raise MalformedResponse(f"unsupported content encoding {enc[:40]!r}", model=model)
    inflater = _Inflater(enc)
    try:
        async for data in raw:
            pending = data
            while True:
                piece = inflater.piece(pending)
                if piece:
                    yield piece
                pending = inflater.tail
                if not pending and len(piece) < PIECE:
                    break
                await asyncio.sleep(0)  # a bomb must not hold the loop
        tail = inflater.flush()
    except zlib.error as exc:
        raise MalformedResponse(f"a corrupt {enc} body: {exc}", model=model) from None
    if tail:
        yield tail


async def read_limited(
    pieces: AsyncIterator[bytes], limit: int, *, model: str | None = None, truncate: bool = False
) -> bytes:
    """Collect ``pieces`` up to ``limit`` bytes; past it, ``MalformedResponse``, or
    (``truncate``) the first ``limit`` bytes and stop reading."""
    body = bytearray()
    async for piece in pieces:
        room = limit - len(body)
        if len(piece) > room:
            if truncate:
                body += piece[:room]
                break
            raise MalformedResponse(f"a response body larger than {limit} bytes", model=model)
        body += piece
    return bytes(body)
