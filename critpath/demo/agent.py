"""The demo's agent graph: a support assistant, over the demo's models.

``research`` is an agent loop (``critpath.agents``): the cheap model calls the
``search`` tool once per source, with real tool calls, and each search starts the
moment its call's arguments are complete (its turns and searches are sub-steps of
the report and the timeline); ``read`` summarises every hit (the cheap model,
two at a time: the ``small`` resource); meanwhile ``intent`` classifies the question
with a cascade (cheap model, escalating to the strong one when unsure); ``answer`` is
fast-then-refine: the cheap model's draft streams at once (``ctx.emit``), the strong
model's revision follows. Model calls carry each step's critical-path priority.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from typing import Literal

from critpath.adapters.completion import complete
from critpath.adapters.protocol import ModelRequest
from critpath.adapters.sim.model import SimulatedModel
from critpath.adapters.sim.tools import PlannedCall, WavesScript
from critpath.adapters.wrapper import WrapperModel
from critpath.agents import Agent, tool
from critpath.cascades.cascade import Cascade, Tier
from critpath.cascades.refine import DraftDelta, Final, Refine
from critpath.cascades.scorers import LogprobScorer
from critpath.demo.tiers import Tiers
from critpath.orchestrator.context import StepContext
from critpath.orchestrator.graph import Graph

__all__ = ["SEARCH_SCRIPT", "TOOL_SECONDS", "build_agent"]

TOOL_SECONDS = {"web": 0.9, "docs": 0.35, "tickets": 0.6}
"""Modelled latency of each search tool (seconds)."""

SEARCH_SCRIPT = WavesScript(
    [[PlannedCall("search", {"source": s, "query": "deploy fails after upgrade"})
      for s in TOOL_SECONDS]],
    answer="I searched the web, the docs and the tickets.",
)  # fmt: skip
"""What the simulated cheap model does when given the search tool: one call per
source in one message, then a short answer."""


@tool
async def search(source: Literal["web", "docs", "tickets"], query: str) -> list[str]:
    """Search one source for pages about the query."""
    await asyncio.sleep(TOOL_SECONDS[source])
    return [f"{source}#{i}" for i in range(2)]


def build_agent(tiers: Tiers) -> Graph:
    cheap, strong = tiers.cheap, tiers.strong
    g = Graph("support-agent", inputs=["question"], output="answer")
    intent_cascade = Cascade([Tier(cheap, LogprobScorer(), 0.75, hedge=False), Tier(strong)])
    refine = Refine(cheap, strong)

    def ask(text: str, tokens: int, *, logprobs: bool = False) -> ModelRequest:
        return tiers.request_text(text, min(tokens, tiers.max_tokens), logprobs=logprobs)

    for leaf in cheap.leaves() if isinstance(cheap, WrapperModel) else (cheap,):
        if isinstance(leaf, SimulatedModel) and leaf.tool_script is None:
            leaf.tool_script = SEARCH_SCRIPT  # used only by requests that offer tools
    researcher = Agent(
        cheap,
        [search],
        system="Search every source that may answer, then say which you searched.",
        max_turns=3,
        request={"max_tokens": tiers.max_tokens},
    )

    @g.step
    async def hits(question: str) -> list[str]:
        result = await researcher.run(f"Which sources answer: {question}")
        return [h for r in result.tool_runs if r.result is not None
                for h in json.loads(r.result)]  # fmt: skip

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
