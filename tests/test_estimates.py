"""Latency estimates on known data."""

from __future__ import annotations

import math

import pytest

from critpath import ConfigError, Estimates, LatencyEstimate


def filled(values: list[float], **kw: float) -> LatencyEstimate:
    e = LatencyEstimate(**kw)  # type: ignore[arg-type]
    for v in values:
        e.observe(v)
    return e


def test_quantiles_interpolate_linearly() -> None:
    e = filled([5.0, 1.0, 4.0, 2.0, 3.0])  # order of arrival does not matter
    assert e.quantile(0.0) == 1.0
    assert e.quantile(1.0) == 5.0
    assert e.quantile(0.5) == 3.0
    assert e.p50 == 3.0
    assert e.quantile(0.25) == 2.0
    assert e.quantile(0.1) == pytest.approx(1.4)
    assert e.p95 == pytest.approx(4.8)
    assert e.p99 == pytest.approx(4.96)
    assert e.count == 5
    assert e.mean == pytest.approx(3.0)
    assert (e.min, e.max) == (1.0, 5.0)


def test_single_sample() -> None:
    e = filled([0.25])
    assert e.p50 == e.p99 == e.quantile(0.0) == 0.25
    assert e.ewma == 0.25


def test_ewma_follows_drift() -> None:
    e = filled([1.0, 3.0, 0.0], alpha=0.5)
    # 1 -> 1 + 0.5 * (3 - 1) = 2 -> 2 + 0.5 * (0 - 2) = 1
    assert e.ewma == pytest.approx(1.0)
    e2 = filled([10.0] + [0.0] * 20, alpha=0.2)
    assert e2.ewma == pytest.approx(10.0 * 0.8**20)
    assert e2.mean == pytest.approx(10.0 / 21)
    full = filled([1.0, 9.0], alpha=1.0)  # alpha 1: the last value
    assert full.ewma == 9.0


def test_window_evicts_oldest_samples() -> None:
    e = filled([10.0, 1.0, 2.0, 3.0], window=3)
    assert e.quantile(0.0) == 1.0  # 10.0 left the window
    assert e.quantile(1.0) == 3.0
    assert e.p50 == 2.0
    # totals are over every observation, not just the window
    assert e.count == 4
    assert e.max == 10.0
    assert e.mean == pytest.approx(4.0)


def test_window_eviction_with_duplicates() -> None:
    e = filled([1.0, 1.0, 2.0, 2.0, 7.0], window=2)
    assert (e.quantile(0.0), e.quantile(1.0)) == (2.0, 7.0)
    e = filled([3.0, 3.0, 3.0, 1.0], window=3)
    assert (e.quantile(0.0), e.p50, e.quantile(1.0)) == (1.0, 3.0, 3.0)


def test_empty_estimate_is_nan() -> None:
    e = LatencyEstimate()
    assert e.count == 0
    assert math.isnan(e.quantile(0.5))
    assert math.isnan(e.mean)
    assert math.isnan(e.ewma)
    stats = e.statistics()
    assert stats["count"] == 0.0
    assert math.isnan(stats["min"])
    assert math.isnan(stats["max"])
    assert "count=0" in repr(e)


def test_statistics() -> None:
    stats = filled([1.0, 2.0, 3.0], alpha=0.5).statistics()
    assert stats["count"] == 3.0
    assert stats["mean"] == pytest.approx(2.0)
    assert stats["ewma"] == pytest.approx(2.25)  # 1 -> 1.5 -> 2.25
    assert stats["p50"] == 2.0
    assert (stats["min"], stats["max"]) == (1.0, 3.0)


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, -math.inf])
def test_invalid_samples_are_rejected(bad: float) -> None:
    e = filled([1.0])
    with pytest.raises(ConfigError):
        e.observe(bad)
    assert e.count == 1
    assert e.p50 == 1.0


@pytest.mark.parametrize("q", [-0.01, 1.01, math.nan])
def test_invalid_quantiles_are_rejected(q: float) -> None:
    with pytest.raises(ConfigError):
        filled([1.0]).quantile(q)


@pytest.mark.parametrize("kw", [{"window": 0}, {"alpha": 0.0}, {"alpha": 1.5}, {"alpha": -1.0}])
def test_invalid_estimate_options(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        LatencyEstimate(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", [{"window": 0}, {"alpha": 0.0}, {"alpha": 2.0}])
def test_invalid_store_options_fail_at_construction(kw: dict[str, float]) -> None:
    """A ConfigError is 'caught before anything runs', not at the first observation."""
    with pytest.raises(ConfigError):
        Estimates(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_invalid_default(bad: float) -> None:
    with pytest.raises(ConfigError):
        Estimates(default=bad)


def test_store_predicts_learned_then_fallback_then_default() -> None:
    est = Estimates(default=2.0, alpha=0.5)
    assert len(est) == 0
    assert est.predict("a") == 2.0
    assert est.predict("a", fallback=0.3) == 0.3
    assert est.get("a") is None
    est.observe("a", 1.0)
    est.observe("a", 3.0)
    est.observe("b", 0.5)
    assert est.predict("a") == pytest.approx(2.0)  # ewma 1 -> 2
    assert est.predict("a", fallback=0.3) == pytest.approx(2.0)  # learned beats fallback
    assert est.predict("b") == 0.5
    assert "a" in est
    assert "zzz" not in est
    assert sorted(est) == ["a", "b"]
    assert len(est) == 2
    got = est.get("a")
    assert got is not None
    assert got.count == 2
