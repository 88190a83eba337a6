"""``critpath demo``: the README's first command, on the simulated fleet and over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from critpath.adapters.sim import Fleet, SimServer
from critpath.demo import DemoOptions, render, run_demo

ROOT = Path(__file__).resolve().parents[1]


def _demo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "critpath.cli", "demo", *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=check,
    )  # fmt: skip


def test_demo_prints_strategies_the_agent_report_and_writes_the_timeline(tmp_path: Path) -> None:
    out = tmp_path / "timeline.html"
    text = _demo("--questions", "40", "--out", str(out), "--no-progress").stdout
    for name in ("small", "large", "cascade(small>large)", "vote(all)", "refine(small>large)"):
        assert name in text
    assert "critical path:" in text
    assert str(out) in text
    html = out.read_text()
    assert html.lower().startswith("<!doctype html>")
    assert "<svg" in html


def test_demo_json_has_the_figures(tmp_path: Path) -> None:
    result: dict[str, Any] = json.loads(
        _demo("--json", "--questions", "40", "--out", str(tmp_path / "t.html")).stdout
    )
    rows = {r["name"]: r for r in result["strategies"]}
    assert len(rows) == 7
    assert result["time"] == "simulated"
    assert result["n_questions"] == 40
    for r in rows.values():
        assert {"p50", "p95"} <= set(r["latency_ms"])
        assert r["cost"] > 0
        assert 0 <= r["accuracy"] <= 1
    # fast-then-refine: the draft's first token long before the strong model's
    assert rows["refine(small>large)"]["ttft_ms"]["p50"] < rows["large"]["ttft_ms"]["p50"] / 5
    assert rows["refine(small>large)"]["accuracy"] == rows["large"]["accuracy"]
    assert rows["vote(all)"]["calls_per_query"] == 3
    agent = result["agent"]
    assert agent["critical_path"][-1] == "answer"
    assert 0 < agent["first_draft_ms"] < agent["makespan_ms"]
    assert "DB_URL" in agent["answer"]  # the strong model's revision is the final answer


def test_demo_rejects_a_model_without_a_server() -> None:
    done = _demo("--model", "x", check=False)
    assert done.returncode != 0
    assert "--base-url" in done.stderr


async def test_demo_runs_against_an_openai_compatible_server(tmp_path: Path) -> None:
    fleet = Fleet.synthetic(("small", "large"), time_scale=0.01)
    async with SimServer(fleet) as server:
        opts = DemoOptions(questions=4, base_url=server.base_url, models=["small", "large"],
                           timeline=tmp_path / "t.html", progress=False)  # fmt: skip
        result = await run_demo(opts)
    assert result["time"] == "real"
    assert result["models"] == ["small", "large"]
    names = [r["name"] for r in result["strategies"]]
    assert names == ["small", "large", "cascade(small>large)", "refine(small>large)"]
    assert all(r["errors"] == 0 for r in result["strategies"])
    assert result["agent"]["makespan_ms"] > 0
    assert "critical path" in render(result)


@pytest.mark.skipif(
    not (Path(__file__).parents[2] / "shared" / "data" / "mmlu_pro").is_dir(),
    reason="no recorded data beside the checkout",
)
def test_demo_with_recorded_answers(tmp_path: Path) -> None:
    data = Path(__file__).parents[2] / "shared" / "data"
    result = json.loads(
        _demo("--json", "--data", str(data), "--questions", "300",
              "--out", str(tmp_path / "t.html")).stdout
    )  # fmt: skip
    names = [r["name"] for r in result["strategies"]]
    assert "gpt-4o-2024-05-13" in names
    assert "goals" in result


def test_the_strategies_are_named_once_for_demo_loadtest_and_the_chat_service() -> None:
    from critpath.cascades import Refine
    from critpath.demo.strategies import (
        DemoStrategy,
        StrategyKind,
        build_all,
        build_named,
        known_names,
        served_name,
    )
    from critpath.demo.tiers import simulated_tiers
    from critpath.errors import ConfigError

    sys.path.insert(0, str(ROOT))
    from examples.chatbot.app import MODEL_NAME

    models = simulated_tiers(2).models
    built = build_all(models)
    assert [s.key for s in built] == known_names(["small", "medium", "large"])
    assert [s.key for s in built][3:] == [s.value for s in DemoStrategy]
    assert [s.name for s in built][3:] == [
        "cascade(small>large)", "vote(all)", "vote(cheaper)>large", "refine(small>large)",
    ]  # fmt: skip
    assert [s.kind for s in built][3:] == ["cascade", "vote", "cascade", "refine"]
    refine = build_named("refine", models)
    assert refine.kind is StrategyKind.REFINE
    assert isinstance(refine.runnable, Refine)
    assert build_named("large", models).runnable is models[-1]
    with pytest.raises(ConfigError, match="known: small, medium, large, cascade"):
        build_named("teleport", models)
    with pytest.raises(ConfigError, match="needs 3 models"):
        build_named("vote", models[:2])
    assert known_names(["a", "b"]) == ["a", "b", "cascade", "refine"]
    assert served_name(DemoStrategy.REFINE) == MODEL_NAME
