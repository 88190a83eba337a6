"""``critpath demo``: critpath's main job on the embedded simulated fleet, in one command.

1. **Strategies side by side** on a multiple-choice task: every model alone, a
   cascade, a vote, vote-then-escalate and fast-then-refine (named once in
   ``strategies``, which ``critpath loadtest`` and the example chat service use too),
   with accuracy, p50/p95 latency, time to first token, cost and calls per question
   (``table``).
2. **One agent run** (``agent``): parallel tool calls, a cascade and fast-then-refine
   in one graph; its critical-path report is printed and its timeline written to an
   HTML file.

By default everything runs on the simulated fleet (``tiers``) in **virtual time**:
exact simulated latencies, in seconds of real time, no GPU, no network.
``--base-url URL --model NAME`` (repeatable, cheapest first) runs the same job against
an OpenAI-compatible server such as vLLM, in real time; ``--data DIR`` replaces the
table with recorded real answers (``critpath bench cascade`` on a sample).

``run`` (``DemoOptions``, ``run_demo``...) is imported on first use, so naming the
strategies (``critpath loadtest --help``) does not load the demo's machinery.
"""

from typing import TYPE_CHECKING

from critpath.demo.strategies import DemoStrategy, StrategyKind

if TYPE_CHECKING:
    from critpath.demo.run import DemoOptions, render, run_demo, run_demo_sync

__all__ = ["DemoOptions", "DemoStrategy", "StrategyKind", "render", "run_demo", "run_demo_sync"]

_RUN_NAMES = frozenset({"DemoOptions", "render", "run_demo", "run_demo_sync"})


def __getattr__(name: str) -> object:
    if name in _RUN_NAMES:
        from critpath.demo import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
