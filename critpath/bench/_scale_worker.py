"""One OS process of ``critpath bench scale`` and the shared-limiter tests.

``python -m critpath.bench._scale_worker REDIS_URL BASE_URL LIMIT RUNS`` runs ``RUNS``
concurrent runs of a one-step graph whose step calls the ``small`` model at
``BASE_URL`` on the resource ``"llm"``, all sharing one ``SharedLimiter`` of ``LIMIT``
named ``"sim"``; it prints one JSON line: runs that succeeded and the limiter's
statistics.
"""

from __future__ import annotations

import asyncio
import json
import sys

from critpath import Graph
from critpath.adapters import OpenAICompatible, complete, make_request
from critpath.serve.redis_limiter import SharedLimiter

__all__ = ["main"]


async def main(redis_url: str, base_url: str, limit: int, runs: int) -> None:
    model = OpenAICompatible(base_url, "small")
    g = Graph("worker", inputs=["prompt"], output="call")

    @g.step(resource="llm")
    async def call(prompt: str) -> str:
        return (await complete(model, make_request(prompt=prompt, max_tokens=8))).text

    async with SharedLimiter(redis_url, "sim", {"llm": limit}) as limiter:
        results = await asyncio.gather(
            *(g.run({"prompt": f"q{i}"}, limiter=limiter) for i in range(runs)),
            return_exceptions=True,
        )
        stats = limiter.statistics()
    await model.aclose()
    ok = sum(1 for r in results if not isinstance(r, BaseException))
    print(json.dumps({"ok": ok, "stats": stats}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
