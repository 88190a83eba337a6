"""Virtual time, the strategies file, and the recorded-answer replay behind
``critpath bench cascade``.

The replay tests build a small data set in the recorded format (questions, responses,
models.json) in a temporary folder, with answers chosen so the expected outcomes are
known: a slow, accurate hosted model; fast 7B models that agree when right; one that
abstains. Latency is simulated in virtual time, so these tests take no real time for
the simulated seconds.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from critpath.adapters import complete, make_request
from critpath.adapters.sim import LatencyProfile, SimulatedModel
from critpath.adapters.sim.clock import VirtualTimeLoop, run_virtual
from critpath.adapters.sim.model import _split
from critpath.bench.plots import Point, lines_svg, scatter_svg
from critpath.cascades import Cascade, Tier, Vote, fit_threshold
from critpath.errors import ConfigError
from critpath.strategies import (
    Replay,
    in_calibration,
    load_strategies,
    parse_strategies,
    price_of,
    replay_sync,
)

ROOT = Path(__file__).resolve().parents[1]

# ---- virtual time ---------------------------------------------------------------------


def test_virtual_time_jumps_to_the_next_timer_in_order() -> None:
    order: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        order.append((name, asyncio.get_running_loop().time()))

    async def main() -> None:
        await asyncio.gather(sleeper("late", 7200), sleeper("early", 60), sleeper("mid", 600))

    started = time.perf_counter()
    run_virtual(main())
    assert time.perf_counter() - started < 5  # two simulated hours, no real waiting
    assert [n for n, _ in order] == ["early", "mid", "late"]
    assert [t for _, t in order] == pytest.approx([60, 600, 7200])


def test_virtual_time_timeouts_and_threads_still_work() -> None:
    async def main() -> tuple[bool, int]:
        try:
            await asyncio.wait_for(asyncio.Event().wait(), timeout=30)
            timed_out = False
        except TimeoutError:
            timed_out = True
        value = await asyncio.to_thread(lambda: 41 + 1)
        return timed_out, value

    assert run_virtual(main()) == (True, 42)
    loop = VirtualTimeLoop(start=5.0)
    try:
        assert loop.time() == 5.0
        with pytest.raises(ValueError, match="backwards"):
            loop.advance(-1)
    finally:
        loop.close()


def test_simulated_latency_in_virtual_time_is_exact() -> None:
    profile = LatencyProfile(queue_s=0.5, prefill_per_token_s=0.0, ttft_sigma=0.0,
                             tpot_s=0.02, tpot_sigma=0.0, batch_slowdown=0.0)  # fmt: skip

    async def main() -> tuple[float | None, float, float]:
        model = SimulatedModel("m", profile=profile)
        c = await complete(model, make_request(prompt="q", max_tokens=41))
        return c.timings.ttft, c.timings.e2e, model.stats.e2e.quantile(0.5)

    ttft, e2e, learned = run_virtual(main())
    assert ttft == pytest.approx(0.5)
    assert e2e == pytest.approx(0.5 + 39 * 0.02)  # the default answer: 40 tokens
    assert learned == pytest.approx(e2e)  # stats measure on the loop's clock


# ---- the simulator's stream interval --------------------------------------------------


def test_stream_interval_groups_tokens_and_keeps_times() -> None:
    async def run(interval: int) -> tuple[list[str], float | None, float]:
        model = SimulatedModel("m", profile="7b", seed=3, stream_interval=interval)
        texts: list[str] = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        ttft = None
        async for chunk in model.stream(make_request(prompt="q", max_tokens=64, logprobs=True)):
            if chunk.text:
                ttft = ttft if ttft is not None else loop.time() - t0
                texts.append(chunk.text)
                assert chunk.logprobs is not None
                assert len(chunk.logprobs) == chunk.tokens
        return texts, ttft, loop.time() - t0

    one = run_virtual(run(1))
    many = run_virtual(run(16))
    assert "".join(one[0]) == "".join(many[0])
    assert len(one[0]) == 40
    assert len(many[0]) == 1 + 3
    assert many[1] == pytest.approx(one[1])
    assert many[2] == pytest.approx(one[2])
    with pytest.raises(ConfigError):
        SimulatedModel("m", stream_interval=0)


def test_split_never_starts_with_an_empty_piece() -> None:
    pieces = _split(" We refer to the text", 3)
    assert "".join(pieces) == " We refer to the text"
    assert pieces[0].startswith(" We")


# ---- cascade and vote options the replay uses -----------------------------------------


def test_fit_threshold_paired_uses_the_next_tiers_own_answers() -> None:
    # Low-confidence answers are wrong here, but the next tier is wrong on them too:
    # escalating them gains nothing, so the paired fit accepts everything, while the
    # average next-tier accuracy (0.75) would escalate them.
    pairs = [(0.9, True), (0.8, True), (0.3, False), (0.2, False)]
    next_correct = [True, True, False, False]
    paired = fit_threshold(pairs, next_correct=next_correct)
    average = fit_threshold(pairs, next_accuracy=0.75)
    assert paired.accept_rate == 1.0
    assert paired.objective == 0.5
    assert average.accept_rate == 0.5
    with pytest.raises(ConfigError):
        fit_threshold(pairs, next_correct=[True])
    with pytest.raises(ConfigError):
        fit_threshold(pairs, next_accuracy=0.5, next_correct=next_correct)


def test_vote_without_early_stop_waits_for_everyone_and_learns_its_latency() -> None:
    fast = LatencyProfile(0.1, 0.0, 0.0, 0.001, 0.0, batch_slowdown=0.0)
    slow = LatencyProfile(5.0, 0.0, 0.0, 0.001, 0.0, batch_slowdown=0.0)

    async def main() -> tuple[Any, Any, int]:
        models = [SimulatedModel("a", profile=fast), SimulatedModel("b", profile=fast),
                  SimulatedModel("c", profile=slow)]  # fmt: skip
        req = make_request(prompt="q", max_tokens=8)
        early = await Vote(models).decide(req)
        wait_all = Vote(models, early_stop=False)
        full = await wait_all.decide(req)
        return early, full, wait_all.stats.e2e.count

    early, full, learned = run_virtual(main())
    assert early.cancelled == (2,)
    assert early.elapsed < 1.0
    assert full.cancelled == ()
    assert full.elapsed >= 5.0
    assert full.winner == early.winner
    assert learned == 1


def test_tier_without_hedge_never_starts_the_next_early() -> None:
    a, b = SimulatedModel("a"), SimulatedModel("b")
    cascade = Cascade([Tier(a, budget=0.1, hedge=False), Tier(b)])
    assert cascade.budget_for(0) == (None, "hedging off")
    assert Cascade([Tier(a, budget=0.1), Tier(b)]).budget_for(0) == (0.1, "budget")


# ---- the strategies file --------------------------------------------------------------


def test_default_strategies_name_no_model() -> None:
    spec = load_strategies()
    assert spec.strategies
    assert spec.singles
    text = (ROOT / "critpath" / "strategies" / "default.json").read_text()
    for name in ("gpt", "gemini", "llama", "qwen"):
        assert name not in text


def test_invalid_strategies_are_config_errors_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"strategies\.0"):
        parse_strategies({"strategies": [{"kind": "vote"}]})
    with pytest.raises(ConfigError, match="calibration_fraction"):
        parse_strategies({"calibration_fraction": 1.5})
    with pytest.raises(ConfigError, match=r"strategies\.0"):
        parse_strategies({"strategies": [{"kind": "teleport", "model": "x"}]})
    bad = tmp_path / "s.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_strategies(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_strategies(tmp_path / "missing.json")


def test_calibration_split_is_stable_and_about_the_fraction() -> None:
    ids = [str(i) for i in range(4000)]
    picked = [i for i in ids if in_calibration(i, 0.3)]
    assert 0.27 < len(picked) / len(ids) < 0.33
    assert picked == [i for i in ids if in_calibration(i, 0.3)]
    assert picked != [i for i in ids if in_calibration(i, 0.3, split_seed=1)]


def test_prices_by_size_or_from_models_json() -> None:
    assert price_of(7, {}) == (0.05, 0.20)
    assert price_of(None, {}) == (2.0, 8.0)
    assert price_of(None, {"price_in": 1, "price_out": 3}) == (1.0, 3.0)


# ---- a replay on a hand-made data set --------------------------------------------------

N = 300
LETTERS = "ABCD"


def _make_data(root: Path) -> Path:
    """``strong`` (hosted, 85%, long answers), ``fast-a``/``fast-b``/``fast-c`` (7B, 60%,
    short, and agreeing when right), ``shy`` (3.8B, abstains on a third, ~47%)."""
    rng = random.Random(7)
    d = root / "set"
    (d / "responses").mkdir(parents=True)
    questions, responses = [], {m: [] for m in ("strong", "fast-a", "fast-b", "fast-c", "shy")}
    for i in range(N):
        qid, answer = f"q{i}", rng.choice(LETTERS)
        questions.append({"id": qid, "question": f"Question {i}?", "answer": answer,
                          "options": [f"option {c}" for c in LETTERS]})  # fmt: skip
        wrong = [c for c in LETTERS if c != answer]
        responses["strong"].append(
            {"id": qid, "pred": answer if rng.random() < 0.85 else wrong[0], "output_chars": 2400}
        )
        for m in ("fast-a", "fast-b", "fast-c"):
            pred = answer if rng.random() < 0.6 else rng.choice(wrong)
            responses[m].append({"id": qid, "pred": pred, "output_chars": rng.choice([80, 400])})
        shy = None if rng.random() < 0.33 else answer if rng.random() < 0.7 else wrong[1]
        responses["shy"].append({"id": qid, "pred": shy, "output_chars": 60})
    (d / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in questions))
    for m, rows in responses.items():
        (d / "responses" / f"{m}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    params = {"strong": None, "fast-a": 7, "fast-b": 7, "fast-c": 8, "shy": 3.8}
    (d / "models.json").write_text(json.dumps({m: {"params_b": p} for m, p in params.items()}))
    return d


STRATEGIES = {
    "calibration_fraction": 0.3,
    "strategies": [
        {"name": "vote", "kind": "vote",
         "voters": {"select": "accurate", "n": 3, "faster_than": 0.5, "max_params_b": 10}},
        {"name": "vote-all", "kind": "vote", "early_quorum": False,
         "voters": {"select": "accurate", "n": 3, "faster_than": 0.5, "max_params_b": 10}},
        {"name": "shy>strong", "kind": "cascade", "tiers": [
            {"model": "shy", "scorer": "abstention", "threshold": 0.5},
            {"model": {"select": "strongest"}}]},
        {"name": "vote>strong", "kind": "cascade", "tiers": [
            {"model": {"kind": "vote", "voters": ["fast-a", "fast-b", "fast-c"]},
             "scorer": "agreement", "threshold": "fit", "hedge": True},
            {"model": {"select": "strongest"}}]},
        {"name": "refine", "kind": "refine",
         "draft": {"select": "fastest", "max_params_b": 10, "profile": "local-8b"},
         "strong": {"select": "strongest"}},
        {"name": "impossible", "kind": "vote", "voters": {"select": "accurate", "n": 9}},
        {"name": "unknown", "kind": "single", "model": "no-such-model"},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = _make_data(tmp_path_factory.mktemp("recorded"))
    result = replay_sync(data, parse_strategies(STRATEGIES), stream_interval=8)
    result["_data"] = data
    return result


def _row(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in result["strategies"] if r["name"] == name)


def test_replay_reports_accuracy_and_latency_percentiles_of_every_model_and_strategy(
    replayed: dict[str, Any],
) -> None:
    assert replayed["n_eval"] + replayed["n_calibration"] == N
    names = [r["name"] for r in replayed["strategies"]]
    assert names[:5] == ["fast-a", "fast-b", "fast-c", "shy", "strong"]
    assert {"vote", "vote-all", "shy>strong", "vote>strong", "refine"} <= set(names)
    for r in replayed["strategies"]:
        assert set(r["latency_ms"]) == {"p50", "p95", "p99", "mean"}
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p95"] <= r["latency_ms"]["p99"]
        assert set(r["ttft_ms"]) == {"p50"}
        assert r["cost"] > 0
        assert r["calls_per_query"] >= 1
        assert 0 <= r["accuracy"] <= 1
        assert r["calibration"]["n"] == replayed["n_calibration"]
    skipped = {s["name"]: s["reason"] for s in replayed["skipped"]}
    assert "matched" in skipped["impossible"]
    assert "no-such-model" in skipped["unknown"]


def test_replayed_singles_score_as_recorded(replayed: dict[str, Any]) -> None:
    data: Path = replayed["_data"]
    truth = {json.loads(x)["id"]: json.loads(x)["answer"]
             for x in (data / "questions.jsonl").read_text().splitlines()}  # fmt: skip
    fraction = replayed["calibration_fraction"]
    for model in ("strong", "fast-a", "shy"):
        rows = [
            json.loads(x) for x in (data / "responses" / f"{model}.jsonl").read_text().splitlines()
        ]
        ev = [r for r in rows if not in_calibration(r["id"], fraction)]
        expected = sum(r["pred"] == truth[r["id"]] for r in ev) / len(ev)
        assert _row(replayed, model)["accuracy"] == pytest.approx(expected, abs=1e-4)
    strong, fast = _row(replayed, "strong"), _row(replayed, "fast-a")
    assert strong["latency_ms"]["p50"] > 5 * fast["latency_ms"]["p50"]  # 600 vs <=100 tokens


def test_replayed_strategies_behave_as_designed(replayed: dict[str, Any]) -> None:
    vote, wait_all = _row(replayed, "vote"), _row(replayed, "vote-all")
    assert vote["models"] == wait_all["models"]  # ordered by calibration accuracy
    assert sorted(vote["models"]) == ["fast-a", "fast-b", "fast-c"]
    assert vote["accuracy"] == wait_all["accuracy"]  # early quorum never changes the winner
    assert vote["latency_ms"]["p99"] <= wait_all["latency_ms"]["p99"]
    assert vote["stopped_early"] > 0.3
    assert wait_all["stopped_early"] == 0
    assert vote["cost"] < wait_all["cost"]  # cancelled stragglers stop costing
    shy = _row(replayed, "shy>strong")
    assert 0.5 < shy["answered_by_tier"]["tier0"] < 0.8  # escalates only the abstentions
    assert shy["accuracy"] > _row(replayed, "shy")["accuracy"]
    cascade = _row(replayed, "vote>strong")
    assert cascade["fit"]
    assert "threshold" in cascade["fit"][0]
    assert cascade["accuracy"] >= vote["accuracy"]
    refine, strong = _row(replayed, "refine"), _row(replayed, "strong")
    assert refine["models"][1] == "strong"
    assert refine["models"][0].endswith("@local-8b")
    assert refine["accuracy"] == strong["accuracy"]  # the strong model's answer is final
    assert refine["ttft_ms"]["p50"] < 0.2 * strong["ttft_ms"]["p50"]
    assert refine["calls_per_query"] == 2


def test_goals_are_checked_against_the_most_accurate_single(replayed: dict[str, Any]) -> None:
    goals = replayed["goals"]
    assert goals["reference"]["name"] == "strong"
    quorum = {v["vote"]: v for v in goals["quorum_tail"]["votes"]}
    assert quorum["vote"]["p99_ratio"] <= 1.0
    assert goals["refine_ttft"]["met"] is True
    for key in ("fast_equal", "faster_near"):
        for s in goals[key]["strategies"]:
            assert s["p50_ratio"] <= (0.5 if key == "fast_equal" else 0.25)


def test_replay_needs_both_splits(tmp_path: Path) -> None:
    data = _make_data(tmp_path)
    with pytest.raises(ConfigError, match="empty calibration or evaluation"):
        Replay(data, parse_strategies({}), limit=1)
    with pytest.raises(ConfigError, match=r"questions\.jsonl"):
        Replay(tmp_path / "nowhere", parse_strategies({}))


def test_bench_cascade_command_writes_json_and_a_plot(tmp_path: Path) -> None:
    data = _make_data(tmp_path)
    strategies = tmp_path / "s.json"
    strategies.write_text(json.dumps({"strategies": STRATEGIES["strategies"][:2]}))
    plot = tmp_path / "plot.svg"
    out = subprocess.run(
        [sys.executable, "-m", "critpath.cli", "bench", "cascade", "--data", str(data),
         "--strategies", str(strategies), "--plot", str(plot), "--json", "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert {"dataset", "n_eval", "strategies"} <= set(result)
    assert {"name", "accuracy", "latency_ms", "ttft_ms", "cost", "calls_per_query"} <= set(
        result["strategies"][0]
    )
    svg = plot.read_text()
    assert svg.startswith("<svg")
    assert ">vote</text>" in svg
    assert result["plot"] == str(plot)


# ---- plots ----------------------------------------------------------------------------


def test_plots_label_every_point_and_reject_empty_input() -> None:
    svg = scatter_svg([Point("a & b", 120.0, 0.7, "vote"), Point("c", 9000.0, 0.72, "single")],
                      title="t", x_label="ms", y_label="acc")  # fmt: skip
    assert "a &amp; b</text>" in svg
    assert "c</text>" in svg
    assert ">vote</text>" in svg
    line = lines_svg({"p99": [(1.0, 100.0), (2.0, 250.0)]}, title="t", x_label="rate",
                     y_label="ms")  # fmt: skip
    assert "<polyline" in line
    assert ">p99</text>" in line
    with pytest.raises(ConfigError):
        scatter_svg([], title="t", x_label="x", y_label="y")
    with pytest.raises(ConfigError):
        lines_svg({"x": [(1.0, -1.0)]}, title="t", x_label="x", y_label="y")
    # one decade only, or a single point, still draws (no division by zero)
    assert "<polyline" in lines_svg({"a": [(1, 100.0), (2, 100.0)]}, title="t", x_label="x",
                                    y_label="y")  # fmt: skip
    assert "<circle" in scatter_svg([Point("a", 1000.0, 0.5)], title="t", x_label="x",
                                    y_label="y")  # fmt: skip
