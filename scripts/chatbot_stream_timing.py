"""When a streaming ``openai`` client gets the chat service's first and last tokens.

Serves ``examples/chatbot`` (the embedded simulated fleet, real time) on loopback and
asks ``/v1/chat/completions`` with ``stream=True`` ``N`` times, one after another;
prints the medians of the first and the last content chunk's arrival and their ratio.
Run from a checkout's root: ``PYTHONPATH=$PWD python scripts/chatbot_stream_timing.py 10``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys

import openai

from critpath.serve.asgi import AppServer
from examples.chatbot import ChatConfig, create_app

__all__ = ["measure"]


async def measure(n: int) -> tuple[float, float]:
    """Medians (seconds) of the first and the last content chunk over ``n`` requests."""
    firsts, lasts = [], []
    async with AppServer(create_app(ChatConfig())) as server:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        loop = asyncio.get_running_loop()
        try:
            for i in range(n):
                t0 = loop.time()
                stream = await client.chat.completions.create(
                    model="critpath-refine",
                    stream=True,
                    messages=[{"role": "user", "content": f"Why does my deploy fail? ({i})"}],
                )
                at = [
                    loop.time() - t0
                    async for c in stream
                    if c.choices and c.choices[0].delta.content
                ]
                firsts.append(at[0])
                lasts.append(at[-1])
        finally:
            await client.close()
    return statistics.median(firsts), statistics.median(lasts)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    first, last = asyncio.run(measure(n))
    print(f"n={n} first chunk p50 {first * 1000:.0f} ms, last chunk p50 {last * 1000:.0f} ms, "
          f"first/last {first / last:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
