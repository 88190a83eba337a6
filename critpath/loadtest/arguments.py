"""``critpath loadtest``'s arguments, apart from the machinery (so ``critpath --help`` and
every other command start without importing it).

Numbers are checked as they are parsed, so a bad one is one line of usage error:

>>> positive("2.5"), non_negative("0")
(2.5, 0.0)
>>> positive("nan")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: must be a finite number > 0, got 'nan'
"""

from __future__ import annotations

import argparse
import math

from critpath.demo.strategies import DemoStrategy, served_name

__all__ = ["add_arguments", "at_least_one", "non_negative", "positive"]


def _finite(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive(text: str) -> float:
    """A finite number > 0."""
    value = _finite(text, "a finite number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def non_negative(text: str) -> float:
    """A finite number >= 0."""
    value = _finite(text, "a finite number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def at_least_one(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    strategies = ", ".join(s.value for s in DemoStrategy)
    p.add_argument("--strategy", default=None,
                   help=f"in process: a demo strategy ({strategies}) or one simulated model "
                   "alone (small, medium, large)")  # fmt: skip
    p.add_argument("--compare", default=None, help="several strategies, comma-separated")
    p.add_argument("--url", default=None,
                   help="an endpoint on loopback: .../v1/chat/completions or .../chat")  # fmt: skip
    p.add_argument("--model", default=served_name(DemoStrategy.REFINE),
                   help="model name for --url (OpenAI)")  # fmt: skip
    p.add_argument("--rate", type=positive, default=None, help="offered requests per second")
    p.add_argument("--rates", default=None, help="a sweep: comma-separated rates")
    p.add_argument("--requests", type=at_least_one, default=200, help="at most this many per run")
    p.add_argument("--duration", type=positive, default=60.0, help="at most this many seconds")
    p.add_argument("--slo-ms", type=positive, default=1000.0,
                   help="goodput counts answers within")  # fmt: skip
    p.add_argument("--drain", type=non_negative, default=30.0,
                   help="seconds to wait for the last")  # fmt: skip
    p.add_argument("--real-time", action="store_true", help="in-process targets on wall-clock")
    p.add_argument("--time-scale", type=positive, default=1.0, help="simulated fleet speed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default=None, help="write an SVG plot here")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
