"""Pure graph analysis on hand-built DAGs with known answers."""

from __future__ import annotations

import itertools

import pytest

from critpath import CycleError
from critpath.orchestrator.analysis import (
    analyse,
    bottom_levels,
    find_cycle,
    successors,
    topological_order,
)

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def test_diamond() -> None:
    pa = analyse(DIAMOND, {"a": 1, "b": 5, "c": 2, "d": 1})
    assert pa.span == 7.0
    assert pa.critical_path == ["a", "b", "d"]
    assert pa.earliest_start == {"a": 0.0, "b": 1.0, "c": 1.0, "d": 6.0}
    assert pa.slack == {"a": 0.0, "b": 0.0, "c": 3.0, "d": 0.0}
    assert pa.work == 9.0
    assert pa.parallelism == pytest.approx(9 / 7)


def test_diamond_other_branch_critical() -> None:
    pa = analyse(DIAMOND, {"a": 2, "b": 1, "c": 4, "d": 3})
    assert pa.span == 9.0
    assert pa.critical_path == ["a", "c", "d"]
    assert pa.slack["b"] == 3.0
    assert pa.slack["c"] == 0.0


def test_chain_has_no_parallelism() -> None:
    pa = analyse({"x": [], "y": ["x"], "z": ["y"]}, {"x": 1.5, "y": 2.5, "z": 1})
    assert pa.span == pa.work == 5.0
    assert pa.critical_path == ["x", "y", "z"]
    assert pa.parallelism == 1.0
    assert set(pa.slack.values()) == {0.0}


def test_independent_steps() -> None:
    pa = analyse({"a": [], "b": [], "c": []}, {"a": 2, "b": 3, "c": 1})
    assert pa.span == 3.0
    assert pa.critical_path == ["b"]
    assert pa.slack == {"a": 1.0, "b": 0.0, "c": 2.0}
    assert pa.work == 6.0
    assert pa.parallelism == pytest.approx(2.0)


def test_two_chains_joined() -> None:
    # a1 -> a2 -> j, b1 -> j, j -> k ; long leg through a
    preds = {"a1": [], "a2": ["a1"], "b1": [], "j": ["a2", "b1"], "k": ["j"]}
    pa = analyse(preds, {"a1": 1, "a2": 4, "b1": 2, "j": 1, "k": 2})
    assert pa.span == 8.0
    assert pa.critical_path == ["a1", "a2", "j", "k"]
    assert pa.slack["b1"] == 3.0
    assert pa.earliest_start["j"] == 5.0
    assert pa.earliest_start["k"] == 6.0


def test_missing_durations_count_as_zero() -> None:
    pa = analyse({"a": [], "b": ["a"]}, {"b": 2})
    assert pa.span == 2.0
    assert pa.work == 2.0
    assert pa.earliest_start["b"] == 0.0


def test_empty_graph() -> None:
    pa = analyse({}, {})
    assert (pa.span, pa.critical_path, pa.work, pa.parallelism) == (0.0, [], 0.0, 1.0)


def test_analyse_rejects_cycles() -> None:
    with pytest.raises(CycleError):
        analyse({"a": ["b"], "b": ["a"]}, {"a": 1, "b": 1})


def test_find_cycle() -> None:
    assert find_cycle(DIAMOND) is None
    cycle = find_cycle({"a": [], "b": ["a", "d"], "c": ["b"], "d": ["c"]})
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"b", "c", "d"}
    # reads in dependency order: each node is followed by one that depends on it
    preds = {"a": [], "b": ["a", "d"], "c": ["b"], "d": ["c"]}
    for x, y in itertools.pairwise(cycle):
        assert x in preds[y]


def test_topological_order_is_stable_and_valid() -> None:
    preds = {"z": [], "y": ["z"], "x": [], "w": ["x", "y"]}
    order = topological_order(preds)
    assert order == ["z", "x", "y", "w"]
    for node, ps in preds.items():
        for p in ps:
            assert order.index(p) < order.index(node)
    with pytest.raises(CycleError):
        topological_order({"a": ["a"]})


def test_successors_and_bottom_levels() -> None:
    succs = successors(DIAMOND)
    assert succs == {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}
    levels = bottom_levels(["a", "b", "c", "d"], succs, {"a": 1, "b": 5, "c": 2, "d": 1})
    assert levels == {"a": 7.0, "b": 6.0, "c": 3.0, "d": 1.0}
