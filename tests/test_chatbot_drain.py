"""Graceful drain of the chat service: on SIGTERM it stops accepting, lets the answers
in flight finish within ``--drain`` seconds, cancels the rest, and exits.

The service runs as ``python -m examples.chatbot`` in a subprocess (a real SIGTERM to
a real uvicorn), on loopback, with the embedded simulated fleet.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@asynccontextmanager
async def service(
    drain: int, time_scale: float
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    port = free_port()
    env = {**os.environ, "CHATBOT_TIME_SCALE": str(time_scale), "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.chatbot", "--port", str(port), "--drain", str(drain),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as c:
            for _ in range(200):  # up to ~20 s for the interpreter to start
                try:
                    if (await c.get(url + "/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the chat service did not start")
        yield proc, url
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def events_of(response: httpx.Response, first: asyncio.Event) -> list[str]:
    names = []
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            names.append(line[7:])
            first.set()
    return names


async def test_sigterm_lets_the_answer_in_flight_finish_then_exits() -> None:
    async with service(drain=20, time_scale=1.0) as (proc, url), httpx.AsyncClient() as c:
        first = asyncio.Event()
        async with c.stream("POST", url + "/chat", json={"message": "drain me"}) as r:
            reading = asyncio.create_task(events_of(r, first))
            await asyncio.wait_for(first.wait(), 20)
            proc.send_signal(signal.SIGTERM)
            names = await asyncio.wait_for(reading, 30)
        assert names[-1] == "final"  # finished, not cut
        assert await asyncio.wait_for(proc.wait(), 30) in (
            0,
            -signal.SIGTERM,
        )  # uvicorn re-raises it
        with pytest.raises(httpx.TransportError):
            await c.get(url + "/healthz")


async def test_past_the_drain_period_answers_in_flight_are_cancelled() -> None:
    async with service(drain=1, time_scale=50.0) as (proc, url), httpx.AsyncClient() as c:
        first = asyncio.Event()
        async with c.stream("POST", url + "/chat", json={"message": "slow"}) as r:
            reading = asyncio.create_task(events_of(r, first))
            await asyncio.wait_for(first.wait(), 30)
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(httpx.TransportError):  # cut mid-answer
                await asyncio.wait_for(reading, 30)
        assert await asyncio.wait_for(proc.wait(), 30) in (
            0,
            -signal.SIGTERM,
        )  # uvicorn re-raises it
