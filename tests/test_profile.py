"""``critpath profile`` against the simulated server: the fit recovers a known latency
shape, the profile file round-trips into the simulator and ``sim-server --profile``,
and it seeds an adapter's learned estimates."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from critpath.adapters import OpenAICompatible
from critpath.adapters.sim.clock import run_virtual
from critpath.adapters.sim.measured import (
    PROFILE_FORMAT,
    MeasuredModel,
    measured_fleet,
    read_measured,
)
from critpath.adapters.sim.profiles import LatencyProfile
from critpath.adapters.sim.server import SimServer, build_fleet
from critpath.errors import ConfigError
from critpath.profile import Phase, ProfilePlan, Profiler, ServerProfile, tradeoff_svg, verify

# A server whose shape we know: 4 ms + 20 us a prompt token to the first token, 1.5 ms a
# token, +10% a token for each other running sequence, two sequences at once.
KNOWN = LatencyProfile(
    queue_s=0.004, prefill_per_token_s=2e-5, ttft_sigma=0.0, tpot_s=0.0015, tpot_sigma=0.0,
    batch_slowdown=0.1, max_num_seqs=2,
)  # fmt: skip
PLAN = ProfilePlan(
    prompt_tokens=(16, 256), output_tokens=(8, 32), concurrency=(1, 2, 4), base_prompt=64,
    base_output=32, requests=6, rounds=2, max_requests=200, max_seconds=600,
)  # fmt: skip


def profile_of(known: LatencyProfile, plan: ProfilePlan = PLAN) -> ServerProfile:
    """Profile a simulated server with the ``known`` shape, in virtual time (exact)."""

    async def main() -> ServerProfile:
        async with SimServer(measured_fleet(MeasuredModel("tiny", known))) as server:
            return await Profiler(server.base_url, "tiny", plan, sample_interval=0.02).run()

    return run_virtual(main())


@pytest.fixture(scope="module")
def known_profile() -> ServerProfile:
    return profile_of(KNOWN)


def test_the_fit_recovers_the_servers_latency_shape(known_profile: ServerProfile) -> None:
    p, fit = known_profile, known_profile.fit
    assert p.server == "vllm"  # the simulator speaks vLLM's /metrics
    assert p.stopped is None
    assert p.requests_sent == PLAN.planned_requests() + 2  # and two calibration requests
    assert all(c.complete and not c.errors for c in p.cells)
    assert fit["queue_s"] == pytest.approx(0.004, rel=0.05)
    assert fit["prefill_per_token_s"] == pytest.approx(2e-5, rel=0.1)
    assert fit["tpot_p50_s"] == pytest.approx(0.0015, rel=0.05)
    assert fit["max_num_seqs_observed"] == 1.0
    assert p.simulator.max_num_seqs == 2
    assert p.simulator.batch_slowdown == pytest.approx(0.1, abs=0.03)
    # The batching trade-off: per-user speed falls, total throughput rises, as c grows.
    cells = {c.spec.concurrency: c for c in p.by_phase(Phase.CONCURRENCY)}
    assert cells[2].per_user_tokens_per_s < cells[1].per_user_tokens_per_s
    assert cells[2].total_tokens_per_s > 1.5 * cells[1].total_tokens_per_s
    # At 4 clients and 2 slots, requests queue: the first token waits for a slot.
    assert cells[4].quantile("ttft", 0.5) > 5 * cells[2].quantile("ttft", 0.5)
    assert cells[4].gauges["max_waiting"] >= 1


def test_the_calibrated_simulator_reproduces_the_measured_quantiles(
    known_profile: ServerProfile,
) -> None:
    result = verify(known_profile, tolerance=0.15, repeat=2)
    assert result.rows
    assert {r.metric for r in result.rows} == {"ttft", "tpot"}
    assert result.passed, [r.to_dict() for r in result.failures]


def test_verify_reports_a_simulator_that_does_not_match(known_profile: ServerProfile) -> None:
    slower = dataclasses.replace(
        known_profile, simulator=known_profile.simulator.with_(tpot_s=0.003)
    )
    result = verify(slower, tolerance=0.15, repeat=1)
    assert not result.passed
    assert {r.metric for r in result.failures} == {"tpot", "ttft"}  # queueing follows TPOT
    assert result.worst is not None
    assert result.worst.error > 0.5


def test_the_profile_stops_at_its_request_bound() -> None:
    p = profile_of(KNOWN, dataclasses.replace(PLAN, max_requests=12))
    assert p.requests_sent == 12
    assert p.stopped == "max_requests"
    assert sum(len(c.samples) for c in p.cells) == 10
    assert not all(c.complete for c in p.cells)


def test_the_profile_file_round_trips(known_profile: ServerProfile, tmp_path: Path) -> None:
    path = known_profile.save(tmp_path / "p.json")
    back = ServerProfile.load(path)
    assert back.simulator == known_profile.simulator
    assert back.plan == known_profile.plan
    assert [c.spec for c in back.cells] == [c.spec for c in known_profile.cells]
    assert back.cells[0].quantile("ttft", 0.5) == pytest.approx(
        known_profile.cells[0].quantile("ttft", 0.5), abs=1e-6
    )
    measured = read_measured(path)
    assert measured == MeasuredModel("tiny", known_profile.simulator)
    fleet = build_fleet(profile=path, replicas=2, max_num_seqs=8)
    assert fleet.names() == ["tiny"]
    assert len(fleet.replicas("tiny")) == 2
    assert fleet["tiny"].profile == known_profile.simulator.with_(max_num_seqs=8)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ('{"format": "other"}', "not a server profile"),
        (json.dumps({"format": PROFILE_FORMAT, "model": "m"}), "no simulator profile"),
        (json.dumps({"format": PROFILE_FORMAT, "model": "m", "simulator": {"tpot_s": 1}}),
         "incomplete latency profile"),
        (json.dumps({"format": PROFILE_FORMAT, "model": "m",
                     "simulator": {**KNOWN.to_dict(), "warp": 9}}), "unknown latency-profile"),
        (json.dumps({"format": PROFILE_FORMAT, "model": "m",
                     "simulator": {**KNOWN.to_dict(), "tpot_s": "fast"}}), "must be a number"),
    ],
)  # fmt: skip
def test_a_bad_profile_file_is_one_clear_error(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_measured(path)
    with pytest.raises(ConfigError):
        ServerProfile.load(path)


def test_a_profile_serves_its_own_model_only() -> None:
    with pytest.raises(ConfigError, match="without data"):
        build_fleet(profile="p.json", data="somewhere")


async def test_the_profile_seeds_an_adapters_estimates(known_profile: ServerProfile) -> None:
    base = known_profile.baseline()
    assert base is not None
    assert base.spec.phase is Phase.CONCURRENCY
    stats = known_profile.endpoint_stats()
    assert stats.requests == 0
    assert stats.ttft.count == len(base.ok)
    assert stats.ttft.p50 == pytest.approx(base.quantile("ttft", 0.5), rel=0.01)
    assert stats.tpot.p50 == pytest.approx(0.0015, rel=0.05)
    async with OpenAICompatible("http://127.0.0.1:9/v1", "tiny", stats=stats) as llm:
        # A fresh adapter knows the endpoint before its first request.
        assert llm.stats.ttft.ewma == pytest.approx(base.quantile("ttft", 0.5), rel=0.2)


def test_the_tradeoff_plot_draws_both_series(known_profile: ServerProfile) -> None:
    svg = tradeoff_svg(known_profile)
    assert svg.startswith("<svg")
    assert "per-user tokens/s" in svg
    assert "total tokens/s" in svg
    assert svg.count("<polyline") == 2


def test_the_commands_profile_a_sim_server_serving_a_profile(
    known_profile: ServerProfile, tmp_path: Path
) -> None:
    """``critpath sim-server --profile FILE`` serves the measured model on loopback and
    ``critpath profile`` measures it (real time, a short bounded plan)."""
    source = known_profile.save(tmp_path / "source.json")
    server = subprocess.Popen(
        [sys.executable, "-m", "critpath.cli", "sim-server", "--port", "0", "--profile",
         str(source)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "tiny at http://127.0.0.1:" in line, line
        base_url = line.split(" at ")[1].split()[0]
        out, plot = tmp_path / "measured.json", tmp_path / "tradeoff.svg"
        done = subprocess.run(
            [sys.executable, "-m", "critpath.cli", "profile", "--base-url", base_url,
             "--model", "tiny", "--prompt-tokens", "16,128", "--output-tokens", "16",
             "--concurrency", "1,4", "--requests", "16", "--rounds", "1", "--max-requests", "90",
             "--max-seconds", "30", "--out", str(out), "--plot", str(plot), "--json"],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["model"] == "tiny"
        assert doc["server"] == "vllm"
        assert all(not c["summary"]["errors"] for c in doc["cells"])
        measured = ServerProfile.load(out)
        assert measured.simulator.max_num_seqs == 2  # seen full at 4 clients
        assert plot.read_text().startswith("<svg")
        server.send_signal(signal.SIGINT)
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_the_command_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "critpath.cli", "profile", *args],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    assert "give --base-url" in run().stderr
    assert "--concurrency takes integers" in run(
        "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--concurrency", "one"
    ).stderr
    assert "cannot read the profile" in run("--verify", str(tmp_path / "none.json")).stderr
