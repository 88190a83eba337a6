"""``critpath bench``: benchmarks found by name in the package, peers skipped when absent.

These check the command's plumbing with tiny runs; the benchmarks' figures are in
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from critpath.bench import BENCHMARKS, load, names, peers
from critpath.cli import main
from critpath.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_benchmark_loads() -> None:
    assert names() == sorted(BENCHMARKS)
    for name in names():
        bench = load(name)
        assert bench.name == name
        assert callable(bench.run)
        assert callable(bench.render)
        assert callable(bench.add_arguments)
    assert load("cascade").virtual_time
    assert load("speculation").virtual_time
    assert not load("runtime").virtual_time


@pytest.mark.parametrize(
    "name", ["nope", "../runtime", "../../x", "/tmp/x.py", "runtime.py", "_sse_server", "plots"]
)
def test_only_registered_names_load(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"available: adapter, .*cascade"):
        load(name)
    assert main(["bench", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert f"unknown benchmark {name!r}; available: " + ", ".join(names()) in err


def test_bench_without_a_name_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench"]) == 0
    assert capsys.readouterr().out.strip() == "benchmarks: " + ", ".join(names())


def test_a_stray_benchmarks_package_is_never_run(tmp_path: Path) -> None:
    stray = tmp_path / "benchmarks"
    stray.mkdir()
    marker = tmp_path / "ran"
    for name in ("__init__", "runtime"):
        (stray / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    done = subprocess.run(
        [sys.executable, "-m", "critpath.cli", "bench", "runtime", "--help"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--langgraph-reps" in done.stdout
    assert not marker.exists()


def _without(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = peers.installed
    monkeypatch.setattr(peers, "installed", lambda m: m != module and real(m))


def test_runtime_reports_langgraph_skipped_when_not_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _without("langgraph", monkeypatch)
    tiny = ["--steps", "40", "--reps", "2", "--langgraph-reps", "1", "--dags", "1",
            "--dag-steps", "4"]  # fmt: skip
    assert main(["bench", "runtime", "--json", *tiny]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["langgraph"] == {"skipped": "not installed"}
    assert result["runs"]["langgraph"] == 0
    assert "langgraph_ms" not in result["barrier_dag"]
    assert result["overhead_us_per_step"] > 0
    assert main(["bench", "runtime", *tiny]) == 0
    assert "LangGraph: skipped (not installed)" in capsys.readouterr().out


def test_adapter_reports_openai_skipped_when_not_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _without("openai", monkeypatch)
    tiny = ["--requests", "4", "--concurrency", "2", "--rounds", "1", "--max-tokens", "4"]
    assert main(["bench", "adapter", "--json", *tiny]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["openai"] == {"skipped": "not installed"}
    assert "ratio_vs_openai_client" not in result
    assert result["critpath_rps"] > 0


def test_recorded_data_is_found_by_path_env_or_beside_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from critpath.strategies.data import recorded_dir

    dataset = tmp_path / "mmlu_pro"
    dataset.mkdir()
    (dataset / "questions.jsonl").write_text("")
    assert recorded_dir(dataset) == dataset
    assert recorded_dir(tmp_path) == dataset  # a folder holding the set
    monkeypatch.setenv("CRITPATH_DATA", str(tmp_path))
    assert recorded_dir() == dataset
    monkeypatch.delenv("CRITPATH_DATA")
    monkeypatch.chdir(tmp_path)
    beside = ROOT.parent / "shared" / "data"  # beside the checkout, as in the main one
    if (beside / "mmlu_pro" / "questions.jsonl").is_file():
        assert recorded_dir() == beside / "mmlu_pro"
    else:
        with pytest.raises(ConfigError, match="pass --data DIR") as info:
            recorded_dir()
        assert str(beside) in str(info.value)
