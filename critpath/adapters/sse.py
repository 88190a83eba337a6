"""An incremental, strict Server-Sent Events decoder (bytes in, ``data`` payloads out).

OpenAI-compatible servers stream ``data: {json}`` events separated by blank lines and
end with ``data: [DONE]``. This decoder accepts the SSE fields (``data``, ``event``,
``id``, ``retry``) and comments, and raises ``MalformedResponse`` on any other line,
so a server speaking something else fails loudly at the adapter boundary. It is a
few lines of code with no allocation per byte: ``feed`` splits what arrived on
newlines and returns the events it completed.
"""

from __future__ import annotations

from critpath.errors import MalformedResponse

__all__ = ["SSEDecoder"]

_FIELDS = frozenset((b"event", b"id", b"retry"))


class SSEDecoder:
    __slots__ = ("_buf", "_data", "model")

    def __init__(self, model: str | None = None) -> None:
        self._buf = b""
        self._data: bytes | None = None
        self.model = model

    def feed(self, data: bytes) -> list[bytes]:
        """Decode what arrived; return the ``data`` of every event it completed."""
        buf = self._buf + data if self._buf else data
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        out: list[bytes] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data is not None:
                    out.append(self._data)
                    self._data = None
                continue
            if line[0] == 58:  # ":" a comment (keep-alive)
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":  # "data" alone is the field with an empty value
                self._data = value if self._data is None else self._data + b"\n" + value
            elif name in _FIELDS:
                continue
            else:
                raise MalformedResponse(
                    f"malformed server-sent event line: {line[:120]!r}", model=self.model
                )
        return out

    def close(self) -> list[bytes]:
        """The stream ended: flush an event that was complete but for its blank line."""
        rest = self.feed(b"\n\n") if self._buf or self._data is not None else []
        return rest
