"""A simulated model server that behaves like LLM serving, not like ``sleep(0.1)``.

Each ``SimulatedModel`` is one replica with its own "GPU": at most
``profile.max_num_seqs`` sequences decode at once; further requests wait in a queue
ordered by ``priority`` (lower first), then arrival — as vLLM's priority scheduler
does. Time to first token grows with the prompt and the queue; each token's time
grows with the number of sequences running (continuous batching). A few requests are
stragglers (all their times multiplied), and faults can be injected: errors before
the first token, connection resets and stalls mid-stream.

Random draws (spread, stragglers, faults) are deterministic under ``seed``: they
depend on the seed, the replica and the request's ``request_id`` (or its arrival
number), never on timing. Token times are scheduled against a virtual clock (each
token's due time is the previous one's plus its duration), so timer granularity does
not accumulate into drift even at small ``time_scale``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from critpath.adapters.prometheus import ServerLoad
from critpath.adapters.protocol import Chunk, ModelRequest, TokenLogprob, Usage
from critpath.adapters.sim.answers import Answer, AnswerSource, answer_text, stable_rng
from critpath.adapters.sim.prefix_cache import PrefixCache, prompt_text
from critpath.adapters.sim.prefix_cache import answer_text as as_assistant
from critpath.adapters.sim.profiles import PROFILES, LatencyProfile
from critpath.adapters.sim.tools import CallTools, ToolScript, default_turn, plan_pieces
from critpath.adapters.stats import EndpointStats
from critpath.adapters.tools import ToolCallDelta
from critpath.errors import ConfigError, ModelConnectionError, ModelError, ServerError
from critpath.orchestrator.context import current_step

__all__ = ["SimulatedModel", "SlotScheduler"]


@dataclass(order=True, slots=True)
class _Waiter:
    priority: int
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class SlotScheduler:
    """``slots`` sequences at once; waiters served by (priority, arrival)."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ConfigError("slots must be >= 1")
        self.slots = slots
        self.running = 0
        self._heap: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._heap if not w.future.done())

    async def acquire(self, priority: int) -> None:
        if self.running < self.slots and not self._heap:
            self.running += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, _Waiter(priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted just as we were cancelled: hand it on
            else:
                self._heap = [w for w in self._heap if w.future is not fut]
                heapq.heapify(self._heap)
            raise

    def release(self) -> None:
        self.running -= 1
        while self._heap and self.running < self.slots:
            w = heapq.heappop(self._heap)
            if not w.future.done():
                self.running += 1
                w.future.set_result(None)


class SimulatedModel:
    """One replica of a simulated model, behind the ``Model`` protocol.

    ``profile``: a ``LatencyProfile`` or the name of one (``"7b"``, ``"small"``...);
    ``answers``: where answers come from (default: a generic 40-token answer);
    ``time_scale``: multiplies every duration (0.05 makes a 0.4 s TTFT take 20 ms);
    ``stream_interval``: tokens per streamed chunk after the first token (as servers
    that batch their stream output do; fewer chunks make long simulations cheaper,
    while TTFT and end-to-end times stay exact); ``draw_by``: ``"arrival"`` (a
    request's random draws depend on its id and its arrival number, so a retry is a
    fresh draw) or ``"request"`` (on its id only: the same request id always takes the
    same time, whatever else the replica served — for comparing arms of a benchmark);
    ``prefix_cache``: the replica's prefix cache (``PrefixCache``; ``None``, the
    default: none), whose cached tokens skip their share of the prefill.
    ``tool_script``: what the model says in conversations with tools or a
    ``response_format`` (``sim.tools``; default: ``default_turn``).
    """

    def __init__(
        self,
        name: str,
        *,
        profile: LatencyProfile | str = "7b",
        answers: AnswerSource | None = None,
        seed: int = 0,
        time_scale: float = 1.0,
        replica: str = "0",
        stream_interval: int = 1,
        draw_by: str = "arrival",
        prefix_cache: PrefixCache | None = None,
        tool_script: ToolScript | None = None,
    ) -> None:
        if isinstance(profile, str):
            if profile not in PROFILES:
                raise ConfigError(f"unknown profile {profile!r}; known: {sorted(PROFILES)}")
            profile = PROFILES[profile]
        if not time_scale > 0:
            raise ConfigError("time_scale must be > 0")
        if stream_interval < 1:
            raise ConfigError("stream_interval must be >= 1")
        if draw_by not in ("arrival", "request"):
            raise ConfigError("draw_by must be 'arrival' or 'request'")
        self._name = name
        self.profile = profile
        self.answers = answers
        self.seed = seed
        self.time_scale = time_scale
        self.replica = replica
        self.stream_interval = stream_interval
        self.draw_by = draw_by
        self.prefix_cache = prefix_cache
        self.tool_script = tool_script
        self.scheduler = SlotScheduler(profile.max_num_seqs)
        self.stats = EndpointStats()
        self._arrivals = itertools.count()
        self.aborted = 0
        """Requests whose reader went away before the answer was complete."""

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"SimulatedModel({self._name!r}, replica={self.replica!r})"

    async def load(self) -> ServerLoad:
        s = self.scheduler
        return ServerLoad(float(s.running), float(s.waiting), s.running / s.slots)

    def answer_for(self, request: ModelRequest) -> Answer:
        if self.answers is None:
            return Answer(answer_text(None, 40, "A simulated answer."), 40, None, 0.5)
        return self.answers.answer(self._name, request)

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        loop = asyncio.get_running_loop()
        p = self.profile
        arrival = next(self._arrivals)
        # Draws depend on the request and its arrival number at this replica, so a retry
        # of the same request id is a fresh draw (and still deterministic in sequence).
        key = arrival if self.draw_by == "arrival" or request.request_id is None else -1
        rng = stable_rng(self.seed, self._name, self.replica, request.request_id, key)
        turn = None
        if request.tools or request.response_format is not None:
            turn = self.tool_script.turn(request) if self.tool_script is not None else None
            if turn is None:
                turn = default_turn(request, stable_rng(self.seed, self._name, "tools", key))
        pieces: list[str | ToolCallDelta]
        if turn is None:
            answer = self.answer_for(request)
            pieces = list(_split(answer.text, answer.tokens))
        else:
            pieces = plan_pieces(turn, request)
            answer = Answer("", len(pieces), None, 1.0)
        calling = isinstance(turn, CallTools)
        truncated = len(pieces) > request.max_tokens
        pieces = pieces[: request.max_tokens]
        prompt_tokens = max(1, _prompt_chars(request) // 4)
        slow = p.straggler_x if rng.random() < p.straggler_p else 1.0
        fault = rng.random()
        error = fault < p.error_p
        reset_at = rng.randrange(len(pieces)) if p.error_p <= fault < p.error_p + p.reset_p else -1
        stall_at = (
            rng.randrange(len(pieces))
            if p.error_p + p.reset_p <= fault < p.error_p + p.reset_p + p.stall_p
            else -1
        )
        priority = request.priority
        if priority is None:
            step = current_step()
            priority = step.priority if step is not None else 0
        scale = self.time_scale * slow
        token_scale = scale * (rng.lognormvariate(0.0, p.tpot_request_sigma)
                               if p.tpot_request_sigma else 1.0)  # fmt: skip
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        clock = self.stats.clock()
        complete = failed = False
        try:
            await self.scheduler.acquire(priority)
            try:
                clock.accepted()
                yield Chunk()
                prefill = prompt_tokens
                if self.prefix_cache is not None:
                    prompt = prompt_text(request)
                    prefill -= min(prompt_tokens, self.prefix_cache.lookup(prompt, prompt_tokens))
                due = loop.time() + scale * (p.queue_s + p.prefill_per_token_s * prefill) * (
                    rng.lognormvariate(0.0, p.ttft_sigma)
                )
                if p.ttft_batch_slowdown:  # prefill shares its steps with the others' decoding
                    others = self.scheduler.running - 1
                    due += (due - loop.time()) * p.ttft_batch_slowdown * others
                await _sleep_until(loop, due)
                if error:
                    raise ServerError("simulated server error", model=self._name, status=500)
                interval = self.stream_interval
                buffered: list[str | ToolCallDelta] = []
                for i, piece in enumerate(pieces):
                    if i:
                        load = 1.0 + p.batch_slowdown * (self.scheduler.running - 1)
                        due += token_scale * p.tpot_s * load * rng.lognormvariate(0.0, p.tpot_sigma)
                    if i == reset_at:
                        await _sleep_until(loop, due)
                        raise ModelConnectionError("simulated connection reset", model=self._name)
                    if i == stall_at:
                        await _sleep_until(loop, due)
                        await asyncio.Event().wait()  # stalls until the reader gives up
                    buffered.append(piece)
                    last = i == len(pieces) - 1
                    if not (i == 0 or last or len(buffered) >= interval):
                        continue
                    await _sleep_until(loop, due)
                    sent, buffered = buffered, []
                    words = [p for p in sent if isinstance(p, str)]
                    n, text = len(sent), "".join(words)
                    clock.token(n)
                    finish = "tool_calls" if calling else "stop"
                    yield Chunk(
                        text=text,
                        tokens=n,
                        logprobs=_logprobs(words, answer) if request.logprobs else None,
                        finish_reason=("length" if truncated else finish) if last else None,
                        usage=Usage(prompt_tokens, len(pieces)) if last else None,
                        tool_calls=tuple(p for p in sent if not isinstance(p, str)),
                    )
                complete = True
                if self.prefix_cache is not None:  # the answer's blocks stay cached too
                    said = "".join(p for p in pieces if isinstance(p, str))
                    self.prefix_cache.insert(prompt + as_assistant(said))
            finally:
                self.scheduler.release()
            stats.record(clock.finish())
        except ModelError as exc:
            failed = True
            stats.record_error(exc)
            raise
        finally:
            stats.in_flight -= 1
            if not complete and not failed:
                self.aborted += 1


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    delay = when - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


def _prompt_chars(request: ModelRequest) -> int:
    if request.messages is not None:
        return sum(len(m.content) for m in request.messages)
    return len(request.prompt or "")


def _split(text: str, tokens: int) -> list[str]:
    """``text`` as ``tokens`` pieces that join back to it exactly (words, spread); the
    first piece is never empty (leading spaces go with the first word)."""
    body = text.lstrip(" ")
    if body != text and body:
        pieces = _split(body, tokens)
        return [text[: len(text) - len(body)] + pieces[0], *pieces[1:]]
    words = text.split(" ")
    tokens = max(1, tokens)
    if len(words) >= tokens:
        per, extra = divmod(len(words), tokens)
        out, i = [], 0
        for t in range(tokens):
            n = per + (1 if t < extra else 0)
            out.append(" ".join(words[i : i + n]))
            i += n
        return [piece if t == 0 else " " + piece for t, piece in enumerate(out)]
    # Fewer words than tokens: split the longest words into sub-word pieces.
    pieces = [w if t == 0 else " " + w for t, w in enumerate(words)]
    while len(pieces) < tokens:
        k = max(range(len(pieces)), key=lambda j: len(pieces[j]))
        if len(pieces[k]) < 2:
            pieces.append("")
            continue
        half = len(pieces[k]) // 2
        pieces[k : k + 1] = [pieces[k][:half], pieces[k][half:]]
    return pieces


def _logprobs(pieces: list[str], answer: Answer) -> tuple[TokenLogprob, ...]:
    """One per token: the answer letter's token carries the model's confidence; others
    look sure."""
    marker = None if answer.choice is None else f"({answer.choice})"
    sure = -0.05
    confident = math.log(max(answer.confidence, 1e-9))
    return tuple(
        TokenLogprob(piece, confident if marker is not None and marker in piece else sure)
        for piece in pieces
    )
