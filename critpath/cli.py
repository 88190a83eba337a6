"""The ``critpath`` command: ``demo``, ``loadtest``, ``bench``, ``report``, ``sim-server``,
``profile``.

``critpath bench NAME`` runs a benchmark that ships in the package (``critpath.bench``:
found by name in its registry, never by a path); ``critpath bench`` lists them.

Every command fails the same way: bad input or a failure it can explain is one line
on stderr (``critpath COMMAND: what went wrong``) and a non-zero exit status (2 for a
bad argument, 1 for anything else), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from critpath.errors import ConfigError, CritpathError

if TYPE_CHECKING:
    from critpath.orchestrator.report import RunReport

__all__ = ["main"]


class _UsageError(ConfigError):
    """A bad argument: the command exits with status 2."""


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (``PROG: error: ...``) rather than usage and error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---- demo -----------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from critpath.demo import DemoOptions, render, run_demo_sync

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
        raise _UsageError("--model needs --base-url")
    if opts.base_url and not opts.models:
        raise _UsageError("--base-url needs at least one --model NAME")
    if opts.questions is not None and opts.questions < 1:
        raise _UsageError("--questions must be >= 1")
    for path in (opts.timeline, opts.report_json):
        if path is not None and not path.parent.is_dir():
            raise _UsageError(f"no folder {path.parent} for {path.name}")
    if args.trace:
        from critpath.telemetry import enable_tracing

        enable_tracing(args.trace)
    result = run_demo_sync(opts)
    if args.json:
        result["agent"].pop("report_text", None)
        print(json.dumps(result, indent=2))
    else:
        print(render(result))
    return 0


# ---- loadtest -------------------------------------------------------------------------


def _cmd_profile(args: argparse.Namespace) -> int:
    from critpath.profile.command import main as profile_main

    return profile_main(args)


def _cmd_loadtest(args: argparse.Namespace) -> int:
    from critpath.loadtest.command import main as loadtest_main

    return loadtest_main(args)


# ---- bench ----------------------------------------------------------------------------


def _cmd_bench(args: argparse.Namespace) -> int:
    from critpath.bench import load, names

    if not args.name:
        print("benchmarks: " + ", ".join(names()))
        return 0
    try:
        bench = load(args.name)
    except ConfigError as exc:  # not a registered name
        raise _UsageError(str(exc)) from None
    bparser = _Parser(prog=f"critpath bench {bench.name}")
    bparser.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_arguments(bparser)
    bargs = bparser.parse_args(args.options)
    args.command = f"bench {bench.name}"  # failures name the benchmark
    result = bench.execute(bargs)
    print(json.dumps(result, indent=2) if bargs.json else bench.render(result))
    return 0


# ---- report ---------------------------------------------------------------------------


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def _load_report(path: str) -> RunReport:
    """A saved run report, or one ``ConfigError`` line saying why it cannot be read."""
    from pydantic import ValidationError

    from critpath.orchestrator.report import RunReport

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply to be a run report") from None
    except ValueError as exc:  # json.JSONDecodeError included
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    try:
        return RunReport.model_validate(data)
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply to be a run report") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(
            f"{path}: not a critpath run report: {where}: {first['msg']}{more}"
        ) from None


def _cmd_report(args: argparse.Namespace) -> int:
    report = _load_report(args.file)
    if args.html and not Path(args.html).resolve().parent.is_dir():
        raise _UsageError(f"no folder for the timeline {args.html!r}")
    try:
        text = report.to_text()
        html = report.save_html(args.html) if args.html else None
    except (LookupError, ValueError, TypeError, ArithmeticError) as exc:
        # the file validated but its steps do not fit together (a hand-edited report)
        raise ConfigError(f"{args.file}: an inconsistent run report: {exc!r}") from None
    print(text)
    if html is not None:
        print(f"\ntimeline: {html}")
    return 0


# ---- sim-server -----------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _cmd_sim_server(args: argparse.Namespace) -> int:
    from critpath.adapters.sim.server import SimServer, build_fleet, parse_faults, serve
    from critpath.serve.net import check_host

    try:
        check_host(args.host, args.allow_remote)
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port must be in 0..65535, got {args.port}")
        fleet = build_fleet(
            sizes=_csv(args.fleet),
            data=args.data,  # explicit: an environment variable must not switch the fleet
            models=_csv(args.models) if args.models else None,
            replicas=args.replicas,
            seed=args.seed,
            time_scale=args.time_scale,
            faults=parse_faults(args.faults) if args.faults else None,
            max_num_seqs=args.max_num_seqs,
            prefix_cache_blocks=args.prefix_cache_blocks,
            profile=args.profile,
        )
    except ConfigError as exc:
        raise _UsageError(str(exc)) from None

    def ready(server: SimServer) -> None:
        names = ", ".join(fleet.names())
        print(f"critpath sim-server: {names} at {server.base_url} (Ctrl-C to stop)", flush=True)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop, as uvicorn does
        asyncio.run(
            serve(fleet, args.host, args.port, allow_remote=args.allow_remote, on_ready=ready)
        )
    print("critpath sim-server: stopped", flush=True)
    return 0


# ---- the command line -----------------------------------------------------------------


def _positive(text: str) -> float:
    from critpath.loadtest.arguments import positive

    return positive(text)


def _at_least_one(text: str) -> int:
    from critpath.loadtest.arguments import at_least_one

    return at_least_one(text)


def _parser() -> _Parser:
    parser = _Parser(
        prog="critpath", description="Run compound AI systems at the speed of their critical path."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo", help="strategies side by side and one agent run, on the simulated fleet"
    )
    demo.add_argument("--question", default="Why does my deploy fail after the upgrade?")
    demo.add_argument("--questions", type=_at_least_one, default=None,
                      help="questions per strategy")  # fmt: skip
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

    bench = sub.add_parser("bench", help="run a benchmark that ships with critpath (e.g. runtime)")
    bench.add_argument("name", nargs="?", help="benchmark name; omit to list them")
    bench.add_argument("options", nargs=argparse.REMAINDER,
                       help="the benchmark's options (critpath bench NAME --help)")  # fmt: skip
    bench.set_defaults(func=_cmd_bench)

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
    sim.add_argument("--replicas", type=_at_least_one, default=1, help="replicas of each model")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--time-scale", type=_positive, default=1.0,
                     help="multiplies every duration")  # fmt: skip
    sim.add_argument(
        "--faults", default=None, help="e.g. straggler=0.05,error=0.01,reset=0.01,stall=0.01"
    )
    sim.add_argument("--max-num-seqs", type=_at_least_one, default=None,
                     help="sequences decoded at once")  # fmt: skip
    sim.add_argument(
        "--prefix-cache-blocks", type=_at_least_one, default=None,
        help="a prefix cache of this many 16-token blocks per replica (default: none)",
    )  # fmt: skip
    sim.add_argument(
        "--profile", default=None, help="serve the model a `critpath profile --out` file measured"
    )
    sim.set_defaults(func=_cmd_sim_server)

    prof = sub.add_parser(
        "profile", help="measure a model server's latency shape; write a simulator profile"
    )
    from critpath.profile.arguments import add_arguments as profile_arguments

    profile_arguments(prof)
    prof.set_defaults(func=_cmd_profile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``critpath`` command; returns the exit status (see the module docstring)."""
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except SystemExit as exc:  # argparse: --help (0) or a bad argument (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    except _UsageError as exc:
        return _fail(args, exc, 2)
    except CritpathError as exc:
        return _fail(args, exc, 1)
    except OSError as exc:  # a file or socket the command could not use
        return _fail(args, exc, 1)


def _fail(args: argparse.Namespace, exc: BaseException, status: int) -> int:
    message: Any = exc
    if not isinstance(exc, ConfigError):  # name what failed when it is not a bad option
        message = f"{type(exc).__name__}: {exc}"
    print(f"critpath {args.command}: {_one_line(str(message))}", file=sys.stderr)
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
