"""A scripted ``Model`` for tests: it answers once its ``gate`` is set and records what
became of each call (finished, failed, cancelled, closed), so tests order events with
gates instead of sleeps and can assert a stream was cancelled, not merely ignored."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from critpath.adapters import Chunk, EndpointStats, ModelRequest, TokenLogprob

__all__ = ["Call", "Scripted"]


@dataclass
class Call:
    request: ModelRequest
    started_at: float
    outcome: str = "running"  # finished | failed | cancelled | closed
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class Scripted:
    """Streams ``words`` once ``gate`` is set (after an empty "accepted" chunk).

    ``fail`` is raised before the first word (or after it, with ``fail_mid_stream``);
    ``ttft`` pre-teaches the stats a learned TTFT; ``pause`` waits after the gate;
    ``confidence``: each chunk carries ``log(confidence)`` when logprobs are asked for.
    """

    def __init__(
        self,
        name: str = "m",
        *,
        words: tuple[str, ...] = ("Hello", " hedged", " world", "."),
        fail: Exception | None = None,
        fail_mid_stream: bool = False,
        ttft: float | None = None,
        open_gate: bool = False,
        pause: float = 0.0,
        confidence: float | None = None,
    ) -> None:
        self._name = name
        self.words = words
        self.fail = fail
        self.fail_mid_stream = fail_mid_stream
        self.pause = pause
        self.confidence = confidence
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()
        self.started = asyncio.Event()
        self.calls: list[Call] = []
        self.stats = EndpointStats()
        if ttft is not None:
            for _ in range(30):
                self.stats.ttft.observe(ttft)

    @property
    def name(self) -> str:
        return self._name

    @property
    def outcome(self) -> str:
        """What became of the last call (``"not called"`` before any)."""
        return self.calls[-1].outcome if self.calls else "not called"

    def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        return self._stream(request)

    async def _stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        call = Call(request, asyncio.get_running_loop().time())
        self.calls.append(call)
        self.started.set()
        try:
            yield Chunk()  # accepted
            await self.gate.wait()
            if self.pause:
                await asyncio.sleep(self.pause)
            if self.fail is not None and not self.fail_mid_stream:
                raise self.fail
            for i, word in enumerate(self.words):
                if i == 1 and self.fail is not None:
                    raise self.fail
                last = i == len(self.words) - 1
                lps = None
                if request.logprobs and self.confidence is not None:
                    lps = (TokenLogprob(word, math.log(self.confidence)),)
                yield Chunk(
                    text=word, tokens=1, logprobs=lps, finish_reason="stop" if last else None
                )
            call.outcome = "finished"
        except asyncio.CancelledError:
            call.outcome = "cancelled"
            raise
        except GeneratorExit:
            call.outcome = "closed"
            raise
        except Exception:
            call.outcome = "failed"
            raise
        finally:
            call.ended.set()
