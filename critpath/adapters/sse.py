"""An incremental, strict, bounded Server-Sent Events decoder (bytes in, ``data`` out).

OpenAI-compatible servers stream ``data: {json}`` events separated by blank lines and
end with ``data: [DONE]``. This decoder accepts the SSE fields (``data``, ``event``,
``id``, ``retry``) and comments, and raises ``MalformedResponse`` on any other line,
so a server speaking something else fails loudly at the adapter boundary.

Lines end with CRLF, LF or a lone CR, as the SSE specification allows (a CR that ends
what has arrived so far waits for the next byte, which may be its LF). ``feed`` looks
only at the bytes that arrived: a partial line is kept in a buffer that grows by
appending (never re-copied), and both it and an event's ``data`` are bounded —
``max_line`` and ``max_event`` bytes — so a server that never sends a newline, or one
endless event, fails with ``MalformedResponse`` instead of growing memory without end.
"""

from __future__ import annotations

import re

from critpath.errors import ConfigError, MalformedResponse

__all__ = ["DEFAULT_MAX_EVENT", "DEFAULT_MAX_LINE", "SSEDecoder"]

DEFAULT_MAX_LINE = 1 << 20  # 1 MiB: a chunk with top-20 logprobs is a few KiB
DEFAULT_MAX_EVENT = 4 << 20

_FIELDS = frozenset((b"event", b"id", b"retry"))
_EOL = re.compile(rb"\r\n|\r|\n")


class SSEDecoder:
    __slots__ = ("_cr", "_data", "_line", "max_event", "max_line", "model")

    def __init__(
        self,
        model: str | None = None,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_event: int = DEFAULT_MAX_EVENT,
    ) -> None:
        if max_line < 1 or max_event < 1:
            raise ConfigError("SSEDecoder limits must be >= 1 byte")
        self._line = bytearray()  # the start of a line whose end has not arrived
        self._cr = False  # the bytes so far ended with a CR (its LF may be next)
        self._data: bytearray | None = None
        self.model = model
        self.max_line = max_line
        self.max_event = max_event

    def feed(self, data: bytes) -> list[bytes]:
        """Decode what arrived; return the ``data`` of every event it completed."""
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._cr = True
        out: list[bytes] = []
        pos = 0
        for m in _EOL.finditer(data):
            piece = data[pos : m.start()]
            pos = m.end()
            if self._line:
                self._line += piece
                self._check_line(len(self._line))
                line = bytes(self._line)
                self._line.clear()
            else:
                self._check_line(len(piece))
                line = piece
            self._take(line, out)
        if pos < len(data):
            self._check_line(len(self._line) + len(data) - pos)
            self._line += data[pos:]
        return out

    def _check_line(self, size: int) -> None:
        if size > self.max_line:
            raise MalformedResponse(
                f"a server-sent event line longer than {self.max_line} bytes", model=self.model
            )

    def _take(self, line: bytes, out: list[bytes]) -> None:
        if not line:
            if self._data is not None:
                out.append(bytes(self._data))
                self._data = None
            return
        if line[0] == 58:  # ":" a comment (keep-alive)
            return
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":  # "data" alone is the field with an empty value
            if self._data is None:
                self._data = bytearray(value)
            else:
                self._data += b"\n"
                self._data += value
            if len(self._data) > self.max_event:
                raise MalformedResponse(
                    f"a server-sent event larger than {self.max_event} bytes", model=self.model
                )
        elif name not in _FIELDS:
            raise MalformedResponse(
                f"malformed server-sent event line: {line[:120]!r}", model=self.model
            )

    def close(self) -> list[bytes]:
        """The stream ended: flush an event that was complete but for its blank line."""
        if self._cr or self._line or self._data is not None:
            return self.feed(b"\n\n")
        return []
