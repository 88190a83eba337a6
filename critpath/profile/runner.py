"""The ``Profiler``: sends a plan's requests to a server and builds its ``ServerProfile``.

Requests go to ``/v1/completions`` through critpath's own OpenAI-compatible adapter
(streamed, no retries, greedy by default), so the timings are what a critpath
application would see. Against vLLM (recognised by its ``/metrics``) requests carry
``ignore_eos``, so that every answer is exactly as long as asked, and ask for the
chosen token's logprob, so that every token is timed when it arrives, even one whose
text vLLM holds back (an incomplete UTF-8 sequence streams as an empty delta, which
random-weight models emit often). Each cell reads the
server's counters before and after and samples its gauges while it runs.

Bounds: at most ``plan.max_requests`` requests, none sent after ``plan.max_seconds``;
one still in flight then gets 10 more seconds. A failed request is recorded with its
error type and the profile goes on; a server that fails the calibration requests
stops it with that error.

Load from elsewhere on the machine comes in bursts; so that it falls on every cell
alike, the plan runs in ``plan.slices`` rounds, each with a slice of every cell: the
concurrency-1 cells of the sweeps interleaved (a request of each in turn), then the
others one after another (a cell's counters and gauges add up over its slices).
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Callable, Sequence

import httpx

from critpath._clock import now
from critpath.adapters.completion import complete
from critpath.adapters.openai_http import OpenAICompatible, Timeouts
from critpath.adapters.protocol import make_request
from critpath.errors import ConfigError, MalformedResponse, ModelError
from critpath.estimates import percentile
from critpath.profile.document import CellResult, Sample, ServerProfile
from critpath.profile.fit import fit_latency_profile
from critpath.profile.metrics import GaugeSampler, counter_deltas, is_vllm, read_metrics
from critpath.profile.plan import CellSpec, Phase, ProfilePlan
from critpath.profile.prompts import PromptMaker, TokenScale

__all__ = ["Profiler", "profile_server"]

_GRACE_S = 10.0
_INTERLEAVED = (Phase.PROMPT, Phase.OUTPUT, Phase.CONCURRENCY)


class _Budget:
    """Requests left and the time after which none is sent."""

    def __init__(self, requests: int, seconds: float) -> None:
        self.left = requests
        self.until = now() + seconds
        self.sent = 0
        self.stopped: str | None = None

    def take(self) -> bool:
        if self.left <= 0:
            self.stopped = self.stopped or "max_requests"
            return False
        if now() >= self.until:
            self.stopped = self.stopped or "max_seconds"
            return False
        self.left -= 1
        self.sent += 1
        return True

    def timeout(self) -> float:
        return max(0.5, self.until + _GRACE_S - now())


class Profiler:
    """Profiles ``model`` at ``base_url`` (``.../v1``) along ``plan``.

    ``on_request``: called after each request (a progress bar); ``nonce``: makes the
    prompts differ from any earlier run's (a fresh one by default, so a second profile
    of the same server does not hit the cache the first one filled).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        plan: ProfilePlan | None = None,
        *,
        api_key_env: str | None = None,
        on_request: Callable[[], None] | None = None,
        nonce: str | None = None,
        sample_interval: float = 0.1,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.plan = plan or ProfilePlan()
        self.api_key_env = api_key_env
        self.on_request = on_request
        self.nonce = secrets.token_hex(4) if nonce is None else nonce
        self.sample_interval = sample_interval

    @property
    def root(self) -> str:
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    async def run(self) -> ServerProfile:
        plan = self.plan
        start = now()
        budget = _Budget(plan.max_requests, plan.max_seconds)
        limits = httpx.Limits(max_connections=max(plan.concurrency) + 8)
        async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0),
                                     limits=limits) as client:  # fmt: skip
            llm = OpenAICompatible(
                self.base_url, self.model, api_key_env=self.api_key_env, retry=None,
                timeouts=Timeouts(first_token=60.0, idle=30.0, total=None), client=client,
            )  # fmt: skip
            metrics = await read_metrics(client, self.root, self.model)
            vllm = is_vllm(metrics)
            run = _Run(self, llm, client, budget, vllm, metrics is not None)
            scale = await run.calibrate()
            prompts = PromptMaker(plan.seed, scale, self.nonce)
            cells: list[CellResult] = []
            specs = plan.cells()
            texts = {s: [prompts.text(s.prompt_tokens, s.text) for _ in range(s.requests)]
                     for s in specs}  # fmt: skip
            single = [s for s in specs if s.phase in _INTERLEAVED and s.concurrency == 1]
            rest = [s for s in specs if s not in single]
            parts: dict[CellSpec, list[CellResult]] = {s: [] for s in specs}
            n = plan.slices
            for r in range(n):
                if single and not budget.stopped:
                    got = await run.interleaved(single, [texts[s][r::n] for s in single])
                    for part in got:
                        parts[part.spec].append(part)
                for spec in rest:
                    chunk = texts[spec][r::n]
                    if chunk and not budget.stopped:
                        parts[spec].append(await run.cell(spec, chunk))
            cells += [CellResult.merge(spec, got) for spec, got in parts.items() if got]
            cells.sort(key=lambda c: specs.index(c.spec))
            pre = plan.prefix_cells()
            if pre is not None and not budget.stopped:
                cold, warm = pre
                groups = range(plan.prefix_groups)
                shared = [prompts.shared_prefix(g, plan.prefix_tokens) for g in groups]
                cells.append(await run.cell(cold, [f"{s} {prompts.text(16)}" for s in shared]))
                warm_texts = [f"{s} {prompts.text(16)}" for s in shared
                              for _ in range(plan.prefix_warm)]  # fmt: skip
                if not budget.stopped:
                    cells.append(await run.cell(warm, warm_texts))
        simulator, terms = fit_latency_profile(cells)
        return ServerProfile(
            model=self.model,
            base_url=self.base_url,
            server="vllm" if vllm else "openai-compatible",
            plan=plan,
            scale=scale,
            cells=tuple(cells),
            simulator=simulator,
            fit=terms,
            elapsed_s=now() - start,
            requests_sent=budget.sent,
            stopped=budget.stopped,
        )


class _Run:
    """One profile's state: the adapter, the budget, what the server supports."""

    def __init__(
        self,
        owner: Profiler,
        llm: OpenAICompatible,
        client: httpx.AsyncClient,
        budget: _Budget,
        vllm: bool,
        has_metrics: bool,
    ) -> None:
        self.owner, self.llm, self.client, self.budget = owner, llm, client, budget
        self.extra: dict[str, object] = {"ignore_eos": True} if vllm else {}
        self.logprobs = vllm
        self.has_metrics = has_metrics

    async def calibrate(self) -> TokenScale:
        """Two one-token requests: prompt tokens the server counts per word."""
        maker = PromptMaker(self.owner.plan.seed, nonce=self.owner.nonce + "-calibrate")
        counted: list[tuple[int, int]] = []
        for words in PromptMaker.calibration_words():
            if not self.budget.take():
                raise ConfigError("the profile's bounds leave no room for its calibration")
            req = make_request(prompt=maker.random_words(words), max_tokens=1,
                               temperature=self.owner.plan.temperature,
                               extra_body=self.extra, timeout=self.budget.timeout())  # fmt: skip
            c = await complete(self.llm, req)
            if c.usage is None:
                return TokenScale()  # the server does not count: one token a word
            counted.append((words, c.usage.prompt_tokens))
        (w0, t0), (w1, t1) = counted
        per_word = (t1 - t0) / (w1 - w0)
        if not per_word > 0:
            raise MalformedResponse(f"the server counted {t0} and {t1} prompt tokens for "
                                    f"{w0} and {w1} words")  # fmt: skip
        return TokenScale(intercept=t0 - per_word * w0, per_word=per_word)

    async def one(self, text: str, output_tokens: int, t0: float) -> Sample:
        start = now()
        req = make_request(prompt=text, max_tokens=output_tokens, logprobs=self.logprobs,
                           temperature=self.owner.plan.temperature, extra_body=self.extra,
                           timeout=self.budget.timeout())  # fmt: skip
        try:
            c = await complete(self.llm, req)
        except ModelError as exc:
            return Sample(start - t0, now() - start, None, None, None, 0, error=type(exc).__name__)
        t = c.timings
        gaps = t.gaps
        return Sample(
            start=start - t0,
            e2e=t.e2e,
            ttft=t.ttft,
            tpot=t.tpot,
            prompt_tokens=c.usage.prompt_tokens if c.usage is not None else None,
            output_tokens=c.completion_tokens,
            itl_p50=percentile(gaps, 0.5) if gaps else None,
            itl_p90=percentile(gaps, 0.9) if gaps else None,
        )

    async def interleaved(
        self, specs: Sequence[CellSpec], texts: Sequence[Sequence[str]]
    ) -> list[CellResult]:
        """Concurrency-1 cells in rounds, one request of each in turn, so that a burst of
        load on the server (or the machine) falls on every cell alike. Their counters
        are not kept apart (the rounds mix them); a cell's wall time is the sum of its
        requests' times."""
        samples: list[list[Sample]] = [[] for _ in specs]
        t0 = now()
        for i in range(max(len(t) for t in texts)):
            for k, spec in enumerate(specs):
                if i >= len(texts[k]) or not self.budget.take():
                    continue
                samples[k].append(await self.one(texts[k][i], spec.output_tokens, t0))
                if self.owner.on_request is not None:
                    self.owner.on_request()
        return [
            CellResult(spec=spec, samples=tuple(got), wall_s=math.fsum(s.e2e for s in got),
                       complete=len(got) == len(texts[k]))
            for k, (spec, got) in enumerate(zip(specs, samples, strict=True))
        ]  # fmt: skip

    async def cell(self, spec: CellSpec, texts: Sequence[str]) -> CellResult:
        """Run one cell: ``spec.concurrency`` closed-loop clients share ``texts``."""
        before = await read_metrics(self.client, self.owner.root, self.owner.model) \
            if self.has_metrics else None  # fmt: skip
        queue = iter(texts)
        samples: list[Sample] = []
        sent = 0
        t0 = now()

        async def client_loop() -> None:
            nonlocal sent
            while True:
                text = next(queue, None)
                if text is None or not self.budget.take():
                    return
                sent += 1
                samples.append(await self.one(text, spec.output_tokens, t0))
                if self.owner.on_request is not None:
                    self.owner.on_request()

        sampler = GaugeSampler(self.client, self.owner.root, self.owner.model,
                               self.owner.sample_interval, enabled=self.has_metrics)  # fmt: skip
        async with sampler, asyncio.TaskGroup() as tg:
            for _ in range(spec.concurrency):
                tg.create_task(client_loop())
        wall = max((s.start + s.e2e for s in samples), default=0.0)
        after = await read_metrics(self.client, self.owner.root, self.owner.model) \
            if self.has_metrics else None  # fmt: skip
        samples.sort(key=lambda s: s.start)
        return CellResult(
            spec=spec,
            samples=tuple(samples),
            wall_s=wall if math.isfinite(wall) else 0.0,
            counters=counter_deltas(before, after),
            gauges=sampler.summary(),
            complete=sent == len(texts),
        )


async def profile_server(
    base_url: str, model: str, plan: ProfilePlan | None = None, **options: object
) -> ServerProfile:
    """``Profiler(base_url, model, plan, **options).run()``."""
    return await Profiler(base_url, model, plan, **options).run()  # type: ignore[arg-type]

