"""``critpath loadtest``: open-loop arrivals, bounds, summaries, targets, the command."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from critpath.adapters.sim.clock import run_virtual
from critpath.errors import ConfigError
from critpath.loadtest import (
    ChatTarget,
    OpenAITarget,
    Sample,
    poisson_arrivals,
    run_load,
    summarise_samples,
)
from critpath.loadtest.targets import loopback_url
from critpath.serve.asgi import AppServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.chatbot import ChatConfig, create_app  # noqa: E402


class Slow:
    """A target that takes ``seconds`` (or forever for request ``stuck``)."""

    name = "slow"

    def __init__(self, seconds: float, stuck: int = -1) -> None:
        self.seconds = seconds
        self.stuck = stuck
        self.started: list[float] = []
        self.cancelled = 0

    async def __call__(self, i: int) -> float | None:
        self.started.append(asyncio.get_running_loop().time())
        try:
            if i == self.stuck:
                await asyncio.Event().wait()
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if i % 10 == 9:
            raise RuntimeError("every tenth fails")
        return self.seconds / 10


def test_arrivals_are_poisson_and_bounded() -> None:
    times = poisson_arrivals(50.0, max_requests=5000, duration=1e9, seed=3)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    mean = sum(gaps) / len(gaps)
    assert mean == pytest.approx(1 / 50, rel=0.05)
    assert sum(g > 3 * mean for g in gaps) / len(gaps) == pytest.approx(0.0498, abs=0.01)
    assert poisson_arrivals(50.0, max_requests=5000, duration=2.0)[-1] < 2.0
    with pytest.raises(ConfigError):
        poisson_arrivals(0.0, max_requests=1, duration=1)


def test_the_load_is_open_loop_bounded_and_leaves_nothing_behind() -> None:
    target = Slow(seconds=5.0, stuck=3)  # each answer takes far longer than the gaps

    async def main() -> tuple[list[Sample], float, list[float], int]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        result = await run_load(target, 10.0, max_requests=40, duration=60, drain_s=20, seed=1)
        me = asyncio.current_task()
        stray = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        return list(result.samples), result.wall_s, [t - t0 for t in target.started], len(stray)

    samples, wall, started, stray = run_virtual(main())
    arrivals = poisson_arrivals(10.0, max_requests=40, duration=60, seed=1)
    assert started == pytest.approx(arrivals)  # sent on schedule, not after answers
    assert len(samples) == 40
    assert stray == 0
    unfinished = [s for s in samples if s.error and s.error.startswith("unfinished")]
    assert len(unfinished) == 1
    assert target.cancelled == 1
    failed = [s for s in samples if s.error and s.error.startswith("RuntimeError")]
    assert len(failed) == 4
    summary = summarise_samples(samples, wall_s=wall, slo_s=6.0)
    assert summary["completed"] == 35
    assert summary["errors"] == 5
    assert summary["latency_ms"]["p50"] == pytest.approx(5000.0)
    assert summary["error_kinds"] == {"unfinished": 1, "RuntimeError": 4}


def test_only_loopback_urls() -> None:
    assert loopback_url("http://127.0.0.1:8080/chat")
    assert loopback_url("http://localhost:1/v1/chat/completions")
    with pytest.raises(ConfigError, match="loopback"):
        loopback_url("http://example.com/v1/chat/completions")
    with pytest.raises(ConfigError):
        loopback_url("ftp://127.0.0.1/x")


async def test_http_targets_against_the_chat_service() -> None:
    async with (
        AppServer(create_app(ChatConfig(time_scale=0.02))) as server,
        httpx.AsyncClient(timeout=30) as client,
    ):
        chat = ChatTarget(server.url + "/chat", client, ["Why?"])
        url = server.url + "/v1/chat/completions"
        openai_like = OpenAITarget(url, "critpath-refine", client, ["Why?"])
        for target in (chat, openai_like):
            result = await run_load(target, 40.0, max_requests=20, duration=10, seed=2)
            s = result.summary()
            assert s["completed"] == 20, s["error_kinds"]
            assert s["ttft_ms"]["p50"] <= s["latency_ms"]["p50"]
        bad = OpenAITarget(url, "nope", client, ["Why?"])
        s = (await run_load(bad, 40.0, max_requests=5, duration=10)).summary()
        assert s["errors"] == 5
        assert "RuntimeError" in s["error_kinds"]


def _loadtest(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "critpath.cli", "loadtest", *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=check,
    )  # fmt: skip


def test_compare_sweep_json_and_plot(tmp_path: Path) -> None:
    plot = tmp_path / "sweep.svg"
    out = _loadtest("--compare", "large,cascade", "--rates", "1,6", "--requests", "60",
                    "--json", "--plot", str(plot))  # fmt: skip
    result = json.loads(out.stdout)
    assert result["time"] == "simulated"
    assert result["rates"] == [1.0, 6.0]
    runs = {(r["target"], r["offered_rate"]): r for r in result["runs"]}
    assert set(runs) == {("large", 1.0), ("cascade", 1.0), ("large", 6.0), ("cascade", 6.0)}
    for r in runs.values():
        assert {"throughput_rps", "goodput_rps", "latency_ms", "ttft_ms", "errors"} <= set(r)
        assert set(r["latency_ms"]) >= {"p50", "p90", "p99", "p99.9"}
    # more load, more latency (the simulated replicas batch and then queue)
    assert runs[("large", 6.0)]["latency_ms"]["p99"] > runs[("large", 1.0)]["latency_ms"]["p99"]
    assert "<polyline" in plot.read_text()


def test_command_errors_are_clear() -> None:
    done = _loadtest("--strategy", "teleport", check=False)
    assert done.returncode != 0
    assert "unknown strategy" in done.stderr
    done = _loadtest("--url", "http://example.com/chat", check=False)
    assert done.returncode != 0
    assert "loopback" in done.stderr
    done = _loadtest("--url", "http://127.0.0.1:9/chat", "--requests", "3", "--rate", "50",
                     check=False)  # fmt: skip
    assert done.returncode != 0
    assert "no request succeeded" in done.stderr
    assert "ConnectError" in done.stdout
    done = _loadtest("--strategy", "large", "--rates", "abc", check=False)
    assert "--rates takes numbers" in done.stderr
    done = _loadtest(check=False)
    assert done.returncode != 0
    assert "--url" in done.stderr
