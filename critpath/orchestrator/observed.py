"""The observed path: what a run's finish actually waited on, and the makespan broken down.

The dependency critical path (``analysis.analyse``) says how fast a run could be with
unlimited slots: its length is the **span**. The **observed path** says why this run
took as long as it did. It walks back from the record that ended last (the run's
finish) through whichever constraint released each record last:

- ``dependency``: its last dependency to finish (``StepReport.released_by``);
- ``resource``: it was ready but queued for a concurrency slot, and the record that
  freed the slot started it (``StepReport.slot_from``). The path goes on through that
  record even when it is no dependency; when a step of another run sharing the
  limiter freed it (``"<other run>"``), the path goes on through its last dependency
  and the wait stays on the path as a wait;
- ``run start``: it was ready when the run started.

So consecutive entries touch: each starts when the previous one ends, or when its
resource wait ends; what is left between them is runtime overhead.

**Breakdown.** The run's time ``[0, makespan]`` is split along the observed path,
walking back from its end, into three parts that add up to the makespan exactly:

- ``resource_wait``: time during which the path's next step was ready but waiting for
  a slot (the union of the waits on the path: the slot holders' running time under
  such a wait counts here, not as work);
- ``path_work``: the rest of the path's steps' running time;
- ``overhead``: time on the path that is neither: before its first step, between a
  record's end and the next one's start beyond any wait, and from the last end to the
  run's end (scheduling, the event loop, ending the run).

``efficiency = span / makespan = span / (path_work + resource_wait + overhead)``. A
run without slot waits and without overhead finishes on a dependency chain, so its
makespan is that chain's work and at most the span (efficiency 1.0 when it is the
critical path); each millisecond of ``resource_wait`` or ``overhead`` lowers the
efficiency, and ``path_work - span`` is what the path ran beyond the span (e.g. a
slot holder's work before the wait began, or a longer chain that waits hid).

Reports written before the runtime named releasers and slot holders (both ``None``)
are read by inference: the latest-ending dependency releases a record, and a record
that queued was started by the record of its resource whose end is closest to its
start (within ``tolerance``). Pure: no event loop, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from critpath.orchestrator.report import StepReport

__all__ = ["OTHER_RUN", "Breakdown", "ObservedPath", "PathStep", "Release", "observed_path"]

OTHER_RUN = "<other run>"
"""``slot_from`` of a record whose slot a step of another run (sharing the limiter) freed."""

DEFAULT_TOLERANCE = 0.005
"""Seconds within which times count as equal when inferring releasers (old reports)."""

_TIE = 1e-9
_COMPLETED = ("ok", "fallback")


class Release(StrEnum):
    """What released a record on the observed path."""

    DEPENDENCY = "dependency"
    RESOURCE = "resource"
    RUN_START = "run start"


class PathStep(BaseModel):
    """One record on the observed path. Times in seconds since the run started."""

    model_config = ConfigDict(frozen=True)

    name: str
    start: float | None
    """``None``: it was still queued for a slot when the run ended."""
    end: float | None
    """When it ended (the run's end for a record cut off by it); ``None`` if it never started."""
    released: Release
    by: str | None = None
    """The record whose end released it: its last dependency (``dependency``), the one
    that freed its slot (``resource``; ``"<other run>"`` for another run's step,
    ``None`` when unknown); ``None`` at the run's start."""
    resource: str | None = None
    ready: float | None = None
    wait: float = 0.0
    """Seconds it waited for a slot after it was ready (0 unless ``released`` is resource)."""
    gap: float = 0.0
    """Seconds of runtime overhead on the path just before it (see the module docstring)."""
    work: float = 0.0
    """Its running time counted as path work (the part not under a later wait)."""


class Breakdown(BaseModel):
    """The makespan split along the observed path: ``path_work + resource_wait +
    overhead == makespan``; ``span`` is the dependency-only critical path, for comparison."""

    model_config = ConfigDict(frozen=True)

    makespan: float
    span: float
    path_work: float
    resource_wait: float
    overhead: float


@dataclass(frozen=True, slots=True)
class ObservedPath:
    """The observed path (first record first) and the makespan's breakdown along it."""

    path: list[PathStep]
    breakdown: Breakdown


@dataclass(slots=True)
class _Hop:
    released: Release
    by: str | None
    nxt: StepReport | None
    wait: float


class _Walker:
    """Decides, for one record, what released it (recorded, else inferred)."""

    def __init__(self, steps: Sequence[StepReport], makespan: float, tolerance: float) -> None:
        self.by_name: dict[str, StepReport] = {s.name: s for s in steps}
        self.makespan = makespan
        self.tol = tolerance
        # The runtime names releasers; a report where it named none predates that.
        self.annotated = any(s.released_by is not None or s.slot_from is not None for s in steps)
        self.by_resource: dict[str | None, list[StepReport]] = {}
        for s in steps:
            if s.start is not None:
                self.by_resource.setdefault(s.resource, []).append(s)

    def end_of(self, s: StepReport) -> float | None:
        if s.start is None:
            return None
        return min(s.end, self.makespan) if s.end is not None else self.makespan

    def hop(self, s: StepReport, visited: set[str]) -> _Hop:
        start = s.start if s.start is not None else self.makespan
        wait = max(0.0, start - s.ready) if s.ready is not None else 0.0
        if s.start is None:  # still queued for a slot when the run ended
            queued_for_slot = True
        elif self.annotated:  # the runtime names who freed the slot
            queued_for_slot = s.slot_from is not None
        else:
            queued_for_slot = wait > self.tol
        if queued_for_slot:
            holder_name = s.slot_from if self.annotated else self._infer_holder(s, visited)
            holder = self.by_name.get(holder_name) if holder_name is not None else None
            if (
                holder is not None
                and holder.name not in visited
                and self.end_of(holder) is not None
            ):
                return _Hop(Release.RESOURCE, holder.name, holder, wait)
            dep = self._dependency(s, visited)
            return _Hop(Release.RESOURCE, holder_name, dep, wait)
        dep = self._dependency(s, visited)
        if dep is None:
            return _Hop(Release.RUN_START, None, None, 0.0)
        return _Hop(Release.DEPENDENCY, dep.name, dep, 0.0)

    def _dependency(self, s: StepReport, visited: set[str]) -> StepReport | None:
        """The record whose end made ``s`` ready: recorded, else its latest-ending dependency.

        A recorded releaser that never ran (a skipped step) stands for its own latest
        dependency to end.
        """
        named = self.by_name.get(s.released_by) if s.released_by is not None else None
        if named is not None and named.name not in visited and self.end_of(named) is not None:
            return named
        if self.annotated and s.released_by is None:
            return None
        start = [named.name] if named is not None else s.deps
        return self._latest_ended(start, visited)

    def _latest_ended(self, names: Sequence[str], visited: set[str]) -> StepReport | None:
        """Among ``names`` (and, for those that never ran, their own dependencies), the
        record that ended last; ties go to the critical one, then to the first named."""
        best: StepReport | None = None
        best_end = -math.inf
        seen: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop(0)
            if name in seen or name in visited:
                continue
            seen.add(name)
            rec = self.by_name.get(name)
            if rec is None:
                continue
            end = self.end_of(rec)
            if end is None:
                todo.extend(rec.deps)
                continue
            if end > best_end + _TIE or (
                abs(end - best_end) <= _TIE and best is not None and rec.critical
                and not best.critical
            ):  # fmt: skip
                best, best_end = rec, end
        return best

    def _infer_holder(self, s: StepReport, visited: set[str]) -> str | None:
        """The record that most plausibly freed ``s``'s slot: one of its resource (else
        any) whose end is closest to ``s``'s start, within the tolerance."""
        if s.start is None:
            return None
        for pool in (self.by_resource.get(s.resource, []) if s.resource else [], self._all()):
            best: StepReport | None = None
            for r in pool:
                end = self.end_of(r)
                if r.name == s.name or r.name in visited or end is None:
                    continue
                if abs(end - s.start) > self.tol or end > s.start + _TIE:
                    continue
                if best is None or end > (self.end_of(best) or 0.0) + _TIE:
                    best = r
            if best is not None:
                return best.name
        return None

    def _all(self) -> list[StepReport]:
        return [r for recs in self.by_resource.values() for r in recs]


def _finish(walker: _Walker, steps: Sequence[StepReport]) -> StepReport | None:
    """The record the run's finish waited on: a failure that ended within the tolerance
    of the last end (the steps it cancelled end just after it), else the record that
    ended last (ties: a completed one, on the critical path, not speculative, started
    first); or, when nothing ran up to the run's end, a record still queued for a slot
    then (the one ready first)."""
    ran = [s for s in steps if s.start is not None]
    last = max((walker.end_of(s) or 0.0 for s in ran), default=None)
    queued = [
        s for s in steps
        if s.start is None and s.ready is not None and not s.speculative
        and s.status in ("not_run", "queued")
    ]  # fmt: skip
    if queued and (last is None or last < walker.makespan - walker.tol):
        return min(queued, key=lambda s: (s.ready or 0.0, s.name))
    if last is None:
        return None
    failed = [
        s for s in ran if s.status == "failed" and (walker.end_of(s) or 0.0) >= last - walker.tol
    ]  # fmt: skip
    near = failed or [s for s in ran if (walker.end_of(s) or 0.0) >= last - _TIE]

    def rank(s: StepReport) -> tuple[bool, bool, bool, float, str]:
        return (s.status not in _COMPLETED, not s.critical, s.speculative, s.start or 0.0,
                s.name)  # fmt: skip

    return min(near, key=rank)


def observed_path(
    steps: Sequence[StepReport],
    makespan: float,
    span: float,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ObservedPath:
    """The observed path of a finished run and its makespan's breakdown (see the module).

    >>> from critpath.orchestrator.report import StepReport
    >>> a = StepReport(name="a", step="a", kind="step", status="ok", deps=[], ready=0.0,
    ...                start=0.0, end=1.0, resource="r")
    >>> b = StepReport(name="b", step="b", kind="step", status="ok", deps=[], ready=0.0,
    ...                start=1.0, end=3.0, resource="r", slot_from="a")
    >>> o = observed_path([a, b], makespan=3.0, span=2.0)
    >>> [(p.name, p.released.value, p.by) for p in o.path]
    [('a', 'run start', None), ('b', 'resource', 'a')]
    >>> o.breakdown.path_work, o.breakdown.resource_wait, o.breakdown.overhead
    (2.0, 1.0, 0.0)
    """
    walker = _Walker(steps, makespan, tolerance)
    hops: list[tuple[StepReport, _Hop]] = []
    cur = _finish(walker, steps)
    visited: set[str] = set()
    while cur is not None and cur.name not in visited:
        visited.add(cur.name)
        hop = walker.hop(cur, visited)
        hops.append((cur, hop))
        cur = hop.nxt
    # Split [0, makespan] walking back from the end (see the module docstring).
    t = makespan
    work_total = wait_total = 0.0
    entries: list[PathStep] = []
    holder_wait_from: float | None = None  # the later entry's ready, when this one freed its slot
    for i, (s, hop) in enumerate(hops):
        end = walker.end_of(s)
        gap = 0.0  # overhead between this record's end and the later entry's start
        if end is not None and end < t:
            gap, t = t - end, end
        if i > 0:  # (after the last entry, it is the run's ending: overhead, no entry's)
            entries[-1] = entries[-1].model_copy(update={"gap": gap})
        if holder_wait_from is not None:  # the later entry waited for this one's slot
            wait_total += max(0.0, t - holder_wait_from)
            t = min(t, holder_wait_from)
            holder_wait_from = None
        work = 0.0
        if s.start is not None:
            work = max(0.0, t - s.start)
            t = min(t, s.start)
        if hop.released is Release.RESOURCE and s.ready is not None:
            ready = max(s.ready, 0.0)
            if hop.nxt is not None and hop.nxt.name == hop.by:
                holder_wait_from = ready  # the wait ends where the holder's slot is freed
            else:  # freed by another run (or unknown): the wait sits between dependency and start
                wait_total += max(0.0, t - ready)
                t = min(t, ready)
        work_total += work
        entries.append(
            PathStep(
                name=s.name, start=s.start, end=end, released=hop.released, by=hop.by,
                resource=s.resource, ready=s.ready, wait=hop.wait, work=work,
            )
        )  # fmt: skip
    if entries:
        entries[-1] = entries[-1].model_copy(update={"gap": max(0.0, t)})
    entries.reverse()
    overhead = _residual(makespan, work_total + wait_total)
    breakdown = Breakdown(
        makespan=makespan, span=span, path_work=work_total, resource_wait=wait_total,
        overhead=overhead,
    )  # fmt: skip
    return ObservedPath(entries, breakdown)


def _residual(total: float, part: float) -> float:
    """``x`` with ``part + x == total`` exactly in floating point (to the last bit)."""
    x = total - part
    for _ in range(8):
        got = part + x
        if got == total:
            break
        x = math.nextafter(x, math.inf if got < total else -math.inf)
    return x
