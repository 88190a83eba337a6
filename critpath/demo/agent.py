"""The demo's agent graph: a support assistant, over the demo's models.

``plan`` (the cheap model) lists the sources to search; ``search`` fans out over them
(tool calls of different speeds); ``read`` summarises every hit (the cheap model,
two at a time: the ``small`` resource); meanwhile ``intent`` classifies the question
with a cascade (cheap model, escalating to the strong one when unsure); ``answer`` is
fast-then-refine: the cheap model's draft streams at once (``ctx.emit``), the strong
model's revision follows. Model calls carry each step's critical-path priority.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

from critpath.adapters.completion import complete
from critpath.adapters.protocol import ModelRequest
from critpath.cascades.cascade import Cascade, Tier
from critpath.cascades.refine import DraftDelta, Final, Refine
from critpath.cascades.scorers import LogprobScorer
from critpath.demo.tiers import Tiers
from critpath.orchestrator.context import StepContext
from critpath.orchestrator.graph import Graph

__all__ = ["TOOL_SECONDS", "build_agent"]

TOOL_SECONDS = {"web": 0.9, "docs": 0.35, "tickets": 0.6}
"""Modelled latency of each search tool (seconds)."""


def build_agent(tiers: Tiers) -> Graph:
    cheap, strong = tiers.cheap, tiers.strong
    g = Graph("support-agent", inputs=["question"], output="answer")
    intent_cascade = Cascade([Tier(cheap, LogprobScorer(), 0.75, hedge=False), Tier(strong)])
    refine = Refine(cheap, strong)

    def ask(text: str, tokens: int, *, logprobs: bool = False) -> ModelRequest:
        return tiers.request_text(text, min(tokens, tiers.max_tokens), logprobs=logprobs)

    @g.step(resource="small")
    async def plan(question: str) -> list[str]:
        await complete(cheap, ask(f"Which sources answer: {question}", 24))
        return list(TOOL_SECONDS)

    @g.map(over="plan")
    async def search(source: str, question: str) -> list[str]:
        await asyncio.sleep(TOOL_SECONDS[source])
        return [f"{source}#{i}" for i in range(2)]

    @g.step
    def hits(search: list[list[str]]) -> list[str]:
        return [h for group in search for h in group]

    @g.map(over="hits", resource="small")
    async def read(hit: str, question: str) -> str:
        c = await complete(cheap, ask(f"Summarise {hit} for: {question}", 40))
        return c.text[:80]

    @g.step
    async def intent(question: str) -> str:
        result = await intent_cascade.decide(ask(question, 16, logprobs=True))
        return f"{result.tier_name} ({result.acceptance.reason.value})"

    @g.step
    async def answer(question: str, read: list[str], intent: str, ctx: StepContext) -> str:
        text = ""
        async with aclosing(refine.events(ask(question, 120))) as events:
            async for event in events:
                if isinstance(event, DraftDelta):
                    ctx.emit(event.text)
                elif isinstance(event, Final):
                    text = event.text
        return text

    return g
