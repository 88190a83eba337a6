"""``critpath profile``: profile a server, or verify a saved profile (see the package)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from critpath.bench.plots import check_plot_path
from critpath.errors import ConfigError
from critpath.profile.document import ServerProfile
from critpath.profile.plan import Phase, ProfilePlan
from critpath.profile.render import render, render_verification, tradeoff_svg
from critpath.profile.runner import Profiler
from critpath.profile.verify import verify

__all__ = ["main", "plan_from_args"]


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"{name} takes integers separated by commas: {exc}") from exc
    if not values:
        raise ConfigError(f"{name} needs at least one value")
    return values


def plan_from_args(args: argparse.Namespace) -> ProfilePlan:
    try:
        phases = tuple(Phase(p.strip()) for p in args.phases.split(",") if p.strip())
    except ValueError as exc:
        raise ConfigError(f"--phases: {exc}; use prompt, output, concurrency") from exc
    return ProfilePlan(
        prompt_tokens=_ints(args.prompt_tokens, "--prompt-tokens"),
        output_tokens=_ints(args.output_tokens, "--output-tokens"),
        concurrency=_ints(args.concurrency, "--concurrency"),
        base_prompt=args.base_prompt,
        base_output=args.base_output,
        requests=args.requests,
        prefix_tokens=args.prefix_tokens,
        texts=args.texts,
        rounds=args.rounds,
        phases=phases,
        max_requests=args.max_requests,
        max_seconds=args.max_seconds,
        temperature=args.temperature,
        seed=args.seed,
    )


def main(args: argparse.Namespace) -> int:
    check_plot_path(args.plot)
    if args.verify:
        if args.base_url:
            raise ConfigError("--verify checks a saved profile: give it without --base-url")
        profile = ServerProfile.load(args.verify)
        result = verify(profile, tolerance=args.tolerance, seed=args.seed)
        print(json.dumps(result.to_dict(), indent=2) if args.json else render_verification(result))
        return 0 if result.passed else 1
    if not args.base_url or not args.model:
        raise ConfigError("give --base-url URL and --model NAME (or --verify PROFILE)")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise ConfigError(f"no folder for the profile {args.out!r}")
    profiler = Profiler(
        args.base_url, args.model, plan_from_args(args), api_key_env=args.api_key_env
    )
    profile = asyncio.run(profiler.run())
    if args.out:
        profile.save(args.out)
    if args.plot:
        Path(args.plot).write_text(tradeoff_svg(profile), encoding="utf-8")
    if args.json:
        doc = profile.to_dict()
        for cell in doc["cells"]:
            cell.pop("samples")
        print(json.dumps(doc, indent=2))
    else:
        print(render(profile))
        if args.out:
            print(f"\nprofile: {args.out}")
        if args.plot:
            print(f"plot: {args.plot}")
    return 0
