"""Replay recorded answers through strategies on the simulated fleet, in virtual time.

``Replay(data_dir, strategies).run()`` (inside a ``VirtualTimeLoop``: use
``replay_sync``) asks every question of a recorded data set (the format of
``shared/data/mmlu_pro``) of every strategy — each model alone, cascades, votes,
vote-then-escalate, fast-then-refine — through the real ``Cascade``/``Vote``/``Refine``
code over ``SimulatedModel``s whose latency comes from each model's size profile and
whose answers are the recorded ones. Virtual time makes a replay of thousands of
questions take seconds while every timing (TTFT, early quorum, hedged escalation)
stays exact in simulated seconds.

Answers are read with the data set's answer kind (``recorded.dataset_kind``: its
``dataset.json``, else choice for questions with options): a reply's final answer is
extracted, votes group equivalent answers, and an answer is right when it is
equivalent to the question's (``0.5`` = ``\\frac12`` for math). Each model's rows
also carry strict string match, the lower bound.

How it is fair:

- Questions are split by a hash of their id: ``calibration_fraction`` of them fit
  everything that is fit (which models a selector picks, cascade thresholds, vote
  weights) and warm up the learned latencies; the rest evaluate. Both are reported.
- Questions are asked one at a time (each strategy sees an idle fleet): the figures
  are a strategy's own latency, not queueing behind other users.
- Cost: every token streamed counts, including those of calls cancelled midway (early
  quorum's stragglers, losing tiers). Prices are USD per million tokens from
  ``models.json`` (``price_in``, ``price_out``) when given, else ``DEFAULT_PRICES``
  by size — an assumption, stated so, for comparing strategies with each other.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from critpath.adapters.completion import complete
from critpath.adapters.logs import get_logger
from critpath.adapters.protocol import Model, ModelRequest, make_request
from critpath.adapters.sim.answers import (
    LETTERS,
    Answer,
    FunctionAnswers,
    Question,
    RecordedAnswers,
)
from critpath.adapters.sim.clock import run_virtual
from critpath.adapters.sim.model import SimulatedModel
from critpath.adapters.sim.profiles import PROFILES, profile_for_params
from critpath.adapters.wrapper import WrapperModel
from critpath.cascades.answers import AnswerKind, AnswerKindLike, as_kind
from critpath.cascades.cascade import Cascade, Tier
from critpath.cascades.decider import Decider
from critpath.cascades.decisions import Score, accept, fit_threshold
from critpath.cascades.refine import Refine
from critpath.cascades.scorers import (
    AbstentionScorer,
    AgreementScorer,
    Candidate,
    LogprobScorer,
    Scorer,
)
from critpath.cascades.vote import Vote
from critpath.errors import ConfigError, ModelError
from critpath.strategies.evaluate import ROW_KEYS, Metered, Outcome, ask, ms, summarise
from critpath.strategies.recorded import dataset_kind, readability, strict_accuracy, warnings
from critpath.strategies.spec import (
    CascadeSpec,
    ModelRef,
    RefineSpec,
    Select,
    SingleSpec,
    StrategiesFile,
    StrategySpec,
    TierSpec,
    VoteSpec,
)

__all__ = [
    "DEFAULT_PRICES",
    "ModelInfo",
    "Outcome",
    "Replay",
    "goals",
    "in_calibration",
    "price_of",
    "replay_sync",
    "summarise",
]

_log = get_logger(__name__)

DEFAULT_PRICES: tuple[tuple[float, float, float], ...] = (
    (10.0, 0.05, 0.20),
    (40.0, 0.20, 0.60),
    (150.0, 0.60, 0.90),
    (math.inf, 2.00, 8.00),
)
"""``(up to params_b, USD per 1M input tokens, per 1M output tokens)`` by size; hosted
models of unknown size pay the last row. An assumption for comparing strategies (list
prices vary by provider and month), not anyone's price list."""

_MAX_TOKENS = 4096


def price_of(params_b: float | None, info: dict[str, object]) -> tuple[float, float]:
    """USD per 1M (input, output) tokens: ``models.json``'s ``price_in``/``price_out``,
    else ``DEFAULT_PRICES`` by size."""
    size = math.inf if params_b is None else params_b
    default = next((i, o) for cap, i, o in DEFAULT_PRICES if size <= cap)
    pin, pout = info.get("price_in"), info.get("price_out")
    return (
        float(pin) if isinstance(pin, int | float) else default[0],
        float(pout) if isinstance(pout, int | float) else default[1],
    )


def _sample_key(question_id: str) -> bytes:
    return hashlib.blake2b(b"sample:" + question_id.encode(), digest_size=8).digest()


def in_calibration(question_id: str, fraction: float, split_seed: int = 0) -> bool:
    """Whether a question belongs to the calibration split (stable hash of its id;
    another ``split_seed`` draws another split)."""
    key = (f"{split_seed}:" if split_seed else "") + question_id
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


# ---- the catalog of models ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A recorded model as measured alone on the calibration split."""

    name: str
    params_b: float | None
    accuracy: float
    p50: float
    profile: str


@dataclass(slots=True)
class _Built:
    name: str
    kind: str
    runnable: Model
    models: list[str]
    fits: list[str] = field(default_factory=list)
    spec: StrategySpec | None = None


class Replay:
    """One benchmark run (see the module docstring). ``limit``: use only ``limit``
    questions, a fixed sample spread over the file (by a hash of their ids);
    ``stream_interval``: tokens per simulated chunk (1 is exact per token; 16 is 16x
    cheaper and keeps TTFT and end-to-end times exact); ``progress(done, total,
    label)`` is called as it goes; ``kind``: read answers with this kind instead of
    the data set's own."""

    def __init__(
        self,
        data_dir: str | Path,
        strategies: StrategiesFile,
        *,
        limit: int | None = None,
        seed: int = 0,
        split_seed: int = 0,
        stream_interval: int = 16,
        progress: Callable[[int, int, str], None] | None = None,
        kind: AnswerKindLike = None,
    ) -> None:
        self.answers = RecordedAnswers(data_dir)
        self.kind: AnswerKind = dataset_kind(self.answers) if kind is None else as_kind(kind)
        self.answers.reader = self.kind
        self.spec = strategies
        self.seed = seed
        self.split_seed = split_seed
        self.stream_interval = stream_interval
        self.progress = progress
        questions = self.answers.questions
        if limit is not None and limit < 1:
            raise ConfigError(f"limit must be >= 1 question, got {limit}")
        if (
            limit is not None
        ):  # a sample spread over the whole set (files are often sorted by topic)
            keep = set(sorted((q.id for q in questions), key=_sample_key)[:limit])
            questions = [q for q in questions if q.id in keep]
        f = strategies.calibration_fraction
        self.calibration = [q for q in questions if in_calibration(q.id, f, split_seed)]
        self.evaluation = [q for q in questions if not in_calibration(q.id, f, split_seed)]
        if not self.calibration or not self.evaluation:
            raise ConfigError(
                f"{len(questions)} questions give an empty calibration or evaluation split; "
                "use more questions"
            )
        self._questions = {q.id: q for q in self.answers.questions}
        self.model_names = self.answers.available_models()
        if not self.model_names:
            raise ConfigError(f"no responses/*.jsonl in {data_dir}")
        for name in self.model_names:
            self.answers.responses(name)  # fail now, clearly, on a bad file
        self.models: dict[str, Metered] = {}
        self.fresh_fleet()
        self.catalog: dict[str, ModelInfo] = {}
        self._done = 0
        self._total = 0

    def fresh_fleet(self) -> None:
        """New, idle replicas of every model. Each strategy gets its own, so two
        strategies that send the same requests in the same order see the same latency
        draws (early quorum and waiting for all voters differ only in what they do)."""
        self.models = {}
        for name in self.model_names:
            params = self.answers.params_b(name)
            self.models[name] = self._metered(
                SimulatedModel(
                    name,
                    profile=profile_for_params(params),
                    answers=self.answers,
                    seed=self.seed,
                    stream_interval=self.stream_interval,
                ),
                params,
                name,
            )

    def _metered(self, model: SimulatedModel, params: float | None, base: str) -> Metered:
        pin, pout = price_of(params, self.answers.models.get(base, {}))
        return Metered(model, pin, pout)

    # ---- asking ----------------------------------------------------------------------

    @staticmethod
    def request_for(q: Question) -> ModelRequest:
        content = q.text
        if q.options:
            options = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(q.options))
            content = f"{q.text}\n\nOptions:\n{options}"
        return make_request(
            messages=[{"role": "user", "content": content}],
            max_tokens=_MAX_TOKENS,
            extra_body={"question_id": q.id},
            request_id=f"q-{q.id}",
        )

    async def ask(self, runnable: Model, q: Question) -> Outcome:
        outcome = await ask(runnable, self.request_for(q), q.answer, question=q.id, kind=self.kind)
        self._done += 1
        if self.progress is not None and (self._done % 200 == 0 or self._done == self._total):
            self.progress(self._done, self._total, "")
        return outcome

    async def ask_all(self, runnable: Model, qs: Sequence[Question]) -> list[Outcome]:
        return [await self.ask(runnable, q) for q in qs]

    # ---- resolving selectors ---------------------------------------------------------

    def strongest(self) -> ModelInfo:
        return max(self.catalog.values(), key=lambda m: (m.accuracy, -m.p50))

    def resolve(self, ref: ModelRef) -> list[Model]:
        """The models a reference names (a selector may name several)."""
        if isinstance(ref, str):
            if ref not in self.models:
                raise ConfigError(f"no recorded model {ref!r}; the data has {self.model_names}")
            return [self.models[ref]]
        names = self.select(ref)
        if ref.profile is None:
            return [self.models[n] for n in names]
        return [self._with_profile(n, ref.profile) for n in names]

    def select(self, sel: Select) -> list[str]:
        best = self.strongest()
        if sel.select == "strongest":
            return [best.name]
        pool = [m for m in self.catalog.values() if not (sel.exclude_strongest and m is best)]
        if sel.faster_than is not None:
            pool = [m for m in pool if m.p50 <= sel.faster_than * best.p50]
        if sel.max_params_b is not None:
            pool = [m for m in pool if m.params_b is not None and m.params_b <= sel.max_params_b]
        if sel.select == "accurate":
            pool.sort(key=lambda m: (-m.accuracy, m.p50))
        else:
            pool.sort(key=lambda m: (m.p50, -m.accuracy))
        if len(pool) < sel.n:
            raise ConfigError(
                f"selector {sel.model_dump(exclude_defaults=True)} matched {len(pool)} "
                f"model(s), needs {sel.n}"
            )
        return [m.name for m in pool[: sel.n]]

    def _with_profile(self, name: str, profile: str) -> Model:
        if profile not in PROFILES:
            raise ConfigError(f"unknown profile {profile!r}; known: {sorted(PROFILES)}")
        alias = f"{name}@{profile}"
        if alias not in self.models:
            source = self.answers

            def as_base(_model: str, request: ModelRequest) -> Answer:
                return source.answer(name, request)

            sim = SimulatedModel(
                alias,
                profile=profile,
                answers=FunctionAnswers(as_base),
                seed=self.seed,
                stream_interval=self.stream_interval,
            )
            self.models[alias] = self._metered(sim, self.answers.params_b(name), name)
        return self.models[alias]

    # ---- building strategies ---------------------------------------------------------

    async def build(self, spec: StrategySpec) -> _Built:
        if isinstance(spec, SingleSpec):
            (model,) = self.resolve(spec.model)[:1]
            return _Built(spec.name or model.name, "single", model, [model.name], spec=spec)
        if isinstance(spec, VoteSpec):
            vote = self.build_vote(spec)
            return _Built(vote.name, "vote", vote, [m.name for m in vote.models], spec=spec)
        if isinstance(spec, RefineSpec):
            (draft,) = self.resolve(spec.draft)[:1]
            (strong,) = self.resolve(spec.strong)[:1]
            name = spec.name or f"refine({draft.name}>{strong.name})"
            return _Built(
                name, "refine", Refine(draft, strong), [draft.name, strong.name], spec=spec
            )
        return await self.build_cascade(spec)

    def build_vote(self, spec: VoteSpec) -> Vote:
        refs = spec.voters if isinstance(spec.voters, list) else [spec.voters]
        voters = [m for ref in refs for m in self.resolve(ref)]
        weights = None
        if spec.weights == "accuracy":
            # Optimal weights for independent voters: log((K - 1) p / (1 - p)); free-form
            # answers have no K: wrong answers rarely agree, taken as K = 2.
            k = len(LETTERS) if self.answers.questions[0].options else 2
            weights = []
            for m in voters:
                p = min(max(self.catalog[_base(m.name)].accuracy, 1e-3), 1 - 1e-3)
                weights.append(max(0.01, math.log((k - 1) * p / (1 - p))))
        name = spec.name or (
            ("vote" if spec.early_quorum else "vote-all")
            + "("
            + ",".join(m.name for m in voters)
            + ")"
        )
        return Vote(
            voters, kind=self.kind, weights=weights, quorum=spec.quorum,
            early_stop=spec.early_quorum, name=name,
        )  # fmt: skip

    def _tier_model(self, tier: TierSpec) -> Model:
        if isinstance(tier.model, VoteSpec):
            return self.build_vote(tier.model)
        return self.resolve(tier.model)[0]

    async def build_cascade(self, spec: CascadeSpec) -> _Built:
        models = [self._tier_model(t) for t in spec.tiers]
        scorers = [_scorer(t.scorer, self.kind) for t in spec.tiers]
        thresholds: list[float] = [0.0] * len(spec.tiers)
        fits: list[str] = []
        if any(
            t.threshold == "fit" and s is not None
            for t, s in zip(spec.tiers[:-1], scorers[:-1], strict=True)
        ):
            thresholds, fits = await self._fit(spec, models, scorers)
        else:
            thresholds = [
                t.threshold if isinstance(t.threshold, float | int) else 0.0 for t in spec.tiers
            ]
        tiers = [
            Tier(m, scorer=s, threshold=float(th), budget=t.budget_s, hedge=t.hedge)
            for m, s, th, t in zip(models, scorers, thresholds, spec.tiers, strict=True)
        ]
        cascade = Cascade(tiers, name=spec.name)
        used = [n for m in models for n in _leaf_names(m)]
        return _Built(cascade.name, "cascade", cascade, used, fits, spec=spec)

    async def _fit(
        self, spec: CascadeSpec, models: list[Model], scorers: list[Scorer | None]
    ) -> tuple[list[float], list[str]]:
        """Fit each tier's threshold on the calibration split, last tier first: a tier's
        escalated questions are scored by what the rest of the cascade answers."""
        qs = self.calibration
        per_tier: list[list[tuple[float, bool, bool]]] = []  # (confidence, correct, abstained)
        for model, scorer in zip(models, scorers, strict=True):
            rows = []
            for q in qs:
                request = self.request_for(q)
                result = None
                try:
                    if isinstance(model, Decider):
                        decided = await model.decide(request)
                        completion, result = decided.completion, decided
                    else:
                        completion = await complete(model, request)
                except ModelError:
                    rows.append((0.0, False, True))
                    continue
                correct = self.kind.correct(self.kind.extract(completion.text), q.answer)
                if scorer is None:
                    rows.append((1.0, correct, False))
                    continue
                score = await scorer.score(Candidate(request, completion, result))
                conf = score.confidence if score.confidence is not None else 0.0
                rows.append((conf, correct, score.abstained))
            per_tier.append(rows)
        n = len(spec.tiers)
        thresholds: list[float] = [0.0] * n
        fits: list[str] = []
        rest = [c for _, c, _ in per_tier[-1]]
        for i in range(n - 2, -1, -1):
            t, rows = spec.tiers[i], per_tier[i]
            if t.threshold == "fit" and scorers[i] is not None:
                fit = fit_threshold([(c, ok) for c, ok, _ in rows], next_correct=rest)
                thresholds[i] = fit.threshold
                fits.append(
                    f"tier {i} ({models[i].name}): threshold {fit.threshold:.3f}, "
                    f"accepts {fit.accept_rate:.1%} of calibration answers: "
                    f"{fit.description}"
                )
            else:
                thresholds[i] = float(t.threshold) if t.threshold != "fit" else 0.0
            rest = [
                ok if accept(Score(c, abstained=ab), thresholds[i]).accepted else r
                for (c, ok, ab), r in zip(rows, rest, strict=True)
            ]
        fits.reverse()
        return thresholds, fits

    # ---- the whole run ---------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        n_cal, n_eval = len(self.calibration), len(self.evaluation)
        specs = list(self.spec.strategies)
        self._total = len(self.model_names) * (n_cal + (n_eval if self.spec.singles else 0))
        self._total += len(specs) * (n_cal + n_eval)
        rows: list[dict[str, Any]] = []
        unreadable = readability(self.answers, self.kind, self.model_names)
        alarms = warnings(str(self.answers.directory), self.kind, unreadable)
        for alarm in alarms:
            _log.warning("%s", alarm)
        # Every model alone on the calibration split: the catalog selectors read.
        singles: dict[str, list[Outcome]] = {}
        for name in self.model_names:
            outs = await self.ask_all(self.models[name], self.calibration)
            singles[name] = outs
            s = summarise(outs)
            params = self.answers.params_b(name)
            profile = "api" if params is None else _profile_name(params)
            p50 = s["latency_ms"]["p50"] / 1000
            self.catalog[name] = ModelInfo(name, params, s["accuracy"], p50, profile)
        if all(m.accuracy == 0 for m in self.catalog.values()):
            raise ConfigError(
                f"{self.answers.directory}: every model scores 0 reading answers as "
                f"{self.kind.name}: no recorded answer is equivalent to its question's; "
                "check answer_kind in dataset.json"
            )
        if self.spec.singles:
            for name in self.model_names:
                outs = await self.ask_all(self.models[name], self.evaluation)
                row = self._row(name, "single", [name], outs, singles[name], [])
                row["strict_accuracy"] = strict_accuracy(self.kind, outs, self._questions)
                row["unreadable"] = unreadable.get(name, 0.0)
                rows.append(row)
        skipped: list[dict[str, str]] = []
        for spec in specs:
            self.fresh_fleet()
            try:
                built = await self.build(spec)
            except ConfigError as exc:
                skipped.append({"name": spec.name or spec.kind, "reason": str(exc)})
                self._total -= n_cal + n_eval
                continue
            cal = await self.ask_all(built.runnable, self.calibration)
            ev = await self.ask_all(built.runnable, self.evaluation)
            row = self._row(built.name, built.kind, built.models, ev, cal, built.fits)
            if isinstance(spec, VoteSpec):
                row["early_quorum"] = spec.early_quorum
                row["stopped_early"] = round(sum(o.detail == "early" for o in ev) / len(ev), 4)
            if isinstance(spec, CascadeSpec):
                by = Counter(o.detail for o in ev)
                row["answered_by_tier"] = {k: round(v / len(ev), 4) for k, v in sorted(by.items())}
            if isinstance(spec, RefineSpec):
                row["refine_changed"] = round(sum(o.detail == "changed" for o in ev) / len(ev), 4)
            rows.append(row)
        return {
            "dataset": str(self.answers.directory),
            "answer_kind": self.kind.name,
            "n_eval": n_eval,
            "n_calibration": n_cal,
            "calibration_fraction": self.spec.calibration_fraction,
            "split_seed": self.split_seed,
            "seed": self.seed,
            "strategies": rows,
            "skipped": skipped,
            "catalog": [
                {
                    "name": m.name,
                    "params_b": m.params_b,
                    "profile": m.profile,
                    "calibration_accuracy": m.accuracy,
                    "calibration_p50_ms": ms(m.p50),
                }
                for m in sorted(self.catalog.values(), key=lambda m: -m.accuracy)
            ],
            "goals": goals(rows),
            "warnings": alarms,
        }

    def _row(
        self,
        name: str,
        kind: str,
        models: list[str],
        ev: list[Outcome],
        cal: list[Outcome],
        fits: list[str],
    ) -> dict[str, Any]:
        s = summarise(ev)
        c = summarise(cal)
        row: dict[str, Any] = {"name": name, "kind": kind, "models": models}
        row |= {k: s[k] for k in ROW_KEYS}
        row["calibration"] = {k: c[k] for k in ("n", "accuracy", "latency_ms", "ttft_ms", "cost")}
        if fits:
            row["fit"] = fits
        return row


def _profile_name(params_b: float) -> str:
    return next(k for k, v in PROFILES.items() if v is profile_for_params(params_b))


def _base(name: str) -> str:
    return name.split("@", 1)[0]


def _leaf_names(model: Model) -> list[str]:
    """The recorded models a tier's model asks (a vote's voters; a metered model's own)."""
    if isinstance(model, WrapperModel):
        return [leaf.name for leaf in model.leaves()]
    return [model.name]


def _scorer(which: str, kind: AnswerKind) -> Scorer | None:
    if which == "abstention":
        return AbstentionScorer(kind)
    if which == "agreement":
        return AgreementScorer()
    if which == "logprob":
        return LogprobScorer(kind)
    return None


# ---- goals ----------------------------------------------------------------------------


def goals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Four goals, checked on the evaluation split: accuracy at half the latency
    (``fast_equal``), near accuracy at a quarter (``faster_near``), the tail latency
    early quorum saves (``quorum_tail``) and the first token a draft gives early
    (``refine_ttft``). The figures reached are in docs/BENCHMARKS.md.

    The reference is the most accurate single model. ``fast_equal``: strategies at >= its
    accuracy with <= 50% of its p50; ``faster_near``: >= 95% of its accuracy with <= 25%
    of its p50; ``quorum_tail``: each early-quorum vote's p99 over its wait-for-all twin's
    (same voters) at equal accuracy; ``refine_ttft``: each refine's first draft token p50
    over its strong model's TTFT p50 alone.
    """
    singles = [r for r in rows if r["kind"] == "single"]
    if not singles:
        return {}
    ref = max(singles, key=lambda r: (r["accuracy"], -r["latency_ms"]["p50"]))
    acc, p50 = ref["accuracy"], ref["latency_ms"]["p50"]
    others = [r for r in rows if r is not ref]

    def matching(acc_x: float, p50_x: float) -> list[dict[str, Any]]:
        found = [
            {
                "name": r["name"],
                "kind": r["kind"],
                "accuracy": r["accuracy"],
                "p50_ratio": round(r["latency_ms"]["p50"] / p50, 4),
            }
            for r in others
            if r["accuracy"] >= acc_x * acc - 1e-12 and r["latency_ms"]["p50"] <= p50_x * p50
        ]
        return sorted(found, key=lambda f: (-f["accuracy"], f["p50_ratio"]))

    fast_equal = matching(1.0, 0.5)
    faster_near = matching(0.95, 0.25)
    quorum = []
    votes = [r for r in rows if r["kind"] == "vote"]
    for r in votes:
        if not r.get("early_quorum"):
            continue
        twin = next(
            (v for v in votes if not v.get("early_quorum") and v["models"] == r["models"]), None
        )
        if twin is None:
            continue
        quorum.append(
            {
                "vote": r["name"],
                "p99_ratio": round(r["latency_ms"]["p99"] / twin["latency_ms"]["p99"], 4),
                "p50_ratio": round(r["latency_ms"]["p50"] / twin["latency_ms"]["p50"], 4),
                "accuracy": r["accuracy"],
                "accuracy_wait_all": twin["accuracy"],
            }
        )
    refine = []
    by_name = {r["name"]: r for r in singles}
    for r in rows:
        if r["kind"] != "refine":
            continue
        strong = by_name.get(r["models"][1])
        if strong is None or not strong["ttft_ms"]["p50"]:
            continue
        refine.append(
            {
                "refine": r["name"],
                "ttft_ratio": round(r["ttft_ms"]["p50"] / strong["ttft_ms"]["p50"], 4),
                "draft_ttft_ms": r["ttft_ms"]["p50"],
                "strong_ttft_ms": strong["ttft_ms"]["p50"],
                "accuracy": r["accuracy"],
            }
        )
    return {
        "reference": {
            "name": ref["name"],
            "accuracy": acc,
            "p50_ms": p50,
            "ttft_p50_ms": ref["ttft_ms"]["p50"],
        },
        "fast_equal": {
            "target": "accuracy >= reference, p50 <= 0.5x",
            "met": bool(fast_equal),
            "strategies": fast_equal,
        },
        "faster_near": {
            "target": "accuracy >= 0.95x reference, p50 <= 0.25x",
            "met": bool(faster_near),
            "strategies": faster_near,
        },
        "quorum_tail": {
            "target": "early-quorum p99 <= 0.7x wait-for-all p99, equal accuracy",
            "met": any(
                v["p99_ratio"] <= 0.7 and v["accuracy"] >= v["accuracy_wait_all"] for v in quorum
            ),
            "votes": quorum,
        },
        "refine_ttft": {
            "target": "first draft token p50 <= 0.2x the strong model's TTFT p50",
            "met": any(v["ttft_ratio"] <= 0.2 for v in refine),
            "refines": refine,
        },
    }


def replay_sync(
    data_dir: str | Path,
    strategies: StrategiesFile,
    **options: Any,
) -> dict[str, Any]:
    """Run a ``Replay`` to the end on a fresh virtual-time event loop."""

    async def main() -> dict[str, Any]:
        return await Replay(data_dir, strategies, **options).run()

    return run_virtual(main())
