"""The runtime's stream and speculation machinery (``Run`` inherits it).

Streams: a ``stream`` step's items go to its ``each`` consumers as they come
(``critpath.orchestrator.streams``). Speculation: a router's predicted branches start
before it decides and are committed or cancelled (``critpath.orchestrator.speculation``).
Kept apart from ``runtime`` so each module stays one concept; the methods work on the
``Run``'s state, declared below for the type checker.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from critpath.orchestrator._nodes import ACTIVE, DONE, WAITING, Node
from critpath.orchestrator.events import (
    RunEvent,
    SpeculationCancelled,
    SpeculationCommitted,
    SpeculationStarted,
    StepItem,
)
from critpath.orchestrator.report import StepRecord
from critpath.orchestrator.speculation import (
    SpeculationStats,
    Speculative,
    call_hook,
    learned_prediction,
    normalise_prediction,
)
from critpath.orchestrator.states import StepStatus
from critpath.orchestrator.streams import ItemTracker

if TYPE_CHECKING:
    from critpath.estimates import Estimates
    from critpath.orchestrator.graph import Graph, _Plan

__all__ = ["Pipelines"]


class Pipelines:
    """Streams and speculation for ``Run`` (a mixin: it has no state of its own)."""

    if TYPE_CHECKING:  # what it uses of the Run
        graph: Graph
        estimates: Estimates
        speculation: SpeculationStats
        _nodes: dict[str, Node]
        _plan: _Plan
        _predicted: Mapping[str, float]
        _outcome: tuple[str, Any] | None
        _loop: asyncio.AbstractEventLoop
        _tasks: set[asyncio.Task[None]]
        _hooks: set[asyncio.Task[None]]
        _hook_errors: list[tuple[str, BaseException]]
        _predicting: dict[str, asyncio.Task[None]]

        def now(self) -> float: ...
        def _emit(self, event: RunEvent) -> None: ...
        def _resolve(self, outcome: tuple[str, Any]) -> None: ...
        def _on_ready(self, node: Node) -> None: ...
        def _must_skip(self, node: Node) -> bool: ...
        def _complete(self, node: Node, value: Any) -> None: ...
        def _step_failed(self, rec: StepRecord, exc: BaseException, error: str) -> None: ...
        def _ready_unit(
            self, node: Node, item: int | None, value: Any, *, speculative: bool = False
        ) -> None: ...

    # ---- streams --------------------------------------------------------------------

    async def _produce(self, node: Node, rec: StepRecord, kwargs: dict[str, Any]) -> list[Any]:
        """Run a stream step: hand each item to its consumers as it comes."""
        for c in node.consumers:  # consumers whose other inputs are ready arm now
            if c.state == WAITING and c.pending == 0:
                self._on_ready(c)
        agen = node.spec.fn(**kwargs)
        try:
            async for item in agen:
                node.items.append(item)
                self._emit(StepItem(rec.name, self.now(), len(node.items) - 1, item))
                for c in node.consumers:
                    if c.tracker is not None and c.state == ACTIVE:
                        self._offer(c, item)
        finally:
            await agen.aclose()
        return list(node.items)

    def _arm(self, node: Node) -> None:
        """An ``each`` step may start: take the items its stream produced so far."""
        spec = node.spec
        node.tracker = ItemTracker(key=spec.key, needs=spec.needs)
        producer = node.producer
        assert producer is not None
        for item in list(producer.items):
            if self._outcome is not None or node.state != ACTIVE:
                return
            self._offer(node, item)
        if producer.state == DONE:
            self._close_stream(node)

    def _offer(self, node: Node, item: Any) -> None:
        tracker = node.tracker
        assert tracker is not None
        try:
            ready = tracker.add(item)
        except Exception as exc:  # a duplicate key, a key function that raised...
            self._fail_node(node, exc)
            return
        for i in ready:
            self._ready_unit(node, i, tracker.items[i])

    def _close_stream(self, node: Node) -> None:
        tracker = node.tracker
        assert tracker is not None
        try:
            tracker.close()
        except Exception as exc:
            self._fail_node(node, exc)
            return
        if tracker.finished and node.state == ACTIVE:
            if not tracker.items:
                now = self.now()
                node.records.append(StepRecord(node.spec.name, node.spec.name, None, "each",
                                               status=StepStatus.OK, start=now,
                                               end=now))  # fmt: skip
            self._complete(node, tracker.ordered_results())

    def _item_done(self, node: Node, index: int, value: Any) -> None:
        tracker = node.tracker
        assert tracker is not None
        try:
            ready = tracker.done(index, value)
            tracker.check()
        except Exception as exc:
            self._fail_node(node, exc)
            return
        for i in ready:
            self._ready_unit(node, i, tracker.items[i])
        if tracker.finished:
            self._complete(node, tracker.ordered_results())

    def _fail_node(self, node: Node, exc: BaseException) -> None:
        rec = StepRecord(node.spec.name, node.spec.name, None, node.spec.kind, ready=self.now())
        node.records.append(rec)
        self._step_failed(rec, exc, f"{type(exc).__name__}: {exc}")

    # ---- speculation ----------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        """A helper task owned by the run (cancelled and awaited with it)."""
        task: asyncio.Task[None] = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _speculate(self, router: Node, kwargs: dict[str, Any]) -> None:
        """Ask the router's predictor (at the router's start) and start the predicted
        branches it allows; an async predictor is awaited in a task of the run."""
        spec = router.spec
        try:
            if spec.predict == "learned":
                guess: Any = learned_prediction(self.estimates.route_counts(spec.name))
            else:
                assert spec.predict is not None
                wanted = inspect.signature(spec.predict).parameters
                guess = spec.predict(**{k: v for k, v in kwargs.items() if k in wanted})
        except Exception:  # a failed guess costs the speculation, never the run
            self.speculation.refused += 1
            return
        if inspect.isawaitable(guess):
            awaitable = guess

            async def later() -> None:
                try:
                    value = await awaitable
                except Exception:
                    self.speculation.refused += 1
                    return
                self._start_predicted(router, value)

            task = self._spawn(later(), f"{spec.name}~predict")
            if inspect.iscoroutine(awaitable):  # cancelled before it ran: close it too
                coro = awaitable
                task.add_done_callback(lambda _t: coro.close())
            self._predicting[spec.name] = task
        else:
            self._start_predicted(router, guess)

    def _start_predicted(self, router: Node, guess: Any) -> None:
        spec = router.spec
        policy = spec.speculation
        assert policy is not None
        stats = self.speculation
        try:
            choices = normalise_prediction(guess, spec.branches)[: policy.top_k]
        except Exception:
            stats.refused += 1
            return
        for branch, p in choices:
            node = self._nodes[branch]
            if router.state != ACTIVE or self._outcome is not None:
                return  # the router decided first: nothing to gain
            if not node.spec.speculative or node.state != WAITING or node.pending != 1:
                continue  # side effects not declared safe, or other inputs not ready
            if self._must_skip(node):
                continue  # a required input was skipped: it will not run
            if any(p_.source == spec.name for p_ in node.spec.params):
                continue  # it reads the router's value
            if p < policy.min_probability or (policy.allow is not None and not policy.allow()):
                stats.refused += 1
                continue
            budget = policy.budget
            if budget is not None and not budget.allows((1 - p) * self._predicted[branch]):
                stats.refused += 1
                continue
            node.spec_state = "running"
            stats.started += 1
            self._emit(SpeculationStarted(branch, self.now(), spec.name, p))
            self._ready_unit(node, None, None, speculative=True)

    def _spec_record(self, node: Node) -> StepRecord:
        return next(r for r in reversed(node.records) if r.speculative)

    def _commit_speculation(self, node: Node) -> None:
        """The router chose a speculated branch: keep its work."""
        rec = self._spec_record(node)
        router_end = self.now()
        state = node.spec_state
        node.state = ACTIVE
        if state == "failed":  # the guess was right but its run failed: run it for real
            node.spec_state = None
            self._ready_unit(node, None, None)
            return
        stats = self.speculation
        stats.committed += 1
        start = rec.start if rec.start is not None else router_end
        saved = max(0.0, router_end - start)
        if rec.end is not None:
            saved = min(saved, rec.end - start)
        stats.saved_s += saved
        rec.name = node.spec.name  # it is the step now
        self._emit(SpeculationCommitted(node.spec.name, router_end, saved))
        if state == "finished":
            node.spec_state = None
            value = node.spec_value
            if self._has_hook(node, "commit"):
                self._finish_commit(node, value)
            else:
                self._complete(node, value)
        else:
            node.spec_state = "committed"  # _exec completes it when it finishes

    @staticmethod
    def _has_hook(node: Node, which: str) -> bool:
        hooks = node.spec.speculative
        return isinstance(hooks, Speculative) and getattr(hooks, which) is not None

    def _hook_task(self, coro: Any, name: str) -> None:
        """Commit/undo hooks run to their end: the run awaits them, never cancels them."""
        task: asyncio.Task[None] = self._loop.create_task(coro, name=name)
        self._hooks.add(task)
        task.add_done_callback(self._hooks.discard)

    def _hook_failed(self, step: str, exc: BaseException) -> None:
        """A commit/undo hook raised: the run fails (even if it had otherwise ended ok)."""
        self._hook_errors.append((step, exc))
        self._resolve(("failed", (step, exc)))

    def _finish_commit(self, node: Node, value: Any) -> None:
        """Apply a committed branch's commit hook, then complete it with ``value``."""
        hooks = node.spec.speculative
        assert isinstance(hooks, Speculative)
        assert hooks.commit is not None
        commit = hooks.commit

        async def finish() -> None:
            try:
                await call_hook(commit, value)
            except Exception as exc:
                self._hook_failed(node.spec.name, exc)
                return
            if self._outcome is None:
                self._complete(node, value)

        self._hook_task(finish(), f"{node.spec.name}~commit")

    def _cancel_speculation(self, node: Node) -> None:
        """The router did not choose a speculated branch: cancel it, count the waste."""
        rec = self._spec_record(node)
        state, node.spec_state = node.spec_state, None
        stats = self.speculation
        stats.cancelled += 1
        self._emit(SpeculationCancelled(node.spec.name, self.now()))
        task = node.spec_task
        value = node.spec_value if state == "finished" else None
        if state == "finished":
            rec.status = StepStatus.CANCELLED  # its result is dropped: waste, not work
        policy = self._router_policy(node)

        def account(_: object = None) -> None:
            end = rec.end if rec.end is not None else self.now()
            waste = end - (rec.start if rec.start is not None else end)
            stats.waste_s += waste
            stats.waste_tokens += rec.ctx.tokens if rec.ctx is not None else 0
            if policy is not None and policy.budget is not None:
                policy.budget.record_waste(waste)

        hooks = node.spec.speculative
        undo = hooks.undo if isinstance(hooks, Speculative) else None
        if task is not None and not task.done():
            task.cancel()  # closes its model streams: the server aborts them
            task.add_done_callback(account)
        else:
            account()

        async def undo_after() -> None:
            if task is not None:
                await asyncio.wait({task})
            if undo is not None:
                try:
                    await call_hook(undo, value)
                except Exception as exc:
                    self._hook_failed(node.spec.name, exc)

        if undo is not None:
            self._hook_task(undo_after(), f"{node.spec.name}~undo")

    def _router_policy(self, node: Node) -> Any:
        router = self._plan.router_of.get(node.spec.name)
        return self.graph.steps[router].speculation if router is not None else None
