"""The async runtime: every step starts the moment its inputs are ready.

There is no superstep barrier: finishing a step releases its dependants at once, so a
slow branch never delays an unrelated fast one. When concurrency limits leave more
steps ready than may run, the one with least slack (earliest latest-start time on the
predicted critical path) goes first. A run owns every task it starts: cancelling it,
a failing step, or its deadline cancels them all and waits for them to finish, so no
task outlives its run — except a step that ignores its cancellation: after the run's
``cancel_grace`` it is reported ``stuck`` (logged, ``StepStuckError`` in its record)
and the run ends without it.

``Run`` owns the steps' state (``Node``s), its tasks and its outcome; two
collaborators own the rest, each behind the narrow ``RunCore`` interface the run
offers them: ``Speculations`` (branches started before their router decides) and
``StreamFeeder`` (a stream's items handed to its consumers as they come).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from critpath import telemetry
from critpath._tasks import TaskSet
from critpath.deadlines import _set_deadline, current_deadline, deadline_before_scope
from critpath.errors import (
    ConfigError,
    DeadlineExceeded,
    MissingInputError,
    RouteError,
    RunCancelled,
    RunError,
    StepFailedError,
    StepStuckError,
)
from critpath.estimates import Estimates
from critpath.orchestrator._nodes import Node
from critpath.orchestrator._speculating import Speculations
from critpath.orchestrator._streaming import StreamFeeder
from critpath.orchestrator.analysis import bottom_levels
from critpath.orchestrator.context import StepContext, _set_current, priority_of, step_priority
from critpath.orchestrator.events import (
    RouteChosen,
    RunEvent,
    RunFinished,
    StepCancelled,
    StepFailed,
    StepFinished,
    StepPartial,
    StepQueued,
    StepSkipped,
    StepStarted,
)
from critpath.orchestrator.limits import Limiter
from critpath.orchestrator.memo import MISSING
from critpath.orchestrator.policy import call_with_retry
from critpath.orchestrator.report import RunReport, StepRecord, build_report
from critpath.orchestrator.speculation import SpeculationStats
from critpath.orchestrator.states import NodeState, RunStatus, StepKind, StepStatus

if TYPE_CHECKING:
    from critpath.orchestrator.graph import Graph, StepSpec

__all__ = ["DEFAULT_CANCEL_GRACE_S", "Run", "RunResult"]

_log = logging.getLogger("critpath.runtime")

DEFAULT_CANCEL_GRACE_S = 1.0
"""How long a run waits for its cancelled steps to end before reporting them stuck."""
_DEADLINE_SLOP_S = 0.02  # a step's timeout this close to the run's deadline is the deadline
_SCOPE_MARGIN_S = 0.005  # end this much before an enclosing deadline scope fires
_OTHER_RUN = "<other run>"
# Enum members bound once: an Enum class attribute costs ~10x a global, and these
# are read several times per step on the hot path.
_K_EACH = StepKind.EACH
_K_MAP = StepKind.MAP
_K_ROUTE = StepKind.ROUTE
_K_STREAM = StepKind.STREAM
_N_ACTIVE = NodeState.ACTIVE
_N_DONE = NodeState.DONE
_N_SKIPPED = NodeState.SKIPPED
_N_WAITING = NodeState.WAITING
_S_CANCELLED = StepStatus.CANCELLED
_S_FAILED = StepStatus.FAILED
_S_FALLBACK = StepStatus.FALLBACK
_S_NOT_RUN = StepStatus.NOT_RUN
_S_OK = StepStatus.OK
_S_QUEUED = StepStatus.QUEUED
_S_RUNNING = StepStatus.RUNNING
_S_SKIPPED = StepStatus.SKIPPED
_S_STUCK = StepStatus.STUCK


class _End(Enum):
    """Why a run ended (before it is turned into a ``RunStatus`` or an error)."""

    OK = "ok"
    DEADLINE = "deadline"
    CANCELLED = "cancelled"
    FAILED = "failed"
    ROUTE = "route"


@dataclass(frozen=True, slots=True)
class _Outcome:
    end: _End
    step: str | None = None
    error: BaseException | None = None


class RunResult:
    """What a finished run produced.

    ``status`` is ``RunStatus.OK``, or ``RunStatus.PARTIAL`` when the deadline passed
    but every output had a value or a partial result. ``outputs`` maps step names to
    values (skipped steps are absent); ``output`` is the graph's output step's value
    (or a dict of the sinks' values when the graph has several). ``report`` is built
    on first access.
    """

    __slots__ = ("_report", "_run", "output", "outputs", "status")

    def __init__(self, run: Run, status: RunStatus, outputs: dict[str, Any], output: Any) -> None:
        self._run = run
        self._report: RunReport | None = None
        self.status = status
        self.outputs = outputs
        self.output = output

    @property
    def report(self) -> RunReport:
        if self._report is None:
            self._report = self._run.report()
        return self._report

    def __repr__(self) -> str:
        return f"RunResult(status={self.status.value!r}, output={self.output!r})"


class Run:
    """One execution of a graph. Await it for its ``RunResult``; iterate ``events()``.

    ``async with graph.start(inputs) as run:`` guarantees the run is finished (or
    cancelled and cleaned up) when the block exits.
    """

    def __init__(
        self,
        graph: Graph,
        inputs: Mapping[str, Any],
        *,
        deadline: float | None = None,
        max_concurrency: int | None = None,
        resources: Mapping[str, int] | None = None,
        limiter: Limiter | None = None,
        estimates: Estimates | None = None,
        run_id: str | None = None,
        cancel_grace: float = DEFAULT_CANCEL_GRACE_S,
    ) -> None:
        plan = graph._plan()  # GraphError before anything starts
        missing = [name for name in graph.inputs if name not in inputs]
        if missing:
            raise MissingInputError(missing)
        extra = sorted(set(inputs) - set(graph.inputs))
        if extra:
            raise ConfigError(f"unknown run inputs {extra}; graph inputs are {list(graph.inputs)}")
        if deadline is not None and not deadline >= 0:
            raise ConfigError(f"deadline must be >= 0 seconds, got {deadline!r}")
        if not cancel_grace >= 0:
            raise ConfigError(f"cancel_grace must be >= 0 seconds, got {cancel_grace!r}")
        if limiter is not None and (max_concurrency is not None or resources):
            raise ConfigError("pass either limiter= or max_concurrency=/resources=, not both")
        if limiter is None and (max_concurrency is not None or resources):
            limiter = Limiter(max_concurrency, resources)
        loop = self._loop = asyncio.get_running_loop()
        self.graph = graph
        self.run_id = run_id or uuid.uuid4().hex[:16]
        self.inputs = dict(inputs)
        self.limiter = limiter
        self.estimates = estimates if estimates is not None else graph.estimates
        self.cancel_grace = cancel_grace
        self.status = RunStatus.RUNNING
        self.started_at = time.time()
        self._t0 = loop.time()  # every time of a run is on the loop's clock
        self.makespan: float | None = None
        self._plan = plan
        self._deadline_s = deadline
        self._events: list[RunEvent] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._finished = False
        self._outcome: _Outcome | None = None
        self._report: RunReport | None = None
        self._tasks = TaskSet(loop)
        # the plan, predicted from what earlier runs measured
        steps = graph.steps
        self._predicted = predicted = _predict(self.estimates, steps, plan.order)
        levels = bottom_levels(plan.order, plan.succs, predicted)
        self.predicted_span = max(levels.values(), default=0.0)
        self._deadline_at = _combine_deadline(loop, deadline)
        dl = self._deadline_at
        self._due_by_deadline = None if dl is None else self._t0 + (dl - loop.time())
        self._due = self._t0
        self._due_priority = 0
        self._set_due(self.predicted_span)
        self._nodes = nodes = {n: Node(steps[n], len(plan.preds[n]), levels[n]) for n in plan.order}
        for n, node in nodes.items():
            node.succs = [nodes[s] for s in plan.succs[n]]
        self._unresolved = len(nodes)
        self.streams = StreamFeeder(self, nodes)
        self.speculations = Speculations(self, loop)
        self._span = telemetry.start_run_span(self) if telemetry.tracing_enabled() else None
        self._done: asyncio.Future[None] = loop.create_future()
        self._task: asyncio.Task[RunResult] = loop.create_task(
            self._main(), name=f"critpath-run-{graph.name}-{self.run_id}"
        )

    # ---- public surface -------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, RunResult]:
        return self._task.__await__()

    def done(self) -> bool:
        return self._task.done()

    def cancel(self) -> None:
        """Cancel the run and everything under it; awaiting it then raises ``RunCancelled``."""
        self._resolve(_Outcome(_End.CANCELLED))

    async def __aenter__(self) -> Run:
        return self

    async def __aexit__(self, exc_type: object, *exc_info: object) -> None:
        """Cancel the run if it is still going and wait until it has ended (even if the
        owner is cancelled meanwhile). If the block itself raised nothing, the run's own
        error (other than the cancellation asked for here) is raised, as a task group
        would: exceptions always propagate."""
        stopped_here = not self._task.done()
        if stopped_here:
            self.cancel()
        cancelled = False
        while not self._task.done():
            try:
                await asyncio.wait({self._task})
            except asyncio.CancelledError:
                cancelled = True
        error = None if self._task.cancelled() else self._task.exception()
        if cancelled:
            raise asyncio.CancelledError
        expected = stopped_here and isinstance(error, RunCancelled)
        if exc_type is None and error is not None and not expected:
            raise error

    async def events(self) -> AsyncIterator[RunEvent]:
        """Every event of the run from its start (replayed), live, until it finishes."""
        i = 0
        while True:
            while i < len(self._events):
                yield self._events[i]
                i += 1
            if self._finished:
                return
            if self._wakeup is None:
                self._wakeup = self._loop.create_future()
            await asyncio.shield(self._wakeup)

    def report(self) -> RunReport:
        """The run's report (available once the run has finished)."""
        if self._report is None:
            if not self._finished:
                raise RunError("the report is available once the run has finished")
            self._report = build_report(self)
        return self._report

    def now(self) -> float:
        """Seconds since the run started."""
        return self._loop.time() - self._t0

    @property
    def speculation(self) -> SpeculationStats:
        """What this run speculated (see ``critpath.orchestrator.speculation``)."""
        return self.speculations.stats

    @property
    def nodes(self) -> Mapping[str, Node]:
        return self._nodes

    def records(self) -> list[StepRecord]:
        """Every unit's record, step by step in plan order."""
        return [r for node in self._nodes.values() for r in node.records]

    # ---- what the collaborators may ask (RunCore) ------------------------------------

    @property
    def ended(self) -> bool:
        return self._outcome is not None

    def emit(self, event: RunEvent) -> None:
        self._events.append(event)
        w = self._wakeup
        if w is not None:
            self._wakeup = None
            if not w.done():
                w.set_result(None)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return self._tasks.spawn(coro, name)

    def predicted(self, step: str) -> float:
        return self._predicted[step]

    def fail_unit(self, rec: StepRecord, exc: BaseException) -> None:
        self._step_failed(rec, exc, f"{type(exc).__name__}: {exc}")

    def fail_node(self, node: Node, exc: BaseException) -> None:
        rec = StepRecord(node.name, node.name, None, node.step.kind, ready=self.now())
        node.records.append(rec)
        self._step_failed(rec, exc, f"{type(exc).__name__}: {exc}")

    def fail_hook(self, step: str, exc: BaseException) -> None:
        self._resolve(_Outcome(_End.FAILED, step, exc))

    # ---- the run's life ---------------------------------------------------------------

    def _emit_partial(self, name: str, value: Any, best: bool) -> None:
        self.emit(StepPartial(name, self.now(), value, best))

    def _resolve(self, outcome: _Outcome) -> None:
        if self._outcome is None:
            self._outcome = outcome
            if not self._done.done():
                self._done.set_result(None)

    async def _main(self) -> RunResult:
        dl = self._deadline_at
        handle = (
            self._loop.call_at(dl, self._resolve, _Outcome(_End.DEADLINE))
            if dl is not None else None
        )  # fmt: skip
        cancelled = False
        try:
            ready = [node for node in self._nodes.values() if node.pending == 0]
            self._release([(node, None) for node in ready])
            await self._done
        except asyncio.CancelledError:
            if self._scope_fired_with_deadline():
                # The enclosing deadline scope fired in the same loop turn as the run's
                # own (earlier) deadline: the run ended first, so it still returns its
                # partial result, and the scope exits with it instead of a timeout.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            else:
                cancelled = True
                self._resolve(_Outcome(_End.CANCELLED))
        except Exception as exc:  # a defect in scheduling: fail the run, never hang it
            self._resolve(_Outcome(_End.FAILED, "<runtime>", exc))
        finally:
            if handle is not None:
                handle.cancel()
            cancelled = await self._stop_all() or cancelled
        return self._finish(cancelled)

    def _scope_fired_with_deadline(self) -> bool:
        outcome = self._outcome
        scope = current_deadline()
        return (
            outcome is not None
            and outcome.end == _End.DEADLINE
            and scope is not None
            and self._deadline_at is not None
            and self._deadline_at < scope
            and self._loop.time() >= scope
        )

    async def _stop_all(self) -> bool:
        """Cancel every task of the run and wait until each has ended (up to the grace
        period); then undo the speculations still open and wait for every hook."""
        if self.limiter is not None:
            self.limiter.forget(self)
        cancelled = False
        try:  # no new task starts once the run resolved
            stuck = await self._tasks.cancel_all(grace=self.cancel_grace)
        except asyncio.CancelledError:
            cancelled = True
            stuck = set()
        if stuck:
            self._report_stuck(stuck)
        self.speculations.close()
        if await self.speculations.wait_hooks():
            cancelled = True
        return cancelled

    def _report_stuck(self, stuck: set[asyncio.Task[Any]]) -> None:
        now = self.now()
        for task in stuck:
            rec = self._tasks.tag_of(task)
            if not isinstance(rec, StepRecord):  # a helper task (a predictor)
                _log.warning("run %s: task %r ignored its cancellation; abandoned",
                             self.run_id, task.get_name())  # fmt: skip
                continue
            error = StepStuckError(rec.name, self.cancel_grace)
            rec.status = _S_STUCK
            rec.end = now
            rec.error = f"{type(error).__name__}: {error}"
            _log.warning(
                "run %s: step %r ignored its cancellation for %.3fs; abandoned",
                self.run_id, rec.name, self.cancel_grace,
            )  # fmt: skip

    def _finish(self, cancelled: bool) -> RunResult:
        self.makespan = self.now()
        for node in self._nodes.values():
            if not node.records:
                node.records.append(
                    StepRecord(node.name, node.name, None, node.step.kind,
                               status=_S_NOT_RUN)
                )  # fmt: skip
        for rec in self.records():
            if rec.status == _S_RUNNING:
                rec.status = _S_CANCELLED
            elif rec.status == _S_QUEUED:
                rec.status = _S_NOT_RUN
        outcome = self._outcome or _Outcome(_End.OK)
        hook_errors = self.speculations.hook_errors
        if outcome.end == _End.OK and hook_errors:  # an undo that failed after the run ended
            outcome = _Outcome(_End.FAILED, *hook_errors[0])
        if cancelled and outcome.end == _End.OK:
            outcome = _Outcome(_End.CANCELLED)
        self.status = _STATUS_OF[outcome.end]
        self._learn()
        self._charge_budgets()
        outputs = {n: node.value for n, node in self._nodes.items() if node.state == _N_DONE}
        result: RunResult | None = None
        error: BaseException | None = None
        if outcome.end == _End.OK:
            result = RunResult(self, RunStatus.OK, outputs, self._output_of(outputs))
        elif outcome.end == _End.DEADLINE:
            result, error = self._deadline_result(outputs)
        elif outcome.end == _End.CANCELLED:
            error = RunCancelled("run cancelled by its owner")
        elif outcome.end == _End.FAILED:
            exc = outcome.error if outcome.error is not None else RuntimeError("unknown")
            error = StepFailedError(outcome.step or "?", exc)
            error.__cause__ = exc
        else:
            error = outcome.error
        self._finished = True
        self.emit(RunFinished("*", self.makespan, self.status))
        if self._span is not None or isinstance(error, RunError):
            report = self.report()
            if isinstance(error, RunError):
                error.report = report
            if self._span is not None:
                telemetry.end_run_span(self, report)
        if cancelled:
            raise asyncio.CancelledError
        if error is not None:
            raise error
        assert result is not None
        return result

    def _deadline_result(
        self, outputs: dict[str, Any]
    ) -> tuple[RunResult | None, BaseException | None]:
        partial = dict(outputs)
        for rec in self.records():
            ctx = rec.ctx
            unfinished = self._nodes[rec.step].state != _N_DONE
            if ctx is not None and ctx.has_partial and rec.item is None and unfinished:
                partial[rec.name] = ctx.partial
        wanted = [o for o in self._plan.outputs if self._nodes[o].state != _N_SKIPPED]
        if wanted and all(o in partial for o in wanted):
            self.status = RunStatus.PARTIAL
            return RunResult(self, RunStatus.PARTIAL, partial, self._output_of(partial)), None
        budget = self._deadline_s if self._deadline_s is not None else self.makespan or 0.0
        return None, DeadlineExceeded(budget, partial_outputs=partial)

    def _set_due(self, predicted_span: float) -> None:
        """Due time of the run: predicted finish, or the deadline if that comes first."""
        due = self._t0 + predicted_span
        if self._due_by_deadline is not None:
            due = min(due, self._due_by_deadline)
        self._due = due
        self._due_priority = priority_of(self.started_at + (due - self._t0), 0.0)

    def _replan(self) -> None:
        """A router excluded branches: re-predict the critical path without them."""
        plan = self._plan
        predicted = {
            n: 0.0 if node.excluded or node.state == _N_SKIPPED else self._predicted[n]
            for n, node in self._nodes.items()
        }
        levels = bottom_levels(plan.order, plan.succs, predicted)
        for n, node in self._nodes.items():
            node.blevel = levels[n]
        self._set_due(max(levels.values(), default=0.0))

    def _output_of(self, values: Mapping[str, Any]) -> Any:
        outs = self._plan.outputs
        if self._plan.single_output:
            return values.get(outs[0])
        return {o: values[o] for o in outs if o in values}

    def _charge_budgets(self) -> None:
        """Useful work earns speculation budgets their credit."""
        budgets = {}
        for step in self.graph.steps.values():
            if step.speculation is not None and step.speculation.budget is not None:
                budgets[id(step.speculation.budget)] = step.speculation.budget
        if not budgets:
            return
        done = (_S_OK, _S_FALLBACK)
        work = sum(r.end - r.start for r in self.records() if r.status in done
                   and r.start is not None and r.end is not None)  # fmt: skip
        for b in budgets.values():
            b.record_work(work)

    def _learn(self) -> None:
        est = self.estimates
        for rec in self.records():
            if rec.status == _S_OK and rec.start is not None and rec.end is not None:
                est.observe(rec.step, rec.end - rec.start)

    # ---- scheduling -------------------------------------------------------------------

    def _release(self, ready: list[tuple[Node, str | None]]) -> None:
        """Nodes that became ready together: hand them out least slack first."""
        if len(ready) > 1 and self.limiter is not None:
            ready.sort(key=lambda nb: -nb[0].blevel)
        for node, by in ready:
            if self._outcome is not None:
                return
            self.on_ready(node, by)

    def on_ready(self, node: Node, by: str | None) -> None:
        """All of ``node``'s dependencies resolved: skip it, or queue/start its units."""
        stack = [(node, by)]
        speculations = self.speculations
        while stack:
            n, released_by = stack.pop()
            if self._outcome is not None:
                return
            if n.state != _N_WAITING:
                continue
            if speculations.is_open(n):  # its router decided while it was speculated
                if not self.must_skip(n):
                    speculations.commit(n, released_by)
                    continue
                speculations.cancel(n)
            if self.streams.waits_for_producer(n) and not self.must_skip(n):
                continue  # armed when its stream starts (see StreamFeeder.produce)
            if self.must_skip(n):
                self._skip(n, released_by, stack)
                continue
            n.state = _N_ACTIVE
            step = n.step
            if step.kind == _K_MAP:
                if not self._start_map(n, released_by):
                    return
            elif step.kind == _K_EACH:
                self.streams.arm(n)
            else:
                self.queue_unit(n, None, None, released_by)

    def _skip(self, n: Node, by: str | None, stack: list[tuple[Node, str | None]]) -> None:
        n.state = _N_SKIPPED
        reason = "branch not chosen" if n.excluded else "a required dependency was skipped"
        n.records.append(StepRecord(n.name, n.name, None, n.step.kind, status=_S_SKIPPED,
                                    error=reason, released_by=by))  # fmt: skip
        self.emit(StepSkipped(n.name, self.now(), reason))
        self._unresolved -= 1
        for s in n.succs:
            s.pending -= 1
            if s.pending == 0:
                stack.append((s, by))
        for c in self.streams.consumers_of(n):  # a skipped stream skips its consumers
            if c.pending == 0:
                stack.append((c, by))
        if self._unresolved == 0:
            self._resolve(_Outcome(_End.OK))

    def _start_map(self, n: Node, by: str | None) -> bool:
        """Queue one unit per item; ``False`` if iterating the items failed the run."""
        step = n.step
        assert step.over is not None
        try:
            items = list(self._value_of(step.over))
        except Exception as exc:  # not iterable, or its iteration raised
            rec = StepRecord(step.name, step.name, None, _K_MAP, ready=self.now(),
                             released_by=by)  # fmt: skip
            n.records.append(rec)
            self._step_failed(rec, exc, f"cannot iterate over {step.over!r}: {exc!r}")
            return False
        n.results = [None] * len(items)
        n.left = len(items)
        if not items:
            now = self.now()
            n.records.append(StepRecord(step.name, step.name, None, _K_MAP,
                                        status=_S_OK, ready=now, start=now, end=now,
                                        released_by=by))  # fmt: skip
            self.complete(n, [], step.name)
            return True
        for i, item in enumerate(items):
            self.queue_unit(n, i, item, by)
        return True

    def must_skip(self, node: Node) -> bool:
        if node.excluded:
            return True
        nodes = self._nodes
        for p in node.step.params:
            src = nodes.get(p.source)
            if src is not None and src.state == _N_SKIPPED and p.required:
                return True
        over = node.step.over
        return over is not None and over in nodes and nodes[over].state == _N_SKIPPED

    def _value_of(self, source: str) -> Any:
        node = self._nodes.get(source)
        if node is None:
            return self.inputs[source]
        return node.value

    def queue_unit(
        self,
        node: Node,
        item: int | None,
        value: Any,
        by: str | None,
        *,
        speculative: bool = False,
    ) -> StepRecord:
        step = node.step
        name = step.name if item is None else f"{step.name}[{item}]"
        if speculative:
            name += "~spec"
        rec = StepRecord(name, step.name, item, step.kind, status=_S_QUEUED,
                         ready=self._loop.time() - self._t0, resource=step.resource,
                         speculative=speculative,
                         released_by=by)  # fmt: skip
        node.records.append(rec)
        key = self._due - node.blevel  # the latest start time
        limiter = self.limiter
        if limiter is None:
            self._start_unit(node, rec, value, key)
            return rec

        def start(released: object) -> None:  # called by the limiter when a slot frees
            if self._outcome is not None:  # the run has ended: give the slot back
                limiter.release(step.resource)
                return
            if rec.speculative and not self.speculations.is_open(node):
                limiter.release(step.resource)  # cancelled while it queued
                rec.status = _S_NOT_RUN
                return
            rec.slot_from = self._slot_releaser(released)
            self._start_unit(node, rec, value, key, slot=True)

        # Across runs sharing the limiter: earliest due run first; within a run: least slack.
        if limiter.acquire_or_wait((self._due, key), step.resource, start, self):
            self._start_unit(node, rec, value, key, slot=True)
        else:
            self.emit(StepQueued(name, rec.ready or 0.0, key - self._loop.time()))
        return rec

    def _slot_releaser(self, released: object) -> str | None:
        if isinstance(released, tuple) and len(released) == 2:
            owner, name = released
            return str(name) if owner is self else _OTHER_RUN
        return None if released is None else _OTHER_RUN

    def _start_unit(
        self, node: Node, rec: StepRecord, item: Any, key: float, *, slot: bool = False
    ) -> None:
        slack = key - self._loop.time()
        priority = step_priority(self._due_priority, key - self._t0)
        rec.priority = priority
        rec.predicted_slack = slack
        rec.ctx = ctx = StepContext(
            node.name, rec.name, rec.item, self.run_id, priority, slack,
            self._deadline_at, node.step.resource, self._emit_partial,
            origin=self._t0, defer_spans=self._span is not None,
        )  # fmt: skip
        ctx.speculative = rec.speculative
        if self._due_by_deadline is not None:  # the deadline less the predicted rest
            ctx.latest_finish = self._due_by_deadline - node.blevel + self._predicted[node.name]
        if rec.item is not None and node.step.kind == _K_EACH:
            ctx.needed = self.streams.needed_by(node, rec.item)
        task = self._tasks.spawn(self._exec(node, rec, ctx, item), rec.name, rec)
        if rec.speculative:
            self.speculations.attach(node, task)
        if slot:
            limiter = self.limiter
            assert limiter is not None
            resource = node.step.resource
            task.add_done_callback(lambda _t: limiter.release(resource, (self, rec.name)))

    def _kwargs(self, node: Node, ctx: StepContext, item: Any) -> dict[str, Any]:
        step = node.step
        nodes = self._nodes
        kwargs: dict[str, Any] = {}
        for p in step.params:
            src = nodes.get(p.source)
            if src is None:
                kwargs[p.name] = self.inputs[p.source]
            elif src.state == _N_SKIPPED:
                kwargs[p.name] = p.default
            else:
                kwargs[p.name] = src.value
        if step.ctx_param is not None:
            kwargs[step.ctx_param] = ctx
        if step.item_param is not None:
            kwargs[step.item_param] = item
        return kwargs

    # ---- one unit ---------------------------------------------------------------------

    async def _call(
        self, node: Node, rec: StepRecord, ctx: StepContext, kwargs: dict[str, Any]
    ) -> Any:
        memo = node.step.cache
        if memo is None:
            return await self._compute(node, rec, ctx, kwargs)
        inputs = {k: v for k, v in kwargs.items() if k != node.step.ctx_param}
        key = memo.key(node.step.name, inputs)
        if key is not None:
            value = await memo.lookup(key)
            if value is not MISSING:
                return value
        value = await self._compute(node, rec, ctx, kwargs)
        if key is not None:
            await memo.save(key, value)
        return value

    async def _compute(
        self, node: Node, rec: StepRecord, ctx: StepContext, kwargs: dict[str, Any]
    ) -> Any:
        step = node.step
        if step.kind == _K_STREAM:
            return await self.streams.produce(node, rec, kwargs)
        if step.retry is not None:

            def attempt(n: int) -> None:
                ctx.attempt = rec.attempts = n

            return await call_with_retry(
                step.retry, lambda: _invoke(step, kwargs), on_attempt=attempt, name=rec.name
            )
        if step.is_async:
            return await step.fn(**kwargs)
        value = step.fn(**kwargs)
        if inspect.isawaitable(value):  # a sync decorator around an async fn
            value = await value
        return value

    async def _exec(self, node: Node, rec: StepRecord, ctx: StepContext, item: Any) -> None:
        step = node.step
        _set_current(ctx)
        if self._deadline_at is not None:
            _set_deadline(self._deadline_at)
        span = telemetry.start_step_span(self, rec) if self._span is not None else None
        start = rec.start = self._loop.time() - self._t0
        rec.status = _S_RUNNING
        self.emit(StepStarted(rec.name, start, ctx.priority, ctx.slack))
        fell_back = False
        try:
            kwargs = self._kwargs(node, ctx, item)
            if step.kind == _K_ROUTE and step.predict is not None:
                self.speculations.speculate(node, kwargs, rec)
            try:
                if step.is_async and step.retry is None and step.cache is None and (
                    step.kind != _K_STREAM
                ):
                    value = await step.fn(**kwargs)  # the common case, one frame less
                else:
                    value = await self._call(node, rec, ctx, kwargs)
            except Exception as exc:
                if rec.speculative and self.speculations.unit_failed(node, rec, exc):
                    return
                if self._is_run_deadline(exc):
                    # The step's own clocks (e.g. a model call's) ran out with the run's
                    # deadline: that is the run's deadline, not the step failing.
                    rec.end = self.now()
                    rec.status = _S_CANCELLED
                    self.emit(StepCancelled(rec.name, rec.end, "deadline"))
                    self._resolve(_Outcome(_End.DEADLINE))
                    return
                if not step.has_fallback:
                    self._step_failed(rec, exc, f"{type(exc).__name__}: {exc}")
                    return
                rec.error = f"{type(exc).__name__}: {exc}"
                fell_back = True
                value = step.fallback_fn(exc) if step.fallback_fn is not None else step.fallback
        except asyncio.CancelledError as exc:
            if self._finished:  # abandoned as stuck: its record is final
                raise
            rec.end = self.now()
            task = asyncio.current_task()
            if self._outcome is None and task is not None and task.cancelling() == 0:
                # Not cancelled by the run: something inside the step raised it (a library
                # cancelling a future it awaited). Fail the step rather than hang the run.
                self._step_failed(rec, exc, "CancelledError raised inside the step")
                return
            rec.status = _S_CANCELLED
            reason = self._outcome.end.value if self._outcome is not None else ""
            self.emit(StepCancelled(rec.name, rec.end, reason))
            raise
        except Exception as exc:  # a fallback_fn that raised
            self._step_failed(rec, exc, f"{type(exc).__name__}: {exc}")
            return
        finally:
            if span is not None:
                rec.span = span
        if self._finished:  # abandoned as stuck: its record is final
            return
        end = rec.end = self._loop.time() - self._t0
        rec.status = _S_FALLBACK if fell_back else _S_OK
        self.emit(StepFinished(rec.name, end, value, end - start, fell_back))
        if self._outcome is not None:
            return
        if rec.speculative and self.speculations.unit_finished(node, value):
            return
        try:
            if step.kind == _K_EACH:
                self.streams.item_done(node, rec, value)
            elif step.kind == _K_MAP:
                assert rec.item is not None
                node.results[rec.item] = value
                node.left -= 1
                if node.left == 0:
                    self.complete(node, node.results, rec.name)
            else:
                self.complete(node, value, rec.name)
        except Exception as exc:  # releasing dependants raised: fail the run, never hang
            self._resolve(_Outcome(_End.FAILED, rec.name, exc))

    def _is_run_deadline(self, exc: BaseException) -> bool:
        """A timeout raised at (or just before) the run's deadline is the deadline's."""
        dl = self._deadline_at
        return (
            dl is not None
            and isinstance(exc, TimeoutError)
            and self._loop.time() >= dl - _DEADLINE_SLOP_S
        )

    def _step_failed(self, rec: StepRecord, exc: BaseException, error: str) -> None:
        rec.end = self.now()
        rec.status = _S_FAILED
        rec.error = error
        self.emit(StepFailed(rec.name, rec.end, exc))
        self._resolve(_Outcome(_End.FAILED, rec.name, exc))

    def complete(self, node: Node, value: Any, by: str | None) -> None:
        step = node.step
        node.value = value
        node.state = _N_DONE
        if step.kind == _K_ROUTE:
            chosen = _branches(value)
            bad = [b for b in chosen if b not in step.branches]
            if bad:
                self._resolve(_Outcome(_End.ROUTE, step.name,
                                       RouteError(step.name, value, step.branches)))  # fmt: skip
                return
            self.estimates.observe_route(step.name, chosen)
            self.speculations.router_decided(step.name)
            for b in step.branches:
                if b not in chosen:
                    self._nodes[b].excluded = True
            if len(chosen) < len(step.branches):
                self._replan()
            self.emit(RouteChosen(step.name, self.now(), chosen))
        self._unresolved -= 1
        self.streams.stream_ended(node)
        ready = []
        for s in node.succs:
            s.pending -= 1
            if s.pending == 0:
                ready.append((s, by))
        if ready:
            self._release(ready)
        if self._unresolved == 0:
            self._resolve(_Outcome(_End.OK))


_STATUS_OF = {
    _End.OK: RunStatus.OK,
    _End.DEADLINE: RunStatus.DEADLINE,
    _End.CANCELLED: RunStatus.CANCELLED,
    _End.FAILED: RunStatus.FAILED,
    _End.ROUTE: RunStatus.FAILED,
}


async def _invoke(step: StepSpec, kwargs: dict[str, Any]) -> Any:
    value = step.fn(**kwargs)
    return await value if inspect.isawaitable(value) else value


def _branches(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        return (value,)


def _predict(
    estimates: Estimates, steps: Mapping[str, StepSpec], order: Sequence[str]
) -> dict[str, float]:
    """Predicted duration of each step: learned, else its ``estimate=``, else a default.

    The default for a step never measured is the median of the graph's learned
    estimates (so one unseen branch does not dwarf the rest), or the store's default.
    """
    learned = {n: e.ewma for n in order if (e := estimates.get(n)) is not None and e.count}
    fallback = statistics.median(learned.values()) if learned else estimates.default
    predicted: dict[str, float] = {}
    for n in order:
        explicit = steps[n].estimate
        predicted[n] = learned.get(n, explicit if explicit is not None else fallback)
    return predicted


def _combine_deadline(loop: asyncio.AbstractEventLoop, seconds: float | None) -> float | None:
    """The run's deadline: its own, or the enclosing scope's if that comes first.

    An enclosing scope's deadline is taken a little early, so the run ends on its own
    clock — with its partial result, or ``DeadlineExceeded`` (a ``TimeoutError``) —
    before the scope cancels the task that awaits it.
    """
    outer = deadline_before_scope(_SCOPE_MARGIN_S)
    if seconds is None:
        return outer
    mine = loop.time() + seconds
    return mine if outer is None else min(outer, mine)
