"""An instant OpenAI-compatible SSE server for client-overhead benchmarks.

``python -m critpath.bench._sse_server PORT [CHUNKS]`` (started by ``critpath bench
adapter``) serves ``/v1/chat/completions`` and
``/v1/completions`` on 127.0.0.1, streaming CHUNKS content chunks (then usage and
``[DONE]``) as fast as the socket takes them, so what a client measures is its own
cost. HTTP/1.1 keep-alive, chunked transfer encoding. Runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

__all__ = ["main"]


def _events(chat: bool, chunks: int) -> bytes:
    out = []
    for i in range(chunks):
        if chat:
            body = {
                "id": "b",
                "object": "chat.completion.chunk",
                "model": "bench",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": f"tok{i} "},
                        "finish_reason": "length" if i == chunks - 1 else None,
                    }
                ],
            }
        else:
            body = {
                "id": "b",
                "object": "text_completion",
                "model": "bench",
                "choices": [
                    {
                        "index": 0,
                        "text": f"tok{i} ",
                        "finish_reason": "length" if i == chunks - 1 else None,
                    }
                ],
            }
        out.append(b"data: " + json.dumps(body).encode() + b"\n\n")
    usage = {
        "id": "b",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": chunks, "total_tokens": chunks + 3},
    }
    out.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)  # fmt: skip


def _chunked(payloads: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in payloads) + b"0\r\n\r\n"


async def main(port: int, chunks: int) -> None:
    bodies = {
        chat: _chunked([e + b"\n\n" for e in _events(chat, chunks).split(b"\n\n") if e])
        for chat in (True, False)
    }
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in request.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                chat = b"/chat/completions" in request.split(b"\r\n", 1)[0]
                writer.write(head + bodies[chat])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 64))
