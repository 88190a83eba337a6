"""Graphs of async steps whose dependencies are known before anything runs.

A step is a function; its parameters name what it consumes — another step's result
or a run input — so the whole DAG can be analysed statically::

    g = Graph("answer", inputs=["question"])

    @g.step
    async def search(question: str) -> list[str]: ...

    @g.map(over="search")                 # fan-out: one call per item, concurrently
    async def read(doc: str) -> str: ...

    @g.step(resource="llm")               # fan-in: receives read's list of results
    async def answer(question: str, read: list[str], ctx: StepContext) -> str: ...

A parameter annotated ``StepContext`` receives the step's context
(priority, slack, remaining budget, partial results). ``deps={"param": "source"}``
maps a parameter to a differently named source; ``after=[...]`` adds ordering-only
dependencies. A ``route`` step returns the name (or names) of the branches that run;
the other branches, and whatever needs them, are skipped. A parameter with a default
receives the default when its source was skipped.

``validate()`` checks the graph (duplicates at definition, unknown dependencies,
cycles, bad routes) and runs before every run; ``run()`` / ``start()`` execute it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack, overload

from critpath.errors import (
    ConfigError,
    CycleError,
    DuplicateStepError,
    GraphError,
    InvalidStepError,
    UnknownDependencyError,
)
from critpath.estimates import Estimates
from critpath.orchestrator.analysis import find_cycle, successors, topological_order
from critpath.orchestrator.context import StepContext
from critpath.orchestrator.memo import StepCache
from critpath.orchestrator.policy import NO_FALLBACK, RetryPolicy
from critpath.orchestrator.speculation import Predictor, Speculation, Speculative
from critpath.orchestrator.states import StepKind

if TYPE_CHECKING:
    from critpath.orchestrator.limits import Limiter
    from critpath.orchestrator.runtime import Run, RunResult

__all__ = ["Graph", "Param", "RunOptions", "StepKind", "StepOptions", "StepSpec"]

F = TypeVar("F", bound=Callable[..., Any])
_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a step function and the source that feeds it."""

    name: str
    source: str
    default: Any = _EMPTY

    @property
    def required(self) -> bool:
        return self.default is _EMPTY


@dataclass(frozen=True, slots=True)
class StepSpec:
    """Everything known about a step before it runs."""

    name: str
    fn: Callable[..., Any]
    kind: StepKind
    params: tuple[Param, ...]
    ctx_param: str | None
    is_async: bool
    after: tuple[str, ...] = ()
    resource: str | None = None
    estimate: float | None = None
    retry: RetryPolicy | None = None
    fallback: Any = NO_FALLBACK
    fallback_fn: Callable[[BaseException], Any] | None = None
    over: str | None = None
    item_param: str | None = None
    branches: tuple[str, ...] = ()
    speculative: bool | Speculative = False
    predict: Predictor | None = None
    speculation: Speculation | None = None
    key: Callable[[Any], Any] | None = None
    needs: Callable[[Any], Iterable[Any]] | None = None
    cache: StepCache | None = None

    @property
    def has_fallback(self) -> bool:
        return self.fallback is not NO_FALLBACK or self.fallback_fn is not None

    def sources(self) -> list[str]:
        """Every name this step reads or waits for (steps and inputs)."""
        names = [p.source for p in self.params]
        if self.over is not None:
            names.append(self.over)
        names.extend(self.after)
        return list(dict.fromkeys(names))


def _is_ctx(param: inspect.Parameter, hints: Mapping[str, Any]) -> bool:
    """A parameter annotated ``StepContext`` receives the step's context (its name does
    not matter: a graph input called ``ctx`` stays an input)."""
    hint = hints.get(param.name, param.annotation)
    return hint is StepContext or hint == "StepContext" or hint == "critpath.StepContext"


class StepOptions(TypedDict, total=False):
    """Options every kind of step takes (see ``Graph.step``)."""

    name: str | None
    deps: Mapping[str, str] | None
    after: Iterable[str]
    resource: str | None
    estimate: float | None
    retry: RetryPolicy | None
    fallback: Any
    fallback_fn: Callable[[BaseException], Any] | None
    speculative: bool | Speculative
    cache: StepCache | bool | None


class RunOptions(TypedDict, total=False):
    """Options of a run (see ``Graph.start``)."""

    deadline: float | None
    max_concurrency: int | None
    resources: Mapping[str, int] | None
    limiter: Limiter | None
    estimates: Estimates | None
    run_id: str | None


def _spec_from_fn(
    fn: Callable[..., Any],
    *,
    kind: StepKind,
    name: str | None = None,
    deps: Mapping[str, str] | None = None,
    after: Iterable[str] = (),
    resource: str | None = None,
    estimate: float | None = None,
    retry: RetryPolicy | None = None,
    fallback: Any = NO_FALLBACK,
    fallback_fn: Callable[[BaseException], Any] | None = None,
    over: str | None = None,
    branches: Sequence[str] = (),
    speculative: bool | Speculative = False,
    predict: Predictor | None = None,
    speculation: Speculation | None = None,
    key: Callable[[Any], Any] | None = None,
    needs: Callable[[Any], Iterable[Any]] | None = None,
    cache: StepCache | bool | None = None,
) -> StepSpec:
    if not callable(fn):
        raise InvalidStepError(f"a step must be a function, got {fn!r}")
    step_name = name or getattr(fn, "__name__", None)
    if not step_name or step_name == "<lambda>":
        raise InvalidStepError("a step made from a lambda needs name=")
    if "[" in step_name or "]" in step_name or "~" in step_name or step_name == "*":
        raise InvalidStepError(f"step name {step_name!r}: '[', ']', '~' and '*' are reserved")
    if estimate is not None and not estimate >= 0:
        raise ConfigError(f"step {step_name!r}: estimate must be >= 0 seconds")
    if fallback is not NO_FALLBACK and fallback_fn is not None:
        raise ConfigError(f"step {step_name!r}: give fallback or fallback_fn, not both")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise InvalidStepError(f"step {step_name!r}: cannot read its signature: {exc}") from exc
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = {}
    deps = dict(deps or {})
    params: list[Param] = []
    ctx_param: str | None = None
    item_param: str | None = None
    for i, p in enumerate(sig.parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise InvalidStepError(
                f"step {step_name!r}: *args/**kwargs cannot name dependencies ({p.name})"
            )
        if p.kind is p.POSITIONAL_ONLY:
            raise InvalidStepError(f"step {step_name!r}: positional-only parameter {p.name!r}")
        if kind in (StepKind.MAP, StepKind.EACH) and i == 0:
            item_param = p.name
            continue
        if _is_ctx(p, hints):
            ctx_param = p.name
            continue
        params.append(Param(p.name, deps.pop(p.name, p.name), p.default))
    if kind in (StepKind.MAP, StepKind.EACH) and item_param is None:
        raise InvalidStepError(f"{kind} step {step_name!r} needs a first parameter for the item")
    if kind == StepKind.STREAM:
        if not inspect.isasyncgenfunction(fn):
            raise InvalidStepError(
                f"stream step {step_name!r} must be an async generator function (async def "
                "... yield)"
            )
        if retry is not None or fallback is not NO_FALLBACK or fallback_fn is not None:
            raise ConfigError(
                f"stream step {step_name!r}: retry and fallback are not supported (items "
                "already handed on cannot be taken back)"
            )
    if cache is True:
        cache = StepCache()
    if cache is not None and cache is not False and not isinstance(cache, StepCache):
        raise ConfigError(f"step {step_name!r}: cache= takes a StepCache or True")
    if isinstance(cache, StepCache) and kind == StepKind.STREAM:
        raise ConfigError(f"stream step {step_name!r}: cache= is not supported")
    if speculative is not False and not isinstance(speculative, bool | Speculative):
        raise ConfigError(f"step {step_name!r}: speculative= takes a bool or a Speculative")
    if speculative and kind not in (StepKind.STEP, StepKind.ROUTE):
        raise ConfigError(
            f"{kind} step {step_name!r}: only plain steps and routers can run speculatively"
        )
    if predict is not None and predict != "learned" and not callable(predict):
        raise ConfigError(f"router {step_name!r}: predict= takes a function or 'learned'")
    if predict is not None and speculation is None:
        speculation = Speculation()
    if callable(predict):
        try:
            psig = inspect.signature(predict)
        except (TypeError, ValueError) as exc:
            raise InvalidStepError(
                f"router {step_name!r}: cannot read predict's signature"
            ) from exc
        mine = {p.name for p in params}
        for q in psig.parameters.values():
            if (
                q.default is _EMPTY
                and q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD)
                and (q.name not in mine)
            ):
                raise InvalidStepError(
                    f"router {step_name!r}: predict needs {q.name!r}, which is not one of the "
                    f"router's parameters {sorted(mine)}"
                )
    if deps:
        raise InvalidStepError(
            f"step {step_name!r}: deps names parameters it does not have: {sorted(deps)}"
        )
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )
    return StepSpec(
        name=step_name,
        fn=fn,
        kind=kind,
        params=tuple(params),
        ctx_param=ctx_param,
        is_async=is_async,
        after=tuple(after),
        resource=resource,
        estimate=estimate,
        retry=retry,
        fallback=fallback,
        fallback_fn=fallback_fn,
        over=over,
        item_param=item_param,
        branches=tuple(branches),
        speculative=speculative,
        predict=predict,
        speculation=speculation,
        key=key,
        needs=needs,
        cache=cache if isinstance(cache, StepCache) else None,
    )


class Graph:
    """A DAG of steps, built by decorators or ``add``, validated before it runs.

    ``inputs`` names the values a run must be given; ``output`` names the step whose
    value is the run's ``output`` (default: the only sink, else a dict of the sinks).
    The graph owns an ``Estimates`` store: each run records its steps' durations there,
    so later runs predict the critical path from what earlier runs measured.
    """

    def __init__(
        self,
        name: str = "graph",
        *,
        inputs: Iterable[str] = (),
        output: str | None = None,
        estimates: Estimates | None = None,
        default_estimate: float = 1.0,
    ) -> None:
        self.name = name
        names = list(inputs)
        for i, n in enumerate(names):
            if n in names[:i]:
                raise DuplicateStepError(n)
        self.inputs: tuple[str, ...] = tuple(names)
        self._output = output
        self.estimates = estimates if estimates is not None else Estimates(default=default_estimate)
        self._steps: dict[str, StepSpec] = {}
        self._validated: _Plan | None = None

    # ---- building -------------------------------------------------------------------

    @property
    def output(self) -> str | None:
        """The step whose value is a run's ``output`` (None: the sinks)."""
        return self._output

    @output.setter
    def output(self, name: str | None) -> None:
        self._output = name
        self._validated = None

    @property
    def steps(self) -> Mapping[str, StepSpec]:
        return self._steps

    def add(self, spec: StepSpec) -> StepSpec:
        if spec.name in self._steps or spec.name in self.inputs:
            raise DuplicateStepError(spec.name)
        self._steps[spec.name] = spec
        self._validated = None
        return spec

    @overload
    def step(self, fn: F, /, **options: Unpack[StepOptions]) -> F: ...
    @overload
    def step(self, fn: None = None, /, **options: Unpack[StepOptions]) -> Callable[[F], F]: ...
    def step(self, fn: F | None = None, /, **options: Unpack[StepOptions]) -> F | Callable[[F], F]:
        """Add a step (decorator, with or without options). Returns the function unchanged.

        Options: ``name``, ``deps`` (parameter -> source), ``after`` (ordering-only
        dependencies), ``resource`` (a concurrency pool, e.g. a model endpoint),
        ``estimate`` (predicted seconds until one is learned), ``retry``
        (``RetryPolicy``), ``fallback`` (value used if the step fails) or
        ``fallback_fn`` (called with the error), ``cache`` (``StepCache`` or ``True``:
        reuse the result for the same inputs, see ``memo``).
        """
        return self._decorate(fn, StepKind.STEP, options)

    @overload
    def map(self, fn: F, /, *, over: str, **options: Unpack[StepOptions]) -> F: ...
    @overload
    def map(
        self, fn: None = None, /, *, over: str, **options: Unpack[StepOptions]
    ) -> Callable[[F], F]: ...
    def map(
        self, fn: F | None = None, /, *, over: str, **options: Unpack[StepOptions]
    ) -> F | Callable[[F], F]:
        """Add a fan-out step: its function runs once per item of ``over``'s value.

        The first parameter receives the item; the step's value is the list of results
        in item order. Each item is scheduled (and limited, retried) on its own.
        """
        return self._decorate(fn, StepKind.MAP, options, over=over)

    @overload
    def route(
        self,
        fn: F,
        /,
        *,
        branches: Sequence[str],
        predict: Predictor | None = None,
        speculation: Speculation | None = None,
        **options: Unpack[StepOptions],
    ) -> F: ...
    @overload
    def route(
        self,
        fn: None = None,
        /,
        *,
        branches: Sequence[str],
        predict: Predictor | None = None,
        speculation: Speculation | None = None,
        **options: Unpack[StepOptions],
    ) -> Callable[[F], F]: ...
    def route(
        self,
        fn: F | None = None,
        /,
        *,
        branches: Sequence[str],
        predict: Predictor | None = None,
        speculation: Speculation | None = None,
        **options: Unpack[StepOptions],
    ) -> F | Callable[[F], F]:
        """Add a router: it returns a branch name, a list of them, or None (no branch).

        Each branch step waits for the router; branches it did not choose are skipped,
        and so is every step that requires one of them.

        ``predict``: guess the decision before the router finishes — a function of (some
        of) the router's parameters returning a branch, branches or probabilities (sync
        or async), or ``"learned"`` (past choices' frequencies). Predicted branches
        declared ``speculative=`` start at once, in parallel with the router, under the
        ``speculation`` policy (default ``Speculation()``); see
        ``critpath.orchestrator.speculation``.
        """
        if isinstance(branches, str) or not branches:
            raise ConfigError("route(branches=...) takes a non-empty list of step names")
        return self._decorate(
            fn, StepKind.ROUTE, options, branches=tuple(branches), predict=predict,
            speculation=speculation,
        )  # fmt: skip

    @overload
    def stream(self, fn: F, /, **options: Unpack[StepOptions]) -> F: ...
    @overload
    def stream(self, fn: None = None, /, **options: Unpack[StepOptions]) -> Callable[[F], F]: ...
    def stream(
        self, fn: F | None = None, /, **options: Unpack[StepOptions]
    ) -> F | Callable[[F], F]:
        """Add a streaming step: an async generator whose items ``each`` steps consume as
        they come. Its value is the list of its items."""
        return self._decorate(fn, StepKind.STREAM, options)

    @overload
    def each(
        self,
        fn: F,
        /,
        *,
        over: str,
        key: Callable[[Any], Any] | None = None,
        needs: Callable[[Any], Iterable[Any]] | None = None,
        **options: Unpack[StepOptions],
    ) -> F: ...
    @overload
    def each(
        self,
        fn: None = None,
        /,
        *,
        over: str,
        key: Callable[[Any], Any] | None = None,
        needs: Callable[[Any], Iterable[Any]] | None = None,
        **options: Unpack[StepOptions],
    ) -> Callable[[F], F]: ...
    def each(
        self,
        fn: F | None = None,
        /,
        *,
        over: str,
        key: Callable[[Any], Any] | None = None,
        needs: Callable[[Any], Iterable[Any]] | None = None,
        **options: Unpack[StepOptions],
    ) -> F | Callable[[F], F]:
        """Add a step run once per item of the ``stream`` step ``over``, each as soon as
        the item arrived and the items it ``needs`` (by ``key``) were processed; it reads
        their results from ``ctx.needed``. Its value is the list of results in item
        order. See ``critpath.orchestrator.streams``."""
        return self._decorate(fn, StepKind.EACH, options, over=over, key=key, needs=needs)

    def _decorate(
        self,
        fn: F | None,
        kind: StepKind,
        options: StepOptions,
        *,
        over: str | None = None,
        branches: tuple[str, ...] = (),
        predict: Predictor | None = None,
        speculation: Speculation | None = None,
        key: Callable[[Any], Any] | None = None,
        needs: Callable[[Any], Iterable[Any]] | None = None,
    ) -> F | Callable[[F], F]:
        def deco(f: F) -> F:
            self.add(
                _spec_from_fn(
                    f, kind=kind, over=over, branches=branches, predict=predict,
                    speculation=speculation, key=key, needs=needs, **options,
                )
            )  # fmt: skip
            return f

        return deco(fn) if fn is not None else deco

    # ---- validation -----------------------------------------------------------------

    def validate(self) -> Graph:
        """Check the graph; raise a ``GraphError`` naming what is wrong. Returns self."""
        self._plan()
        return self

    def _plan(self) -> _Plan:
        if self._validated is None:
            self._validated = _Plan.build(self)
        return self._validated

    # ---- running --------------------------------------------------------------------

    def start(
        self, inputs: Mapping[str, Any] | None = None, /, **options: Unpack[RunOptions]
    ) -> Run:
        """Start a run now and return it (await it, iterate its events, cancel it).

        Options: ``deadline`` (seconds), ``max_concurrency`` and ``resources`` (limits
        for this run) or ``limiter`` (a ``Limiter`` shared by runs), ``estimates`` (a
        store other than the graph's), ``run_id``. Must be called from a running event
        loop. The run is owned by the caller: await it or use it as ``async with`` so
        it never outlives its owner.
        """
        from critpath.orchestrator.runtime import Run

        return Run(self, inputs or {}, **options)

    async def run(
        self, inputs: Mapping[str, Any] | None = None, /, **options: Unpack[RunOptions]
    ) -> RunResult:
        """Run the graph to completion and return its result (see ``start``)."""
        return await self.start(inputs, **options)

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, steps={len(self._steps)}, inputs={list(self.inputs)})"


@dataclass(frozen=True, slots=True)
class _Plan:
    """A validated graph, in the index form the runtime executes."""

    order: tuple[str, ...]
    preds: dict[str, tuple[str, ...]]
    succs: dict[str, tuple[str, ...]]
    router_of: dict[str, str]
    outputs: tuple[str, ...]
    single_output: bool

    @staticmethod
    def build(graph: Graph) -> _Plan:
        steps = graph._steps
        known = set(steps) | set(graph.inputs)
        router_of: dict[str, str] = {}
        for spec in steps.values():
            for src in spec.sources():
                if src not in known:
                    hint = (
                        " (to receive the step's context, annotate the parameter StepContext)"
                        if src == "ctx" else ""
                    )  # fmt: skip
                    raise UnknownDependencyError(spec.name, src, sorted(known), hint=hint)
            for a in spec.after:
                if a not in steps:
                    raise InvalidStepError(
                        f"step {spec.name!r}: after= names {a!r}, which is an input, not a step"
                    )
            if spec.kind == StepKind.EACH and (
                spec.over not in steps or steps[spec.over].kind != StepKind.STREAM
            ):
                raise InvalidStepError(
                    f"each step {spec.name!r}: over= must name a stream step, got {spec.over!r}"
                )
            for b in spec.branches:
                if b not in steps:
                    raise UnknownDependencyError(spec.name, b, sorted(steps))
                if b in router_of:
                    raise InvalidStepError(
                        f"step {b!r} is a branch of two routers: {router_of[b]!r} and {spec.name!r}"
                    )
                if b == spec.name:
                    raise InvalidStepError(f"router {spec.name!r} lists itself as a branch")
                router_of[b] = spec.name
        preds: dict[str, tuple[str, ...]] = {}
        for spec in steps.values():
            ps = [s for s in spec.sources() if s in steps]
            if spec.name in router_of and router_of[spec.name] not in ps:
                ps.append(router_of[spec.name])
            preds[spec.name] = tuple(ps)
        cycle = find_cycle(preds)
        if cycle is not None:
            raise CycleError(cycle)
        succ_lists = successors(preds)
        order = tuple(topological_order(preds))
        if graph.output is not None:
            if graph.output not in steps:
                raise UnknownDependencyError("<output>", graph.output, sorted(steps))
            outputs: tuple[str, ...] = (graph.output,)
            single = True
        else:
            outputs = tuple(n for n in order if not succ_lists[n])
            single = len(outputs) == 1
        if not steps:
            raise GraphError(f"graph {graph.name!r} has no steps")
        return _Plan(
            order=order,
            preds=preds,
            succs={k: tuple(v) for k, v in succ_lists.items()},
            router_of=router_of,
            outputs=outputs,
            single_output=single,
        )
