"""Pure graph analysis: order, cycles, longest paths, slack.

No event loop, no clocks: every function takes a DAG as ``preds`` (node -> the nodes
it depends on) plus durations, and returns numbers. The runtime uses them twice: on
predicted durations before a run (to rank ready steps by slack) and on measured
durations after it (for the report's span, slack and critical path).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from critpath.errors import CycleError

__all__ = [
    "PathAnalysis",
    "analyse",
    "bottom_levels",
    "find_cycle",
    "successors",
    "topological_order",
]


def successors(preds: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Invert ``preds`` into node -> dependants (every node gets an entry)."""
    succs: dict[str, list[str]] = {n: [] for n in preds}
    for node, ps in preds.items():
        for p in ps:
            succs.setdefault(p, []).append(node)
    return succs


def find_cycle(preds: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle as ``[a, b, ..., a]``, or None.

    The list reads in dependency order: ``a -> b`` means ``b`` depends on ``a``.
    """
    succs = successors(preds)
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(succs, white)
    for root in succs:
        if colour[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        colour[root] = grey
        while stack:
            node, i = stack[-1]
            children = succs[node]
            if i < len(children):
                stack[-1] = (node, i + 1)
                child = children[i]
                if colour[child] == grey:
                    start = path.index(child)
                    return [*path[start:], child]
                if colour[child] == white:
                    colour[child] = grey
                    stack.append((child, 0))
                    path.append(child)
            else:
                colour[node] = black
                stack.pop()
                path.pop()
    return None


def topological_order(preds: Mapping[str, Iterable[str]]) -> list[str]:
    """Kahn's order, stable in the insertion order of ``preds``; ``CycleError`` on a cycle."""
    succs = successors(preds)
    indeg = dict.fromkeys(succs, 0)
    for node, ps in preds.items():
        indeg[node] = len(list(ps))
    ready = [n for n in succs if indeg[n] == 0]
    order: list[str] = []
    i = 0
    while i < len(ready):
        node = ready[i]
        i += 1
        order.append(node)
        for s in succs[node]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    if len(order) != len(succs):
        raise CycleError(find_cycle(preds) or sorted(set(succs) - set(order)))
    return order


def bottom_levels(
    order: Sequence[str], succs: Mapping[str, Sequence[str]], durations: Mapping[str, float]
) -> dict[str, float]:
    """Longest path from each node's start to the end of the graph, the node included."""
    level: dict[str, float] = {}
    for node in reversed(order):
        tail = max((level[s] for s in succs.get(node, ())), default=0.0)
        level[node] = durations.get(node, 0.0) + tail
    return level


@dataclass(frozen=True, slots=True)
class PathAnalysis:
    """Longest-path facts of a DAG under given durations."""

    span: float
    """Length of the longest dependency chain (the critical path)."""
    critical_path: list[str]
    """Nodes on one longest chain, in dependency order."""
    earliest_start: dict[str, float]
    """Earliest start of each node if every dependency ran as soon as possible."""
    slack: dict[str, float]
    """How long each node could be delayed without lengthening the span."""
    work: float
    """Sum of all durations."""

    @property
    def parallelism(self) -> float:
        return self.work / self.span if self.span > 0 else 1.0


def analyse(preds: Mapping[str, Sequence[str]], durations: Mapping[str, float]) -> PathAnalysis:
    """Span, critical path, earliest starts and slack of a DAG.

    >>> a = analyse({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]},
    ...             {"a": 1, "b": 5, "c": 2, "d": 1})
    >>> a.span, a.critical_path, a.slack["c"]
    (7.0, ['a', 'b', 'd'], 3.0)
    """
    order = topological_order(preds)
    succs = successors(preds)
    est: dict[str, float] = {}
    best_pred: dict[str, str | None] = {}
    for node in order:
        start, arg = 0.0, None
        for p in preds.get(node, ()):
            finish = est[p] + durations.get(p, 0.0)
            if arg is None or finish > start:
                start, arg = finish, p
        est[node] = start
        best_pred[node] = arg
    blevel = bottom_levels(order, succs, durations)
    span = max((est[n] + blevel[n] for n in order), default=0.0)
    slack = {n: max(0.0, span - est[n] - blevel[n]) for n in order}
    # Walk back from the node that finishes last along the predecessors that set its start.
    path: list[str] = []
    if order:
        cur: str | None = max(order, key=lambda n: est[n] + durations.get(n, 0.0))
        while cur is not None:
            path.append(cur)
            cur = best_pred[cur]
        path.reverse()
    work = float(sum(durations.get(n, 0.0) for n in order))
    return PathAnalysis(float(span), path, est, slack, work)
