"""The async runtime: every step starts the moment its inputs are ready.

There is no superstep barrier: finishing a step releases its dependants at once, so a
slow branch never delays an unrelated fast one. When concurrency limits leave more
steps ready than may run, the one with least slack (earliest latest-start time on the
predicted critical path) goes first. A run owns every task it starts: cancelling it,
a failing step, or its deadline cancels them all and waits for them to finish, so no
task outlives its run.
"""

from __future__ import annotations

import asyncio
import inspect
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from critpath import telemetry
from critpath._tasks import cancel_and_wait
from critpath.deadlines import _set_deadline, deadline_before_scope
from critpath.errors import (
    ConfigError,
    DeadlineExceeded,
    MissingInputError,
    RouteError,
    RunCancelled,
    RunError,
    StepFailedError,
)
from critpath.estimates import Estimates
from critpath.orchestrator._nodes import ACTIVE as _ACTIVE
from critpath.orchestrator._nodes import DONE as _DONE
from critpath.orchestrator._nodes import SKIPPED as _SKIPPED
from critpath.orchestrator._nodes import WAITING as _WAITING
from critpath.orchestrator._nodes import Node as _Node
from critpath.orchestrator._pipelines import Pipelines
from critpath.orchestrator.analysis import bottom_levels
from critpath.orchestrator.context import StepContext, _set_current, priority_of
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
from critpath.orchestrator.policy import call_with_retry
from critpath.orchestrator.report import RunReport, StepRecord, build_report
from critpath.orchestrator.speculation import SpeculationStats
from critpath.orchestrator.states import RunStatus, StepStatus

if TYPE_CHECKING:
    from critpath.orchestrator.graph import Graph, StepSpec, _Plan

__all__ = ["Run", "RunResult"]

_DEADLINE_SLOP_S = 0.02  # a step's timeout this close to the run's deadline is the deadline
_SCOPE_MARGIN_S = 0.005  # end this much before an enclosing deadline scope fires


class RunResult:
    """What a finished run produced.

    ``status`` is ``"ok"``, or ``"partial"`` when the deadline passed but every output
    had a value or a partial result. ``outputs`` maps step names to values (skipped
    steps are absent); ``output`` is the graph's output step's value (or a dict of the
    sinks' values when the graph has several). ``report`` is built on first access.
    """

    __slots__ = ("_report", "_run", "output", "outputs", "status")

    def __init__(self, run: Run, status: str, outputs: dict[str, Any], output: Any) -> None:
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
        return f"RunResult(status={self.status!r}, output={self.output!r})"


class Run(Pipelines):
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
        if limiter is not None and (max_concurrency is not None or resources):
            raise ConfigError("pass either limiter= or max_concurrency=/resources=, not both")
        if limiter is None and (max_concurrency is not None or resources):
            limiter = Limiter(max_concurrency, resources)
        self.graph = graph
        self.run_id = run_id or uuid.uuid4().hex[:16]
        self.inputs = dict(inputs)
        self.limiter = limiter
        self.estimates = estimates if estimates is not None else graph.estimates
        self._plan = plan
        self._deadline_s = deadline
        self._events: list[RunEvent] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._finished = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._hooks: set[asyncio.Task[None]] = set()
        self._hook_errors: list[tuple[str, BaseException]] = []
        self._predicting: dict[str, asyncio.Task[None]] = {}
        self._outcome: tuple[str, Any] | None = None
        self._report: RunReport | None = None
        self.status = RunStatus.RUNNING
        self.started_at = time.time()
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()  # every time of a run is on the loop's clock
        self.makespan: float | None = None
        self.speculation = SpeculationStats()
        """What this run speculated (see ``critpath.orchestrator.speculation``)."""
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._task: asyncio.Task[RunResult] = self._loop.create_task(
            self._main(), name=f"critpath-run-{graph.name}-{self.run_id}"
        )

    # ---- public surface -------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, RunResult]:
        return self._task.__await__()

    def done(self) -> bool:
        return self._task.done()

    def cancel(self) -> None:
        """Cancel the run and everything under it; awaiting it then raises ``RunCancelled``."""
        self._resolve(("cancelled", None))

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

    # ---- internals ------------------------------------------------------------------

    def _emit(self, event: RunEvent) -> None:
        self._events.append(event)
        w = self._wakeup
        if w is not None:
            self._wakeup = None
            if not w.done():
                w.set_result(None)

    def _emit_partial(self, name: str, value: Any, best: bool) -> None:
        self._emit(StepPartial(name, self.now(), value, best))

    def _resolve(self, outcome: tuple[str, Any]) -> None:
        if self._outcome is None:
            self._outcome = outcome
            done = self._done
            if not done.done():
                done.set_result(None)

    async def _main(self) -> RunResult:
        loop = self._loop
        steps = self.graph.steps
        plan: _Plan = self._plan
        self._predicted = predicted = _predict(self.estimates, steps, plan.order)
        levels = bottom_levels(plan.order, plan.succs, predicted)
        self.predicted_span = max(levels.values(), default=0.0)
        self._deadline_at = dl = _combine_deadline(loop, self._deadline_s)
        self._due_by_deadline = None if dl is None else self._t0 + (dl - loop.time())
        self._set_due(self.predicted_span)
        nodes = self._nodes = {
            n: _Node(steps[n], len(plan.preds[n]), levels[n]) for n in plan.order
        }
        for n, node in nodes.items():
            node.succs = [nodes[s] for s in plan.succs[n]]
        for node in nodes.values():  # an each step consumes its stream item by item
            if node.spec.kind == "each":
                assert node.spec.over is not None
                producer = node.producer = nodes[node.spec.over]
                producer.succs.remove(node)
                producer.consumers.append(node)
                node.pending -= 1
        self._unresolved = len(nodes)
        handle = loop.call_at(dl, self._resolve, ("deadline", None)) if dl is not None else None
        self._span = telemetry.start_run_span(self) if telemetry.tracing_enabled() else None
        cancelled = False
        try:
            self._release([node for node in nodes.values() if node.pending == 0])
            await self._done
        except asyncio.CancelledError:
            cancelled = True
            self._resolve(("cancelled", None))
        except Exception as exc:  # a defect in scheduling: fail the run, never hang it
            self._resolve(("failed", ("<runtime>", exc)))
        finally:
            if handle is not None:
                handle.cancel()
            cancelled = await self._stop_all() or cancelled
        return self._finish(cancelled)

    async def _stop_all(self) -> bool:
        """Cancel every task of the run and wait until each has ended; then undo the
        speculations still open and wait for every commit/undo hook to finish."""
        if self.limiter is not None:
            self.limiter.forget(self)
        cancelled = False
        try:
            await cancel_and_wait(self._tasks)  # no new task starts once the run resolved
        except asyncio.CancelledError:
            cancelled = True
        finally:
            self._tasks.clear()
        for node in self._nodes.values():
            if node.spec_state is not None:  # started early, never committed and finished
                self._cancel_speculation(node)
        while self._hooks:  # hooks run to their end, even if we are cancelled meanwhile
            try:
                await asyncio.wait(set(self._hooks))
            except asyncio.CancelledError:
                cancelled = True
        return cancelled

    def _finish(self, cancelled: bool) -> RunResult:
        self.makespan = self.now()
        for node in self._nodes.values():
            if not node.records:
                node.records.append(
                    StepRecord(
                        node.spec.name, node.spec.name, None, node.spec.kind,
                        status=StepStatus.NOT_RUN,
                    )
                )
        for rec in self._records():
            if rec.status == "running":
                rec.status = StepStatus.CANCELLED
            elif rec.status == "queued":
                rec.status = StepStatus.NOT_RUN
        kind, detail = self._outcome or ("ok", None)
        if kind == "ok" and self._hook_errors:  # an undo that failed after the run ended
            kind, detail = "failed", self._hook_errors[0]
        if cancelled and kind == "ok":
            kind = "cancelled"
        self.status = {
            "ok": RunStatus.OK, "deadline": RunStatus.DEADLINE, "cancelled": RunStatus.CANCELLED
        }.get(kind, RunStatus.FAILED)  # fmt: skip
        self._learn()
        self._charge_budgets()
        outputs = {n: node.value for n, node in self._nodes.items() if node.state == _DONE}
        result: RunResult | None = None
        error: BaseException | None = None
        if kind == "ok":
            result = RunResult(self, "ok", outputs, self._output_of(outputs))
        elif kind == "deadline":
            partial = dict(outputs)
            for rec in self._records():
                ctx = rec.ctx
                unfinished = self._nodes[rec.step].state != _DONE
                if ctx is not None and ctx.has_partial and rec.item is None and unfinished:
                    partial[rec.name] = ctx.partial
            wanted = [o for o in self._plan.outputs if self._nodes[o].state != _SKIPPED]
            if wanted and all(o in partial for o in wanted):
                self.status = RunStatus.PARTIAL
                result = RunResult(self, "partial", partial, self._output_of(partial))
            else:
                budget = self._deadline_s if self._deadline_s is not None else self.makespan
                error = DeadlineExceeded(budget, partial_outputs=partial)
        elif kind == "cancelled":
            error = RunCancelled("run cancelled by its owner")
        elif kind == "failed":
            step, exc = detail if detail is not None else ("?", RuntimeError("unknown"))
            error = StepFailedError(step, exc)
            error.__cause__ = exc
        elif kind == "route":
            error = detail
        self._finished = True
        self._emit(RunFinished("*", self.makespan, self.status))
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
            n: 0.0 if node.excluded or node.state == _SKIPPED else self._predicted[n]
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

    def _records(self) -> list[StepRecord]:
        return [r for node in self._nodes.values() for r in node.records]

    def _charge_budgets(self) -> None:
        """Useful work earns speculation budgets their credit."""
        budgets = {}
        for spec in self.graph.steps.values():
            if spec.speculation is not None and spec.speculation.budget is not None:
                budgets[id(spec.speculation.budget)] = spec.speculation.budget
        if not budgets:
            return
        work = sum(r.end - r.start for r in self._records() if r.status in ("ok", "fallback")
                   and r.start is not None and r.end is not None)  # fmt: skip
        for b in budgets.values():
            b.record_work(work)

    def _learn(self) -> None:
        est = self.estimates
        for rec in self._records():
            if rec.status == "ok" and rec.start is not None and rec.end is not None:
                est.observe(rec.step, rec.end - rec.start)

    # ---- scheduling -----------------------------------------------------------------

    def _release(self, ready: list[_Node]) -> None:
        """Nodes that became ready together: hand them out least slack first."""
        if len(ready) > 1 and self.limiter is not None:
            ready.sort(key=lambda n: -n.blevel)
        for node in ready:
            if self._outcome is not None:
                return
            self._on_ready(node)

    def _on_ready(self, node: _Node) -> None:
        """All of ``node``'s dependencies resolved: skip it, or queue/start its units."""
        stack = [node]
        while stack:
            n = stack.pop()
            if self._outcome is not None:
                return
            if n.state != _WAITING:
                continue
            if n.spec_state is not None:  # its router decided while it was speculated
                if not self._must_skip(n):
                    self._commit_speculation(n)
                    continue
                self._cancel_speculation(n)
            if n.producer is not None and n.producer.state == _WAITING and not self._must_skip(n):
                continue  # armed when its stream starts (see _arm)
            if self._must_skip(n):
                n.state = _SKIPPED
                reason = "branch not chosen" if n.excluded else "a required dependency was skipped"
                n.records.append(
                    StepRecord(n.spec.name, n.spec.name, None, n.spec.kind,
                               status=StepStatus.SKIPPED, error=reason)
                )  # fmt: skip
                self._emit(StepSkipped(n.spec.name, self.now(), reason))
                self._unresolved -= 1
                for s in n.succs:
                    s.pending -= 1
                    if s.pending == 0:
                        stack.append(s)
                for c in n.consumers:  # a skipped stream skips its consumers
                    if c.pending == 0:
                        stack.append(c)
                if self._unresolved == 0:
                    self._resolve(("ok", None))
                continue
            n.state = _ACTIVE
            spec = n.spec
            if spec.kind == "map":
                assert spec.over is not None
                try:
                    items = list(self._value_of(spec.over))
                except Exception as exc:  # not iterable, or its iteration raised
                    rec = StepRecord(spec.name, spec.name, None, "map", ready=self.now())
                    n.records.append(rec)
                    self._step_failed(rec, exc, f"cannot iterate over {spec.over!r}: {exc!r}")
                    return
                n.results = [None] * len(items)
                n.left = len(items)
                if not items:
                    n.records.append(
                        StepRecord(spec.name, spec.name, None, "map", status=StepStatus.OK,
                                   start=self.now(), end=self.now())
                    )  # fmt: skip
                    self._complete(n, [])
                    continue
                for i, item in enumerate(items):
                    self._ready_unit(n, i, item)
            elif spec.kind == "each":
                self._arm(n)
            else:
                self._ready_unit(n, None, None)

    def _must_skip(self, node: _Node) -> bool:
        if node.excluded:
            return True
        nodes = self._nodes
        for p in node.spec.params:
            src = nodes.get(p.source)
            if src is not None and src.state == _SKIPPED and p.required:
                return True
        over = node.spec.over
        return over is not None and over in nodes and nodes[over].state == _SKIPPED

    def _value_of(self, source: str) -> Any:
        node = self._nodes.get(source)
        if node is None:
            return self.inputs[source]
        return node.value

    def _ready_unit(
        self, node: _Node, item: int | None, value: Any, *, speculative: bool = False
    ) -> None:
        spec = node.spec
        name = spec.name if item is None else f"{spec.name}[{item}]"
        if speculative:
            name += "~spec"
        rec = StepRecord(name, spec.name, item, spec.kind, status=StepStatus.QUEUED,
                         ready=self.now(), resource=spec.resource,
                         speculative=speculative)  # fmt: skip
        node.records.append(rec)
        key = self._due - node.blevel  # the latest start time
        limiter = self.limiter
        if limiter is None:
            self._start_unit(node, rec, value, key, False)
            return

        def start() -> None:  # called by the limiter when a slot frees
            if self._outcome is not None:  # the run has ended: give the slot back
                limiter.release(spec.resource)
                return
            if rec.speculative and node.spec_state is None:  # cancelled while queued
                limiter.release(spec.resource)
                rec.status = StepStatus.NOT_RUN
                return
            self._start_unit(node, rec, value, key, True)

        # Across runs sharing the limiter: earliest due run first; within a run: least slack.
        if limiter.acquire_or_wait((self._due, key), spec.resource, start, self):
            self._start_unit(node, rec, value, key, True)
        else:
            self._emit(StepQueued(name, rec.ready or 0.0, key - self._loop.time()))

    def _start_unit(self, node: _Node, rec: StepRecord, item: Any, key: float, slot: bool) -> None:
        now = self._loop.time()
        slack = key - now
        offset = int((key - self._t0) * 100)  # see priority_of: 10 ms units, 0..999
        priority = self._due_priority + (0 if offset < 0 else 999 if offset > 999 else offset)
        rec.priority = priority
        rec.predicted_slack = slack
        rec.ctx = ctx = StepContext(
            node.spec.name, rec.name, rec.item, self.run_id, priority, slack,
            self._deadline_at, node.spec.resource, self._emit_partial,
        )  # fmt: skip
        ctx.speculative = rec.speculative
        if node.tracker is not None and rec.item is not None:
            ctx.needed = node.tracker.needed_by(rec.item)
        task = self._loop.create_task(self._exec(node, rec, ctx, item), name=rec.name)
        self._tasks.add(task)  # the task removes itself when it ends (see _exec)
        if rec.speculative:
            node.spec_task = task
        if slot:
            assert self.limiter is not None
            task.add_done_callback(self.limiter.release_later(node.spec.resource))

    def _kwargs(self, node: _Node, ctx: StepContext, item: Any) -> dict[str, Any]:
        spec = node.spec
        nodes = self._nodes
        kwargs: dict[str, Any] = {}
        for p in spec.params:
            src = nodes.get(p.source)
            if src is None:
                kwargs[p.name] = self.inputs[p.source]
            elif src.state == _SKIPPED:
                kwargs[p.name] = p.default
            else:
                kwargs[p.name] = src.value
        if spec.ctx_param is not None:
            kwargs[spec.ctx_param] = ctx
        if spec.item_param is not None:
            kwargs[spec.item_param] = item
        return kwargs

    async def _exec(self, node: _Node, rec: StepRecord, ctx: StepContext, item: Any) -> None:
        spec = node.spec
        _set_current(ctx)
        if self._deadline_at is not None:
            _set_deadline(self._deadline_at)
        span = telemetry.start_step_span(self, rec) if self._span is not None else None
        start = rec.start = self._loop.time() - self._t0
        rec.status = StepStatus.RUNNING
        self._emit(StepStarted(rec.name, start, ctx.priority, ctx.slack))
        fell_back = False
        try:
            kwargs = self._kwargs(node, ctx, item)
            if spec.kind == "route" and spec.predict is not None:
                self._speculate(node, kwargs)
            try:
                if spec.kind == "stream":
                    value = await self._produce(node, rec, kwargs)
                elif spec.retry is not None:

                    def attempt(n: int) -> None:
                        ctx.attempt = rec.attempts = n

                    value = await call_with_retry(
                        spec.retry, lambda: _invoke(spec, kwargs), on_attempt=attempt
                    )
                elif spec.is_async:
                    value = await spec.fn(**kwargs)
                else:
                    value = spec.fn(**kwargs)
                    if inspect.isawaitable(value):  # a sync decorator around an async fn
                        value = await value
            except Exception as exc:
                if rec.speculative and node.spec_state in ("running", "committed"):
                    # A failed guess fails nothing: the branch runs again if chosen
                    # (at once, when it was chosen already).
                    rec.end = self._loop.time() - self._t0
                    rec.status = StepStatus.FAILED
                    rec.error = f"{type(exc).__name__}: {exc}"
                    if node.spec_state == "committed":
                        node.spec_state = None
                        self._ready_unit(node, None, None)
                    else:
                        node.spec_state = "failed"
                    return
                if self._is_run_deadline(exc):
                    # The step's own clocks (e.g. a model call's) ran out with the run's
                    # deadline: that is the run's deadline, not the step failing.
                    rec.end = self._loop.time() - self._t0
                    rec.status = StepStatus.CANCELLED
                    self._emit(StepCancelled(rec.name, rec.end, "deadline"))
                    self._resolve(("deadline", None))
                    return
                if not spec.has_fallback:
                    self._step_failed(rec, exc, f"{type(exc).__name__}: {exc}")
                    return
                rec.error = f"{type(exc).__name__}: {exc}"
                fell_back = True
                value = spec.fallback_fn(exc) if spec.fallback_fn is not None else spec.fallback
        except asyncio.CancelledError as exc:
            rec.end = self._loop.time() - self._t0
            task = asyncio.current_task()
            if self._outcome is None and task is not None and task.cancelling() == 0:
                # Not cancelled by the run: something inside the step raised it (a library
                # cancelling a future it awaited). Fail the step rather than hang the run.
                self._step_failed(rec, exc, "CancelledError raised inside the step")
                return
            rec.status = StepStatus.CANCELLED
            self._emit(StepCancelled(rec.name, rec.end, self._outcome[0] if self._outcome else ""))
            raise
        except Exception as exc:  # a fallback_fn that raised
            self._step_failed(rec, exc, f"{type(exc).__name__}: {exc}")
            return
        finally:
            if span is not None:
                rec.span = span
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type,unused-ignore]
        end = rec.end = self._loop.time() - self._t0
        rec.status = StepStatus.FALLBACK if fell_back else StepStatus.OK
        self._emit(StepFinished(rec.name, end, value, end - start, fell_back))
        if self._outcome is not None:
            return
        if rec.speculative:
            if node.spec_state == "running":  # finished before its router decided
                node.spec_state, node.spec_value = "finished", value
                return
            if node.spec_state == "committed":
                node.spec_state = None
                if self._has_hook(node, "commit"):
                    self._finish_commit(node, value)
                    return
        try:
            if spec.kind == "each":
                assert rec.item is not None
                self._item_done(node, rec.item, value)
            elif spec.kind == "map":
                assert rec.item is not None
                node.results[rec.item] = value
                node.left -= 1
                if node.left == 0:
                    self._complete(node, node.results)
            else:
                self._complete(node, value)
        except Exception as exc:  # releasing dependants raised: fail the run, never hang
            self._resolve(("failed", (rec.name, exc)))

    def _is_run_deadline(self, exc: BaseException) -> bool:
        """A timeout raised at (or just before) the run's deadline is the deadline's."""
        dl = self._deadline_at
        return (
            dl is not None
            and isinstance(exc, TimeoutError)
            and self._loop.time() >= dl - _DEADLINE_SLOP_S
        )

    def _step_failed(self, rec: StepRecord, exc: BaseException, error: str) -> None:
        rec.end = self._loop.time() - self._t0
        rec.status = StepStatus.FAILED
        rec.error = error
        self._emit(StepFailed(rec.name, rec.end, exc))
        self._resolve(("failed", (rec.name, exc)))

    def _complete(self, node: _Node, value: Any) -> None:
        spec = node.spec
        node.value = value
        node.state = _DONE
        if spec.kind == "route":
            chosen = _branches(value)
            bad = [b for b in chosen if b not in spec.branches]
            if bad:
                self._resolve(("route", RouteError(spec.name, value, spec.branches)))
                return
            self.estimates.observe_route(spec.name, chosen)
            predicting = self._predicting.pop(spec.name, None)
            if predicting is not None:  # too late to help: stop the predictor
                predicting.cancel()
            for b in spec.branches:
                if b not in chosen:
                    self._nodes[b].excluded = True
            if len(chosen) < len(spec.branches):
                self._replan()
            self._emit(RouteChosen(spec.name, self.now(), chosen))
        self._unresolved -= 1
        for c in node.consumers:  # the stream ended
            if c.tracker is not None:
                self._close_stream(c)
        ready = []
        for s in node.succs:
            s.pending -= 1
            if s.pending == 0:
                ready.append(s)
        if ready:
            self._release(ready)
        if self._unresolved == 0:
            self._resolve(("ok", None))


async def _invoke(spec: StepSpec, kwargs: dict[str, Any]) -> Any:
    value = spec.fn(**kwargs)
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
