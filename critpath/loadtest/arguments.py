"""``critpath loadtest``'s arguments, apart from the machinery (so ``critpath --help`` and
every other command start without importing it)."""

from __future__ import annotations

import argparse

__all__ = ["ALIASES", "add_arguments"]

ALIASES = {
    "small": "small",
    "medium": "medium",
    "large": "large",
    "cascade": "cascade(small>large)",
    "vote": "vote(all)",
    "vote-escalate": "vote(cheaper)>large",
    "refine": "refine(small>large)",
}
"""Short names of the demo's strategies on the simulated fleet (``critpath demo``)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", default=None,
                   help=f"an in-process strategy: {', '.join(ALIASES)}")  # fmt: skip
    p.add_argument("--compare", default=None, help="several strategies, comma-separated")
    p.add_argument("--url", default=None,
                   help="an endpoint on loopback: .../v1/chat/completions or .../chat")  # fmt: skip
    p.add_argument("--model", default="critpath-refine", help="model name for --url (OpenAI)")
    p.add_argument("--rate", type=float, default=None, help="offered requests per second")
    p.add_argument("--rates", default=None, help="a sweep: comma-separated rates")
    p.add_argument("--requests", type=int, default=200, help="at most this many per run")
    p.add_argument("--duration", type=float, default=60.0, help="at most this many seconds")
    p.add_argument("--slo-ms", type=float, default=1000.0, help="goodput counts answers within")
    p.add_argument("--drain", type=float, default=30.0, help="seconds to wait for the last")
    p.add_argument("--real-time", action="store_true", help="in-process targets on wall-clock")
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated fleet speed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default=None, help="write an SVG plot here")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
