"""``critpath profile``'s arguments, apart from the machinery (so ``critpath --help`` and
every other command start without importing it)."""

from __future__ import annotations

import argparse

__all__ = ["add_arguments"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default=None, help="the server's OpenAI API (.../v1)")
    p.add_argument("--model", default=None, help="the served model's name")
    p.add_argument("--api-key-env", default=None, help="environment variable with the key")
    p.add_argument("--prompt-tokens", default="16,128,384", help="prompt lengths (tokens)")
    p.add_argument("--output-tokens", default="16,64", help="output lengths (tokens)")
    p.add_argument("--concurrency", default="1,2,4,8,16", help="concurrent requests")
    p.add_argument("--base-prompt", type=int, default=64, help="prompt tokens elsewhere")
    p.add_argument("--base-output", type=int, default=32, help="output tokens elsewhere")
    p.add_argument("--requests", type=int, default=16, help="requests per cell (at least)")
    p.add_argument(
        "--prefix-tokens", type=int, default=0,
        help="measure prefix caching with a shared prefix this long (0: no)",
    )  # fmt: skip
    p.add_argument(
        "--texts", action="store_true",
        help="measure repetitive against random text (speculative decoding)",
    )  # fmt: skip
    p.add_argument(
        "--phases", default="prompt,output,concurrency",
        help="which sweeps: prompt, output, concurrency (comma-separated)",
    )  # fmt: skip
    p.add_argument("--rounds", type=int, default=4,
                   help="run the plan in this many rounds (spreads bursts of load)")  # fmt: skip
    p.add_argument("--max-requests", type=int, default=600, help="at most this many requests")
    p.add_argument("--max-seconds", type=float, default=300.0, help="send none after this")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the profile (JSON) here")
    p.add_argument("--plot", default=None, help="write the batching trade-off (SVG) here")
    p.add_argument(
        "--verify", default=None, metavar="PROFILE",
        help="check the simulator calibrated from PROFILE against it (no server)",
    )  # fmt: skip
    p.add_argument("--tolerance", type=float, default=0.15, help="for --verify (relative)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
