"""``critpath bench adaptive``: answer in time under load, from a lighter model if need be.

Three recorded models of ``--data`` (MMLU-Pro answers; ``--strong``, ``--medium``,
``--small``) on the simulated fleet, each with its size's latency profile; the strong
model serves at most ``--strong-slots`` requests at once (a bounded capacity), the
others the profile's default. Open-loop Poisson arrivals at ``--loads`` times the
strong model's capacity (computed from its profile and its answers' lengths: slots /
mean service time with every slot busy), ``--duration`` simulated seconds each, every
request with an SLO (``--slo``, sent as the request's ``timeout``). The same
arrivals, questions and latency draws (by request id) for three policies, side by side,
on virtual time:

- ``strong``: the strong model alone, every request queued for it;
- ``admission``: the strong model behind admission control: ``Adaptive([strong],
  on_miss=OnMiss.SHED)`` refuses (sheds) a request predicted to miss its SLO;
- ``adaptive``: ``Adaptive([strong, medium, small])``: the best model predicted to
  answer within the SLO, the fastest when none is.

Per policy and load: ``within_slo`` (answered within the SLO, a fraction of all
sent), ``shed`` (fraction refused), ``accuracy`` (of the answers given), ``p50_ms`` /
``p99_ms`` (of the answers given, from the scheduled arrival), and for the adaptive
policy which models answered; for both Adaptive policies how often the brownout
tripped (``trips``) and recovered. ``--recover 1`` turns the hysteresis off.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from critpath.adapters.adaptive import Adaptive, LoadShedError, OnMiss
from critpath.adapters.completion import complete
from critpath.adapters.protocol import Model, ModelRequest, make_request
from critpath.adapters.sim.answers import LETTERS, Question, RecordedAnswers
from critpath.adapters.sim.model import SimulatedModel
from critpath.adapters.sim.profiles import LatencyProfile, profile_for_params
from critpath.cascades.decisions import normalise_answer
from critpath.errors import ConfigError, ModelError
from critpath.estimates import percentile
from critpath.strategies.data import recorded_dir

__all__ = ["POLICIES", "VIRTUAL_TIME", "add_arguments", "render", "run"]

VIRTUAL_TIME = True
POLICIES = ("strong", "admission", "adaptive")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, help="recorded data set (default: $CRITPATH_DATA)")
    parser.add_argument("--strong", default="llama-3.1-70b-instruct", help="the best model")
    parser.add_argument("--medium", default="yi-34b", help="the middle model")
    parser.add_argument("--small", default="mistral-7b-instruct-v0.2", help="the lightest model")
    parser.add_argument("--strong-slots", type=int, default=8, help="strong model's capacity")
    parser.add_argument("--slo", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--loads", default="0.5,1,2,4", help="x the strong model's capacity")
    parser.add_argument("--duration", type=float, default=240.0, help="simulated s per load")
    parser.add_argument("--max-tokens", type=int, default=512, help="per request")
    parser.add_argument("--quantile", type=float, default=0.98, help="of the learned lengths")
    parser.add_argument("--recover", type=float, default=0.6, help="hysteresis margin (1: none)")
    parser.add_argument("--seed", type=int, default=0, help="arrivals, questions, latency")
    parser.add_argument("--stream-interval", type=int, default=16, help="tokens per chunk")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


@dataclass(frozen=True, slots=True)
class _Arrival:
    at: float
    question: Question
    request_id: str


@dataclass(frozen=True, slots=True)
class _Outcome:
    latency: float | None  # None: shed
    correct: bool
    error: str | None = None


class _Setup:
    """The data, the three models' profiles and the strong model's capacity."""

    def __init__(self, args: argparse.Namespace) -> None:
        if args.strong_slots < 1 or args.max_tokens < 1:
            raise ConfigError("--strong-slots and --max-tokens must be >= 1")
        if not args.slo > 0 or not args.duration > 0:
            raise ConfigError("--slo and --duration must be > 0")
        self.args = args
        self.answers = RecordedAnswers(recorded_dir(args.data))
        self.names = (args.strong, args.medium, args.small)
        for name in self.names:
            self.answers.responses(name)  # a clear error now for a model not recorded
        self.questions = [
            q for q in self.answers.questions if q.id in self.answers.responses(args.strong)
        ]
        strong = profile_for_params(self.answers.params_b(args.strong))
        self.profiles = {
            args.strong: strong.with_(max_num_seqs=args.strong_slots),
            args.medium: profile_for_params(self.answers.params_b(args.medium)),
            args.small: profile_for_params(self.answers.params_b(args.small)),
        }
        self.capacity = self._capacity()

    def _capacity(self) -> float:
        """Requests per second the strong model completes with every slot busy."""
        p: LatencyProfile = self.profiles[self.args.strong]
        rows = self.answers.responses(self.args.strong)
        lengths = []
        prompts = []
        for q in self.questions:
            chars = rows[q.id].get("output_chars")
            tokens = max(1, int(chars) // 4) if isinstance(chars, int) else 100
            lengths.append(min(tokens, self.args.max_tokens))
            prompts.append(max(1, len(_content(q)) // 4))
        mean_tokens = math.fsum(lengths) / len(lengths)
        mean_prompt = math.fsum(prompts) / len(prompts)
        ttft = (p.queue_s + p.prefill_per_token_s * mean_prompt) * math.exp(p.ttft_sigma**2 / 2)
        tpot = (
            p.tpot_s * math.exp(p.tpot_sigma**2 / 2) * (1 + p.batch_slowdown * (p.max_num_seqs - 1))
        )
        return p.max_num_seqs / (ttft + (mean_tokens - 1) * tpot)

    def arrivals(self, load: float) -> list[_Arrival]:
        rng = random.Random(f"{self.args.seed}:{load}")
        rate = load * self.capacity
        out: list[_Arrival] = []
        t = rng.expovariate(rate)
        while t < self.args.duration:
            q = self.questions[rng.randrange(len(self.questions))]
            out.append(_Arrival(t, q, f"L{load}-{len(out)}"))
            t += rng.expovariate(rate)
        return out

    def fleet(self) -> list[SimulatedModel]:
        """Fresh, idle models; a request's latency draws depend on its id only."""
        return [
            SimulatedModel(name, profile=self.profiles[name], answers=self.answers,
                           seed=self.args.seed, stream_interval=self.args.stream_interval,
                           draw_by="request")
            for name in self.names
        ]  # fmt: skip

    def request(self, a: _Arrival) -> ModelRequest:
        return make_request(
            messages=[{"role": "user", "content": _content(a.question)}],
            max_tokens=self.args.max_tokens,
            timeout=self.args.slo,
            request_id=a.request_id,
            extra_body={"question_id": a.question.id},
        )


def _content(q: Question) -> str:
    options = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(q.options))
    return f"{q.text}\n\nOptions:\n{options}"


async def _open_loop(setup: _Setup, model: Model, arrivals: Sequence[_Arrival]) -> list[_Outcome]:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    outcomes: list[_Outcome | None] = [None] * len(arrivals)

    async def one(i: int, a: _Arrival) -> None:
        try:
            completion = await complete(model, setup.request(a))
        except LoadShedError:
            outcomes[i] = _Outcome(None, False)
            return
        except ModelError as exc:
            outcomes[i] = _Outcome(loop.time() - t0 - a.at, False, type(exc).__name__)
            return
        correct = normalise_answer(completion.text) == a.question.answer
        outcomes[i] = _Outcome(loop.time() - t0 - a.at, correct)

    async with asyncio.TaskGroup() as tg:
        for i, a in enumerate(arrivals):
            delay = t0 + a.at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tg.create_task(one(i, a))
    return [o for o in outcomes if o is not None]


def _row(policy: str, load: float, slo: float, outcomes: Sequence[_Outcome]) -> dict[str, Any]:
    sent = len(outcomes)
    given = [o for o in outcomes if o.latency is not None and o.error is None]
    lat = [o.latency for o in given if o.latency is not None]
    return {
        "policy": policy,
        "load": load,
        "sent": sent,
        "within_slo": round(sum(1 for x in lat if x <= slo) / sent, 4) if sent else math.nan,
        "shed": round(sum(1 for o in outcomes if o.latency is None) / sent, 4) if sent else 0.0,
        "errors": sum(1 for o in outcomes if o.error is not None),
        "accuracy": round(sum(o.correct for o in given) / len(given), 4) if given else math.nan,
        "p50_ms": round(percentile(lat, 0.5) * 1000, 1) if lat else math.nan,
        "p99_ms": round(percentile(lat, 0.99) * 1000, 1) if lat else math.nan,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        loads = [float(x) for x in str(args.loads).split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigError(f"--loads must be numbers separated by commas: {args.loads!r}") from exc
    if not loads or any(not x > 0 for x in loads):
        raise ConfigError("--loads must be positive numbers")
    if not 0.0 < args.quantile < 1.0:
        raise ConfigError("--quantile must be in (0, 1)")
    if not 0.0 < args.recover <= 1.0:
        raise ConfigError("--recover must be in (0, 1]")
    setup = _Setup(args)
    arms: list[dict[str, Any]] = []
    for load in loads:
        arrivals = setup.arrivals(load)
        for policy in POLICIES:
            if not args.quiet:
                print(f"load {load}x: {policy} ({len(arrivals)} requests)", file=sys.stderr)
            models = setup.fleet()
            if policy == "strong":
                outcomes = await _open_loop(setup, models[0], arrivals)
                arms.append(_row(policy, load, args.slo, outcomes))
                continue
            adaptive = Adaptive(
                models[:1] if policy == "admission" else models,
                quantile=args.quantile,
                recover=args.recover,
                on_miss=OnMiss.SHED if policy == "admission" else OnMiss.FASTEST,
            )
            async with adaptive.watch(0.5):
                outcomes = await _open_loop(setup, adaptive, arrivals)
            row = _row(policy, load, args.slo, outcomes)
            stats = adaptive.statistics()
            if policy == "adaptive":
                row["answered_by"] = {c.name: c.picks for c in stats.candidates}
            row["trips"], row["recoveries"] = stats.trips, stats.recoveries
            arms.append(row)
    return {
        "models": {"strong": args.strong, "medium": args.medium, "small": args.small},
        "alone": _alone(setup),
        "strong_slots": args.strong_slots,
        "capacity_rps": round(setup.capacity, 3),
        "slo_s": args.slo,
        "duration_s": args.duration,
        "max_tokens": args.max_tokens,
        "quantile": args.quantile,
        "recover": args.recover,
        "arms": arms,
        "goals": _goals(arms, _alone(setup)),
    }


def _alone(setup: _Setup) -> dict[str, float]:
    """Each model's accuracy on every question (recorded; no latency involved)."""
    out = {}
    for name in setup.names:
        rows = setup.answers.responses(name)
        right = sum(1 for q in setup.questions if rows.get(q.id, {}).get("pred") == q.answer)
        out[name] = round(right / len(setup.questions), 4)
    return out


def _goals(arms: Sequence[dict[str, Any]], alone: dict[str, float]) -> dict[str, Any]:
    by = {(a["policy"], a["load"]): a for a in arms}
    goals: dict[str, Any] = {}
    a2, s2, d2 = by.get(("adaptive", 2.0)), by.get(("strong", 2.0)), by.get(("admission", 2.0))
    if a2 is not None and s2 is not None and d2 is not None:
        strong, _, small = alone.values()
        halfway = small + (strong - small) / 2
        goals["at_2x"] = {
            "adaptive_within_slo": a2["within_slo"],
            "adaptive_accuracy": a2["accuracy"],
            "halfway_accuracy": round(halfway, 4),
            "strong_within_slo": s2["within_slo"],
            "admission_shed": d2["shed"],
            "met": a2["within_slo"] >= 0.99 and a2["accuracy"] >= halfway,
        }
    a05, s05 = by.get(("adaptive", 0.5)), by.get(("strong", 0.5))
    if a05 is not None and s05 is not None:
        goals["at_0.5x"] = {
            "within_slo": [s05["within_slo"], a05["within_slo"]],
            "accuracy": [s05["accuracy"], a05["accuracy"]],
            "p50_ms": [s05["p50_ms"], a05["p50_ms"]],
            "strong_share": a05.get("answered_by", {}).get(next(iter(alone)), 0)
            / max(a05["sent"], 1),
        }
    return goals


def render(result: dict[str, Any]) -> str:
    m = result["models"]
    alone = result["alone"]
    lines = [
        f"strong {m['strong']} (accuracy {alone[m['strong']]:.3f}, {result['strong_slots']} "
        f"slots, capacity {result['capacity_rps']:.2f} req/s), medium {m['medium']} "
        f"({alone[m['medium']]:.3f}), small {m['small']} ({alone[m['small']]:.3f}); "
        f"SLO {result['slo_s']:.0f} s, {result['duration_s']:.0f} s per load",
    ]
    head = (
        f"{'load':>5} {'policy':<10} {'sent':>6} {'in SLO':>7} {'shed':>6} {'acc':>6} "
        f"{'p50 ms':>9} {'p99 ms':>9} {'trips':>5}  answered by (strong/medium/small)"
    )
    lines += [head, "-" * len(head)]
    for a in result["arms"]:
        by = a.get("answered_by")
        mix = "/".join(str(by[n]) for n in (m["strong"], m["medium"], m["small"])) if by else ""
        lines.append(
            f"{a['load']:>5g} {a['policy']:<10} {a['sent']:>6} {a['within_slo']:>7.3f} "
            f"{a['shed']:>6.3f} {a['accuracy']:>6.3f} {a['p50_ms']:>9.0f} {a['p99_ms']:>9.0f} "
            f"{a.get('trips', ''):>5}  {mix}"
        )
    g = result["goals"].get("at_2x")
    if g:
        lines.append(
            f"\n{'MET' if g['met'] else 'NOT MET'}: at 2x adaptive answers "
            f"{g['adaptive_within_slo']:.3f} within the SLO (goal >= 0.99) with accuracy "
            f"{g['adaptive_accuracy']:.3f} (goal >= {g['halfway_accuracy']:.3f}); strong alone "
            f"{g['strong_within_slo']:.3f} within the SLO; admission control sheds "
            f"{g['admission_shed']:.3f}"
        )
    return "\n".join(lines)
