"""``critpath demo``: critpath's main job on the embedded simulated fleet, in one command.

1. **Strategies side by side** on a multiple-choice task: every model alone, a
   cascade, a vote, vote-then-escalate and fast-then-refine, with accuracy, p50/p95
   latency, time to first token, cost and calls per question (``table``).
2. **One agent run** (``agent``): parallel tool calls, a cascade and fast-then-refine
   in one graph; its critical-path report is printed and its timeline written to an
   HTML file.

By default everything runs on the simulated fleet (``tiers``) in **virtual time**:
exact simulated latencies, in seconds of real time, no GPU, no network.
``--base-url URL --model NAME`` (repeatable, cheapest first) runs the same job against
an OpenAI-compatible server such as vLLM, in real time; ``--data DIR`` replaces the
table with recorded real answers (``critpath bench cascade`` on a sample).
"""

from critpath.demo.run import DemoOptions, render, run_demo, run_demo_sync

__all__ = ["DemoOptions", "render", "run_demo", "run_demo_sync"]
