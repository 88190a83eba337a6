"""``critpath bench cascade``: cascades, votes and refine on recorded real LLM answers.

Replays the recorded answers of ``--data`` (the format of ``shared/data/mmlu_pro``,
``math_l5`` or ``crux``: ``questions.jsonl``, ``responses/<model>.jsonl``,
``models.json``, optional ``dataset.json`` naming the ``answer_kind``) through every
strategy of ``--strategies`` (default: the file shipped in ``critpath/strategies``,
written for any such data set: it names no model) and every model alone, on the
simulated fleet (each model's latency from its size profile; hosted models of unknown
size get the ``api`` profile) in **virtual time**: the real ``Cascade``, ``Vote`` and
``Refine`` code runs, every wait is simulated, and thousands of questions take
minutes. Calibration split (a hash of each id) fits selectors, thresholds and
weights; the rest evaluates. See ``critpath.strategies.replay`` for the method.

Prints a table (or ``--json``), checks the four latency and accuracy goals against the most
accurate single model, and writes a plot (accuracy vs p50 latency) to ``--plot``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from critpath.bench.plots import Point, check_plot_path, scatter_svg
from critpath.strategies import Replay, load_strategies
from critpath.strategies.data import recorded_dir

__all__ = ["VIRTUAL_TIME", "add_arguments", "render", "run"]

VIRTUAL_TIME = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, help="recorded data set (default: $CRITPATH_DATA)")
    parser.add_argument("--strategies", default=None, help="strategies file (JSON or YAML)")
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    parser.add_argument("--seed", type=int, default=0, help="latency draws")
    parser.add_argument("--split-seed", type=int, default=0, help="another calibration split")
    parser.add_argument("--stream-interval", type=int, default=16, help="tokens per chunk")
    parser.add_argument("--plot", default="critpath-cascade.svg", help="SVG plot path ('' none)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    check_plot_path(args.plot)
    data = recorded_dir(args.data)
    strategies = load_strategies(args.strategies)

    def progress(done: int, total: int, _label: str) -> None:
        if not args.quiet:
            width = 30
            filled = int(width * done / max(total, 1))
            print(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} questions asked",
                end="" if done < total else "\n",
                file=sys.stderr,
                flush=True,
            )

    replay = Replay(
        data,
        strategies,
        limit=args.limit,
        seed=args.seed,
        split_seed=args.split_seed,
        stream_interval=args.stream_interval,
        progress=progress,
    )
    result = await replay.run()
    if args.plot:
        points = [
            Point(r["name"], r["latency_ms"]["p50"], r["accuracy"], r["kind"])
            for r in result["strategies"]
        ]
        title = (
            f"{Path(result['dataset']).name}: accuracy vs p50 latency "
            f"({result['n_eval']} eval questions)"
        )
        svg = scatter_svg(
            points, title=title, x_label="p50 latency (simulated ms, log scale)", y_label="accuracy"
        )
        result["plot"] = _write(args.plot, svg)
    return result


def _write(path: str, text: str) -> str:
    target = Path(path)
    target.write_text(text, encoding="utf-8")
    return str(target.resolve())


def render(result: dict[str, Any]) -> str:
    head = (
        f"{'strategy':<40} {'acc':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'mean ms':>8} {'ttft p50':>8} {'$/1k q':>8} {'calls':>6}"
    )
    lines = [
        f"{result['dataset']}: {result['n_eval']} evaluation questions "
        f"({result['n_calibration']} for calibration), {result['answer_kind']} answers",
        head,
        "-" * len(head),
    ]
    for r in result["strategies"]:
        lat = r["latency_ms"]
        lines.append(
            f"{r['name'][:40]:<40} {r['accuracy']:>6.3f} {lat['p50']:>8.0f} {lat['p95']:>8.0f} "
            f"{lat['p99']:>8.0f} {lat['mean']:>8.0f} {r['ttft_ms']['p50']:>8.0f} "
            f"{r['cost'] * 1000:>8.3f} {r['calls_per_query']:>6.2f}"
            + (f"  strict {r['strict_accuracy']:.3f}" if "strict_accuracy" in r else "")
        )
    for s in result["skipped"]:
        lines.append(f"skipped {s['name']}: {s['reason']}")
    for w in result.get("warnings", []):
        lines.append(f"WARNING {w}")
    g = result["goals"]
    if g:
        ref = g["reference"]
        lines.append(
            f"\nreference (most accurate single model): {ref['name']} "
            f"accuracy {ref['accuracy']:.3f}, p50 {ref['p50_ms']:.0f} ms"
        )
        for key in ("fast_equal", "faster_near"):
            best = g[key]["strategies"][:1]
            lines.append(
                f"{'MET ' if g[key]['met'] else 'NOT MET '}{g[key]['target']}"
                + (
                    f": {best[0]['name']} ({best[0]['accuracy']:.3f}, {best[0]['p50_ratio']:.2f}x)"
                    if best
                    else ""
                )
            )
        for v in g["quorum_tail"]["votes"]:
            lines.append(
                f"quorum: {v['vote']} p99 {v['p99_ratio']:.2f}x of waiting for all "
                f"(accuracy {v['accuracy']:.3f} vs {v['accuracy_wait_all']:.3f})"
            )
        for v in g["refine_ttft"]["refines"]:
            lines.append(
                f"refine: {v['refine']} first draft token {v['draft_ttft_ms']:.0f} ms = "
                f"{v['ttft_ratio']:.3f}x the strong model's TTFT"
            )
    if "plot" in result:
        lines.append(f"plot: {result['plot']}")
    return "\n".join(lines)
