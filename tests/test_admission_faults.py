"""Admission control (a pure controller on a fake clock) and ``critpath bench faults``
(short, on virtual time): nothing lost, failures counted by type, ejection helps."""

from __future__ import annotations

import argparse
import math

import pytest

from critpath.adapters.sim.clock import run_virtual
from critpath.bench import faults
from critpath.errors import ConfigError, Overloaded, is_retryable
from critpath.serve.admission import AdmissionController


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_admits_while_the_prediction_meets_the_slo_then_sheds_with_retry_after() -> None:
    clock = Clock()
    ctl = AdmissionController(concurrency=2, max_queue=10, slo=2.5, initial_service=1.0,
                              clock=clock)  # fmt: skip
    held = [ctl.admit(), ctl.admit()]  # predicted 1.0 each: a free place
    assert ctl.predict() == 2.0  # one wave to wait, then its own service
    held += [ctl.admit(), ctl.admit()]
    assert ctl.predict() == 3.0
    with pytest.raises(Overloaded) as shed:
        ctl.admit()
    assert shed.value.retry_after == 1.0
    assert shed.value.predicted == 3.0
    assert is_retryable(shed.value)
    assert ctl.admit(slo=10.0)  # a looser SLO for this request
    assert ctl.statistics().shed_slo == 1
    for h in held:
        h.release()
    assert ctl.statistics().in_flight == 1


def test_the_queue_is_bounded_even_without_an_slo() -> None:
    ctl = AdmissionController(concurrency=1, max_queue=2, clock=Clock())
    held = [ctl.admit() for _ in range(3)]
    with pytest.raises(Overloaded):
        ctl.admit()
    assert ctl.statistics().shed_queue == 1
    held[0].release()
    held[0].release()  # idempotent
    assert ctl.admit()


def test_service_time_is_learned_without_the_predicted_wait() -> None:
    clock = Clock()
    ctl = AdmissionController(concurrency=1, max_queue=5, slo=100.0, clock=clock)
    assert math.isnan(ctl.service_time())
    first = ctl.admit()
    second = ctl.admit()  # waits one wave
    clock.now = 2.0
    first.release()
    clock.now = 4.0
    second.release()  # took 4 s, of which 2 waiting: learns 2
    assert ctl.service_time() == pytest.approx(2.0)
    with pytest.raises(ConfigError):
        AdmissionController(concurrency=0, max_queue=1)


def bench_args(**changes: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    faults.add_arguments(parser)
    args = parser.parse_args(["--duration", "6", "--rate", "8"])
    for k, v in changes.items():
        setattr(args, k, v)
    return args


def test_bench_faults_counts_every_request_and_ejection_helps() -> None:
    result = run_virtual(faults.run(bench_args()))
    rows = {(r["name"], r["policy"]): r for r in result["scenarios"]}
    assert set(rows) == {(s, p) for s in faults.SCENARIOS for p in faults.POLICIES} | {
        ("overload", "accept_all"), ("overload", "admission")}  # fmt: skip
    for r in result["scenarios"]:
        assert {"name", "policy", "sent", "ok", "errors", "lost", "p50_ms", "p99_ms"} <= set(r)
        assert r["lost"] == 0
        assert r["sent"] == r["ok"] + r["errors"] + r["shed"]
    assert rows["failing", "none"]["errors_by_type"].get("ServerError", 0) > 0
    assert rows["failing", "eject"]["ok"] > rows["failing", "none"]["ok"]
    assert rows["killed", "eject"]["ok"] > rows["killed", "none"]["ok"]
    assert rows["overload", "admission"]["shed"] > 0
    assert rows["overload", "accept_all"]["shed"] == 0
    assert "lost requests" in faults.render(result)
