"""The ``critpath`` command: ``demo``, ``bench``, ``report``, ``sim-server``, ``profile``.

``critpath bench NAME`` runs ``benchmarks/NAME.py`` from the source checkout (or from
the folder named by ``--dir`` / ``CRITPATH_BENCHMARKS``). A benchmark module defines
``add_arguments(parser)``, ``async def run(args) -> dict`` and ``render(result) -> str``;
``VIRTUAL_TIME = True`` runs it on a virtual-time event loop (a pure simulation).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["main"]


def _benchmarks_dir(explicit: str | None) -> Path:
    candidates = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("CRITPATH_BENCHMARKS"):
        candidates.append(Path(os.environ["CRITPATH_BENCHMARKS"]))
    candidates.append(Path(__file__).resolve().parent.parent / "benchmarks")
    candidates.append(Path.cwd() / "benchmarks")
    for c in candidates:
        if c.is_dir():
            return c
    raise SystemExit(
        "critpath bench: no benchmarks/ folder found; run from a critpath checkout or pass --dir"
    )


def _available(bench_dir: Path) -> list[str]:
    return sorted(p.stem for p in bench_dir.glob("*.py") if not p.stem.startswith("_"))


def _load_benchmark(bench_dir: Path, name: str) -> ModuleType:
    path = bench_dir / f"{name}.py"
    if not path.is_file():
        raise SystemExit(
            f"critpath bench: unknown benchmark {name!r}; available: "
            + ", ".join(_available(bench_dir))
        )
    spec = importlib.util.spec_from_file_location(f"critpath_benchmarks.{name}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"critpath bench: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _cmd_loadtest(args: argparse.Namespace) -> int:
    from critpath.errors import ConfigError
    from critpath.loadtest.command import main as loadtest_main

    try:
        return loadtest_main(args)
    except (ConfigError, OSError) as exc:
        raise SystemExit(f"critpath loadtest: {exc}") from exc


def _cmd_demo(args: argparse.Namespace) -> int:
    from critpath.demo import DemoOptions, render, run_demo_sync

    if args.trace:
        from critpath.telemetry import enable_tracing

        enable_tracing(args.trace)
    opts = DemoOptions(
        questions=args.questions,
        base_url=args.base_url,
        models=list(args.model or []),
        data=args.data,
        timeline=Path(args.out) if args.out else None,
        report_json=Path(args.report_json) if args.report_json else None,
        question=args.question,
        seed=args.seed,
        progress=False if args.json or args.no_progress else None,
        api_key_env=args.api_key_env,
    )
    if opts.models and not opts.base_url:
        raise SystemExit("critpath demo: --model needs --base-url")
    if opts.base_url and not opts.models:
        raise SystemExit("critpath demo: --base-url needs at least one --model NAME")
    if opts.questions is not None and opts.questions < 1:
        raise SystemExit("critpath demo: --questions must be >= 1")
    for path in (opts.timeline, opts.report_json):
        if path is not None and not path.parent.is_dir():
            raise SystemExit(f"critpath demo: no folder {path.parent} for {path.name}")
    from critpath.errors import CritpathError

    try:
        result = run_demo_sync(opts)
    except (CritpathError, OSError) as exc:
        raise SystemExit(f"critpath demo: {type(exc).__name__}: {exc}") from exc
    if args.json:
        result["agent"].pop("report_text", None)
        print(json.dumps(result, indent=2))
    else:
        print(render(result))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from critpath.orchestrator.report import RunReport

    report = RunReport.load_json(args.file)
    print(report.to_text())
    if args.html:
        print(f"\ntimeline: {report.save_html(args.html)}")
    return 0


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _cmd_sim_server(args: argparse.Namespace) -> int:
    from critpath.adapters.sim.server import (
        SimServer,
        build_fleet,
        check_host,
        parse_faults,
        serve,
    )
    from critpath.errors import ConfigError

    parser: argparse.ArgumentParser = args.parser
    data = args.data  # explicit: an environment variable must not switch the fleet
    try:
        check_host(args.host, args.allow_remote)
        fleet = build_fleet(
            sizes=_csv(args.fleet),
            data=data,
            models=_csv(args.models) if args.models else None,
            replicas=args.replicas,
            seed=args.seed,
            time_scale=args.time_scale,
            faults=parse_faults(args.faults) if args.faults else None,
            max_num_seqs=args.max_num_seqs,
            profile=args.profile,
        )
    except ConfigError as exc:
        parser.error(str(exc))

    def ready(server: SimServer) -> None:
        names = ", ".join(fleet.names())
        print(f"critpath sim-server: {names} at {server.base_url} (Ctrl-C to stop)", flush=True)

    try:
        asyncio.run(
            serve(fleet, args.host, args.port, allow_remote=args.allow_remote, on_ready=ready)
        )
    except ConfigError as exc:  # e.g. the port is taken
        print(f"critpath sim-server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    print("critpath sim-server: stopped", flush=True)
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from critpath.errors import CritpathError
    from critpath.profile.command import main as profile_main

    try:
        return profile_main(args)
    except (CritpathError, OSError) as exc:
        raise SystemExit(f"critpath profile: {type(exc).__name__}: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="critpath",
        description="Run compound AI systems at the speed of their critical path.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo", help="strategies side by side and one agent run, on the simulated fleet"
    )
    demo.add_argument("--question", default="Why does my deploy fail after the upgrade?")
    demo.add_argument("--questions", type=int, default=None, help="questions per strategy")
    demo.add_argument("--base-url", default=None, help="an OpenAI-compatible server (.../v1)")
    demo.add_argument("--model", action="append", help="a served model, cheapest first; repeat")
    demo.add_argument("--api-key-env", default=None, help="environment variable with the key")
    demo.add_argument("--data", default=None, help="recorded answers (e.g. ../shared/data)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="critpath-demo-timeline.html", help="timeline HTML file")
    demo.add_argument("--report-json", default=None, help="also save the report as JSON here")
    demo.add_argument("--json", action="store_true", help="print JSON instead of text")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument("--trace", choices=["console", "otlp"], help="export OpenTelemetry spans")
    demo.set_defaults(func=_cmd_demo)

    load = sub.add_parser("loadtest", help="open-loop load on a strategy or a local endpoint")
    from critpath.loadtest.arguments import add_arguments as _load_arguments

    _load_arguments(load)
    load.set_defaults(func=_cmd_loadtest)

    bench = sub.add_parser("bench", help="run a benchmark from benchmarks/ (e.g. runtime)")
    bench.add_argument("name", nargs="?", help="benchmark name; omit to list them")
    bench.add_argument("--dir", default=None, help="benchmarks folder")

    rep = sub.add_parser("report", help="print a saved JSON run report; draw its timeline")
    rep.add_argument("file")
    rep.add_argument("--html", default=None, help="write the timeline HTML here")
    rep.set_defaults(func=_cmd_report)

    sim = sub.add_parser(
        "sim-server", help="serve a simulated model fleet over the OpenAI-compatible HTTP API"
    )
    sim.add_argument("--port", type=int, required=True, help="TCP port (0: any free port)")
    sim.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    sim.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    sim.add_argument(
        "--fleet", default="small,medium,large", help="synthetic model sizes (without --data)"
    )
    sim.add_argument(
        "--data", default=None, help="recorded answers, e.g. ../shared/data or $CRITPATH_DATA"
    )
    sim.add_argument("--models", default=None, help="recorded models to serve (with --data)")
    sim.add_argument("--replicas", type=int, default=1, help="replicas of each model")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--time-scale", type=float, default=1.0, help="multiplies every duration")
    sim.add_argument(
        "--faults", default=None, help="e.g. straggler=0.05,error=0.01,reset=0.01,stall=0.01"
    )
    sim.add_argument("--max-num-seqs", type=int, default=None, help="sequences decoded at once")
    sim.add_argument(
        "--profile", default=None, help="serve the model a `critpath profile --out` file measured"
    )
    sim.set_defaults(func=_cmd_sim_server, parser=sim)

    prof = sub.add_parser(
        "profile", help="measure a model server's latency shape; write a simulator profile"
    )
    from critpath.profile.arguments import add_arguments as _profile_arguments

    _profile_arguments(prof)
    prof.set_defaults(func=_cmd_profile)

    if argv and argv[0] == "bench":
        known, rest = bench.parse_known_args(argv[1:])
        bench_dir = _benchmarks_dir(known.dir)
        if not known.name:
            print("benchmarks: " + ", ".join(_available(bench_dir)))
            return 0
        module = _load_benchmark(bench_dir, known.name)
        bparser = argparse.ArgumentParser(prog=f"critpath bench {known.name}")
        bparser.add_argument("--json", action="store_true", help="print one JSON object")
        module.add_arguments(bparser)
        bargs = bparser.parse_args(rest)
        from critpath.errors import ConfigError

        try:
            if getattr(module, "VIRTUAL_TIME", False):  # a simulation: on virtual time
                from critpath.adapters.sim.clock import run_virtual

                result = run_virtual(module.run(bargs))
            else:
                result = asyncio.run(module.run(bargs))
        except (ConfigError, OSError) as exc:
            raise SystemExit(f"critpath bench {known.name}: {exc}") from exc
        print(json.dumps(result, indent=2) if bargs.json else module.render(result))
        return 0

    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
