"""``critpath profile`` against a real vLLM server (tiny random-weight Llama): a short
profile (well under a minute), its vLLM metrics, and its file in the simulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from critpath.adapters.sim.server import build_fleet
from critpath.profile import Phase, ProfilePlan, Profiler, ServerProfile, verify

pytestmark = pytest.mark.timeout(180)

# The CI server runs --max-num-seqs 2 (scripts/vllm_server.sh's default preset), a
# 512-token context and prefix caching in 128-token blocks on this CPU build.
PLAN = ProfilePlan(
    prompt_tokens=(16, 128), output_tokens=(16,), concurrency=(1, 2, 4), base_prompt=48,
    base_output=16, requests=6, rounds=2, prefix_tokens=256, prefix_groups=2, prefix_warm=2,
    max_requests=150, max_seconds=50,
)  # fmt: skip


@pytest.fixture(scope="module")
def profile(vllm_url: str, vllm_model: str) -> ServerProfile:
    return asyncio.run(Profiler(vllm_url, vllm_model, PLAN).run())


def test_a_short_profile_of_a_real_server(profile: ServerProfile) -> None:
    assert profile.server == "vllm"
    assert profile.stopped is None, f"the bounds stopped it: {profile.stopped}"
    assert profile.elapsed_s < 60
    for cell in profile.cells:
        assert cell.complete
        assert not cell.errors, (cell.spec.key, cell.errors)
        # ignore_eos: every answer is as long as asked.
        assert {s.output_tokens for s in cell.samples} == {cell.spec.output_tokens}
        assert all(s.ttft is not None and 0 < s.ttft <= s.e2e for s in cell.samples)
    # Calibrated prompts land near the asked lengths in the server's own tokens.
    for cell in profile.by_phase(Phase.PROMPT):
        assert cell.prompt_tokens == pytest.approx(cell.spec.prompt_tokens, rel=0.3, abs=6)


def test_the_servers_metrics_are_read_beside_the_timings(profile: ServerProfile) -> None:
    conc = {c.spec.concurrency: c for c in profile.by_phase(Phase.CONCURRENCY)}
    # (Concurrency-1 cells run interleaved with the sweeps': their counters are mixed.)
    assert all(c.counters.get("prefix_cache_queries", 0) > 0 for k, c in conc.items() if k > 1)
    # --max-num-seqs 2: never more than two running; at four clients the rest wait.
    assert max(c.gauges.get("max_running", 0) for c in conc.values()) <= 2
    assert conc[4].gauges.get("max_waiting", 0) >= 1
    assert profile.simulator.max_num_seqs == 2
    # Prefix caching (on by default in vLLM's V1 engine): the shared prefix is computed
    # once per group (cold), then found in the cache (warm).
    cold = profile.cell(Phase.PREFIX_COLD)
    warm = profile.cell(Phase.PREFIX_WARM)
    assert cold is not None
    assert warm is not None
    assert cold.counters["prefix_cache_hits"] == 0
    hits = warm.counters["prefix_cache_hits"] / warm.counters["prefix_cache_queries"]
    assert hits > 0.4


def test_the_real_profile_feeds_the_simulator(profile: ServerProfile, tmp_path: Path) -> None:
    path = profile.save(tmp_path / "tiny.json")
    fleet = build_fleet(profile=path)
    assert fleet.names() == [profile.model]
    assert fleet[profile.model].profile == profile.simulator
    stats = ServerProfile.load(path).endpoint_stats()
    assert stats.ttft.count >= PLAN.requests
    # The comparison runs (its figures on this shared CPU are in docs/BENCHMARKS.md).
    result = verify(profile, repeat=2)
    assert {r.metric for r in result.rows} == {"ttft", "tpot"}
