"""What a load test sends requests to.

A ``Target`` is an async callable: ``await target(i)`` makes request ``i`` and returns
its time to first token (seconds, or ``None``), raising on failure. The runner times
the whole request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from critpath.adapters.protocol import Model, ModelRequest
from critpath.errors import ConfigError
from critpath.serve.net import check_host
from critpath.strategies.evaluate import ask

__all__ = ["ChatTarget", "OpenAITarget", "StrategyTarget", "Target", "loopback_url"]


class Target(Protocol):
    name: str

    async def __call__(self, i: int) -> float | None: ...


def loopback_url(url: str) -> str:
    """``url`` if it is http(s) on a loopback host; else ``ConfigError`` (load tests
    stay on this machine)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"not an http(s) URL: {url!r}")
    try:
        check_host(parts.hostname)
    except ConfigError as exc:
        raise ConfigError(
            f"load tests stay on loopback: {parts.hostname!r} is not a loopback address"
        ) from exc
    return url


class StrategyTarget:
    """A model or strategy in process; request ``i`` asks ``requests[i % n]``."""

    def __init__(self, name: str, runnable: Model, requests: list[ModelRequest]) -> None:
        if not requests:
            raise ConfigError("a StrategyTarget needs requests to send")
        self.name = name
        self.runnable = runnable
        self.requests = requests

    async def __call__(self, i: int) -> float | None:
        outcome = await ask(self.runnable, self.requests[i % len(self.requests)], None)
        if outcome.error is not None:
            raise RuntimeError(outcome.error)
        return outcome.ttft


async def _sse_data(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    event = "message"
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, line[6:]
            event = "message"


class OpenAITarget:
    """A streamed ``/v1/chat/completions`` request; TTFT at the first content."""

    def __init__(self, url: str, model: str, client: httpx.AsyncClient,
                 prompts: list[str], max_tokens: int = 64) -> None:  # fmt: skip
        self.url = loopback_url(url)
        self.name = f"{model} @ {url}"
        self.model = model
        self.client = client
        self.prompts = prompts or ["Hello"]
        self.max_tokens = max_tokens

    async def __call__(self, i: int) -> float | None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        prompt = self.prompts[i % len(self.prompts)]
        body = {
            "model": self.model,
            "stream": True,
            "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": prompt}],
        }
        ttft = None
        async with self.client.stream("POST", self.url, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
            async for _, data in _sse_data(r):
                if data == "[DONE]":
                    return ttft
                chunk = json.loads(data)
                if "error" in chunk:
                    raise RuntimeError(str(chunk["error"])[:200])
                choices = chunk.get("choices") or []
                if ttft is None and choices and (choices[0].get("delta") or {}).get("content"):
                    ttft = loop.time() - start
        raise RuntimeError("the stream ended without [DONE]")


class ChatTarget:
    """The example chat service's ``POST /chat`` (SSE); TTFT at the first draft event,
    done at ``final``."""

    def __init__(self, url: str, client: httpx.AsyncClient, prompts: list[str]) -> None:
        self.url = loopback_url(url)
        self.name = f"chat @ {url}"
        self.client = client
        self.prompts = prompts or ["Hello"]

    async def __call__(self, i: int) -> float | None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        ttft = None
        body = {"message": self.prompts[i % len(self.prompts)]}
        async with self.client.stream("POST", self.url, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
            async for event, data in _sse_data(r):
                if event == "draft" and ttft is None:
                    ttft = loop.time() - start
                elif event == "error":
                    raise RuntimeError(json.loads(data).get("message", "error"))
                elif event == "final":
                    return ttft
        raise RuntimeError("the stream ended without a final event")
