"""A first critpath graph: fan-out, fan-in, a route, a deadline and the report.

Run it with ``python examples/quickstart.py``; it writes ``quickstart-timeline.html``.
"""

from __future__ import annotations

import asyncio

from critpath import Graph, StepContext

g = Graph("quickstart", inputs=["question"], output="answer")


@g.step
async def plan(question: str) -> list[str]:
    await asyncio.sleep(0.05)  # e.g. an LLM call that lists what to look up
    return ["pricing", "limits", "regions"]


@g.map(over="plan", resource="search")
async def lookup(topic: str) -> str:
    await asyncio.sleep(0.02 * len(topic) / 5)  # e.g. a tool call per topic
    return f"facts about {topic}"


@g.route(branches=["short", "long"])
def pick(question: str) -> str:
    return "long" if len(question) > 40 else "short"


@g.step
async def short(lookup: list[str]) -> str:
    await asyncio.sleep(0.03)
    return f"short answer from {len(lookup)} facts"


@g.step
async def long(lookup: list[str], ctx: StepContext) -> str:
    ctx.set_partial("a draft of the long answer")  # used if the deadline passes first
    await asyncio.sleep(0.12)
    return f"long answer from {len(lookup)} facts"


@g.step
def answer(short: str | None = None, long: str | None = None) -> str:
    return long or short or ""


async def main() -> None:
    result = await g.run(
        {"question": "What are the limits per region?"},
        deadline=2.0,
        resources={"search": 2},  # at most two lookups at once; least slack goes first
    )
    print(result.output)
    print(result.report)
    result.report.save_html("quickstart-timeline.html")


if __name__ == "__main__":
    asyncio.run(main())
