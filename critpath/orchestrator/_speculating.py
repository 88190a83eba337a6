"""The runtime's speculation manager: a router's predicted branches start before it
decides, and are committed or cancelled when it does (the policy and its vocabulary
are in ``critpath.orchestrator.speculation``).

``Speculations`` owns everything one run speculates: the branches started early and
their state (``SpeculationState``), the predictors still running, the commit/undo hooks
(which run to their end: the run awaits them, never cancels them) and their errors,
and the run's ``SpeculationStats``. The run calls it at a router's start
(``speculate``), when a router decides (``router_decided``, then ``commit`` or
``cancel`` per branch), when a speculative unit finishes or fails, and at the run's end
(``close``, ``wait_hooks``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Coroutine
from typing import Any

from critpath._tasks import TaskSet
from critpath.orchestrator._nodes import Node, RunCore
from critpath.orchestrator.events import (
    SpeculationCancelled,
    SpeculationCommitted,
    SpeculationStarted,
)
from critpath.orchestrator.report import StepRecord
from critpath.orchestrator.speculation import (
    Speculation,
    SpeculationStats,
    Speculative,
    call_hook,
    learned_prediction,
    normalise_prediction,
)
from critpath.orchestrator.states import NodeState, SpeculationState, StepStatus

__all__ = ["Speculations"]

_log = logging.getLogger("critpath.speculation")


class _Guess:
    """One branch started before its router decided."""

    __slots__ = ("policy", "record", "state", "task", "value")

    def __init__(self, record: StepRecord, policy: Speculation) -> None:
        self.record = record
        self.policy = policy
        self.state = SpeculationState.RUNNING
        self.task: asyncio.Task[None] | None = None
        self.value: Any = None


class Speculations:
    """What one run speculates (see the module docstring)."""

    __slots__ = ("_core", "_guesses", "_hooks", "_predicting", "hook_errors", "stats")

    def __init__(self, core: RunCore, loop: asyncio.AbstractEventLoop) -> None:
        self._core = core
        self._guesses: dict[str, _Guess] = {}
        self._predicting: dict[str, asyncio.Task[None]] = {}
        self._hooks = TaskSet(loop)
        self.hook_errors: list[tuple[str, BaseException]] = []
        self.stats = SpeculationStats()

    # ---- a router starts ----------------------------------------------------------------

    def speculate(self, router: Node, kwargs: dict[str, Any], rec: StepRecord) -> None:
        """Ask the router's predictor (at the router's start, ``rec``) and start the
        predicted branches it allows; an async predictor is awaited in a task of the run."""
        step = router.step
        try:
            if step.predict == "learned":
                guess: Any = learned_prediction(self._core.estimates.route_counts(step.name))
            else:
                assert step.predict is not None
                wanted = inspect.signature(step.predict).parameters
                guess = step.predict(**{k: v for k, v in kwargs.items() if k in wanted})
        except Exception:  # a failed guess costs the speculation, never the run
            self._predictor_failed(step.name)
            return
        if inspect.isawaitable(guess):
            awaitable = guess

            async def later() -> None:
                try:
                    value = await awaitable
                except Exception:
                    self._predictor_failed(step.name)
                    return
                finally:
                    self._predicting.pop(step.name, None)
                self._start_predicted(router, value, rec)

            task = self._core.spawn(later(), f"{step.name}~predict")
            if inspect.iscoroutine(awaitable):  # cancelled before it ran: close it too
                coro = awaitable
                task.add_done_callback(lambda _t: coro.close())
            self._predicting[step.name] = task
        else:
            self._start_predicted(router, guess, rec)

    def _predictor_failed(self, router: str) -> None:
        self.stats.refused += 1
        _log.warning("predictor of router %r raised; not speculating", router, exc_info=True)

    def _refuse(self, branch: str, why: str) -> None:
        self.stats.refused += 1
        _log.debug("speculation of %r refused: %s", branch, why)

    def _start_predicted(self, router: Node, guess: Any, rec: StepRecord) -> None:
        step = router.step
        policy = step.speculation
        assert policy is not None
        core = self._core
        try:
            choices = normalise_prediction(guess, step.branches)[: policy.top_k]
        except Exception:
            self._predictor_failed(step.name)
            return
        for branch, p in choices:
            node = core.nodes[branch]
            if router.state != NodeState.ACTIVE or core.ended:
                return  # the router decided first: nothing to gain
            if not node.step.speculative or node.state != NodeState.WAITING or node.pending != 1:
                continue  # side effects not declared safe, or other inputs not ready
            if core.must_skip(node):
                continue  # a required input was skipped: it will not run
            if any(p_.source == step.name for p_ in node.step.params):
                continue  # it reads the router's value
            if p < policy.min_probability:
                self._refuse(branch, f"probability {p:.2f} below {policy.min_probability}")
                continue
            if policy.allow is not None and not policy.allow():
                self._refuse(branch, "allow() said no")
                continue
            budget = policy.budget
            if budget is not None and not budget.allows((1 - p) * core.predicted(branch)):
                self._refuse(branch, "the speculation budget is spent")
                continue
            self.stats.started += 1
            core.emit(SpeculationStarted(branch, core.now(), step.name, p))
            unit = core.queue_unit(node, None, None, rec.released_by, speculative=True)
            self._guesses[branch] = _Guess(unit, policy)

    # ---- units of speculated branches ---------------------------------------------------

    def is_open(self, node: Node) -> bool:
        """``node`` was started early and is neither committed-and-done nor cancelled."""
        return node.name in self._guesses

    def attach(self, node: Node, task: asyncio.Task[None]) -> None:
        """The speculative unit of ``node`` started in ``task``."""
        guess = self._guesses.get(node.name)
        if guess is not None:
            guess.task = task

    def unit_finished(self, node: Node, value: Any) -> bool:
        """A speculative unit of ``node`` finished; ``True`` when that is handled here (the
        value held until the router decides, or a commit hook to run first)."""
        guess = self._guesses.get(node.name)
        if guess is None:
            return False
        if guess.state == SpeculationState.RUNNING:  # finished before its router decided
            guess.state, guess.value = SpeculationState.FINISHED, value
            return True
        if guess.state == SpeculationState.COMMITTED:
            del self._guesses[node.name]
            if _hook(node, "commit") is not None:
                self._finish_commit(node, value, guess.record)
                return True
        return False

    def unit_failed(self, node: Node, rec: StepRecord, exc: BaseException) -> bool:
        """A speculative unit failed: that fails nothing (``True``); the branch runs again
        if chosen (at once, when it was chosen already)."""
        guess = self._guesses.get(node.name)
        if guess is None or guess.state not in (
            SpeculationState.RUNNING, SpeculationState.COMMITTED
        ):  # fmt: skip
            return False
        rec.end = self._core.now()
        rec.status = StepStatus.FAILED
        rec.error = f"{type(exc).__name__}: {exc}"
        if guess.state == SpeculationState.COMMITTED:
            del self._guesses[node.name]
            self._core.queue_unit(node, None, None, rec.released_by)
        else:
            guess.state = SpeculationState.FAILED
        return True

    # ---- a router decides ---------------------------------------------------------------

    def router_decided(self, router: str) -> None:
        """Too late for the router's predictor to help: stop it."""
        predicting = self._predicting.pop(router, None)
        if predicting is not None:
            predicting.cancel()

    def commit(self, node: Node, by: str | None) -> None:
        """The router chose a speculated branch: keep its work."""
        guess = self._guesses[node.name]
        core = self._core
        rec = guess.record
        router_end = core.now()
        node.state = NodeState.ACTIVE
        if guess.state == SpeculationState.FAILED:  # right guess, failed run: run it for real
            del self._guesses[node.name]
            core.queue_unit(node, None, None, by)
            return
        stats = self.stats
        stats.committed += 1
        start = rec.start if rec.start is not None else router_end
        saved = max(0.0, router_end - start)
        if rec.end is not None:
            saved = min(saved, rec.end - start)
        stats.saved_s += saved
        rec.name = node.name  # it is the step now
        core.emit(SpeculationCommitted(node.name, router_end, saved))
        if guess.state == SpeculationState.FINISHED:
            del self._guesses[node.name]
            if _hook(node, "commit") is not None:
                self._finish_commit(node, guess.value, rec)
            else:
                core.complete(node, guess.value, rec.name)
        else:
            guess.state = SpeculationState.COMMITTED  # completes when its unit finishes

    def cancel(self, node: Node) -> None:
        """The router did not choose a speculated branch (or the run ended): cancel it
        and count the waste; its undo hook runs once its task has ended."""
        guess = self._guesses.pop(node.name)
        core = self._core
        rec = guess.record
        stats = self.stats
        stats.cancelled += 1
        core.emit(SpeculationCancelled(node.name, core.now()))
        task = guess.task
        finished = guess.state == SpeculationState.FINISHED
        value = guess.value if finished else None
        if finished:
            rec.status = StepStatus.CANCELLED  # its result is dropped: waste, not work
        budget = guess.policy.budget
        _log.debug("speculation of %r cancelled", node.name)

        def account(_: object = None) -> None:
            end = rec.end if rec.end is not None else core.now()
            waste = end - (rec.start if rec.start is not None else end)
            stats.waste_s += waste
            stats.waste_tokens += rec.ctx.tokens if rec.ctx is not None else 0
            if budget is not None:
                budget.record_waste(waste)

        if task is not None and not task.done():
            task.cancel()  # closes its model streams: the server aborts them
            task.add_done_callback(account)
        else:
            account()
        undo = _hook(node, "undo")
        if undo is not None:

            async def undo_after() -> None:
                if task is not None:
                    await asyncio.wait({task})
                try:
                    await call_hook(undo, value)
                except Exception as exc:
                    self._hook_failed(node.name, exc)

            self._spawn_hook(undo_after(), f"{node.name}~undo")

    # ---- the run ends ---------------------------------------------------------------------

    def close(self) -> None:
        """The run ended: cancel every speculation still open (and undo it)."""
        for name in list(self._guesses):
            self.cancel(self._core.nodes[name])

    async def wait_hooks(self) -> bool:
        """Wait for every commit/undo hook to end (they are never cancelled); returns
        whether the caller was cancelled meanwhile."""
        return await self._hooks.wait_all()

    # ---- hooks ----------------------------------------------------------------------------

    def _spawn_hook(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._hooks.spawn(coro, name)

    def _hook_failed(self, step: str, exc: BaseException) -> None:
        _log.error("speculation hook of step %r raised", step, exc_info=exc)
        self.hook_errors.append((step, exc))
        self._core.fail_hook(step, exc)

    def _finish_commit(self, node: Node, value: Any, rec: StepRecord) -> None:
        """Apply a committed branch's commit hook, then complete it with ``value``."""
        commit = _hook(node, "commit")
        assert commit is not None
        core = self._core

        async def finish() -> None:
            try:
                await call_hook(commit, value)
            except Exception as exc:
                self._hook_failed(node.name, exc)
                return
            if not core.ended:
                core.complete(node, value, rec.name)

        self._spawn_hook(finish(), f"{node.name}~commit")


def _hook(node: Node, which: str) -> Any:
    hooks = node.step.speculative
    return getattr(hooks, which) if isinstance(hooks, Speculative) else None
