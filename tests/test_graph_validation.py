"""Build-time checks: a bad graph fails at definition or at ``validate()``, never mid-run."""

from __future__ import annotations

import pytest

import critpath
from critpath import (
    ConfigError,
    CycleError,
    DuplicateStepError,
    Graph,
    GraphError,
    InvalidStepError,
    MissingInputError,
    StepContext,
    UnknownDependencyError,
)


def test_cycle_is_reported_with_its_steps() -> None:
    g = Graph("cyclic")

    @g.step
    async def a(c: int) -> int:
        return c

    @g.step
    async def b(a: int) -> int:
        return a

    @g.step
    async def c(b: int) -> int:
        return b

    @g.step
    async def outside() -> int:
        return 0

    with pytest.raises(CycleError) as info:
        g.validate()
    cycle = info.value.cycle
    assert set(cycle) == {"a", "b", "c"}
    assert cycle[0] == cycle[-1]  # closed: [x, y, z, x]
    assert len(cycle) == 4
    for name in ("a", "b", "c"):
        assert name in str(info.value)
    assert "outside" not in cycle


def test_self_dependency_is_a_cycle() -> None:
    g = Graph()

    @g.step(deps={"x": "loop"})
    async def loop(x: int) -> int:
        return x

    with pytest.raises(CycleError) as info:
        g.validate()
    assert "loop" in info.value.cycle


def test_unknown_dependency_names_step_and_dependency() -> None:
    g = Graph(inputs=["q"])

    @g.step
    async def a(q: str, nope: int) -> str:
        return q

    with pytest.raises(UnknownDependencyError) as info:
        g.validate()
    assert info.value.step == "a"
    assert info.value.dependency == "nope"
    assert "nope" in str(info.value)


def test_unknown_dependency_via_deps_and_after() -> None:
    g = Graph()

    @g.step(deps={"x": "missing"})
    async def a(x: int) -> int:
        return x

    with pytest.raises(UnknownDependencyError, match="missing"):
        g.validate()

    g2 = Graph()

    @g2.step(after=["ghost"])
    async def b() -> int:
        return 1

    with pytest.raises(UnknownDependencyError, match="ghost"):
        g2.validate()


def test_after_must_name_a_step_not_an_input() -> None:
    g = Graph(inputs=["q"])

    @g.step(after=["q"])
    async def a() -> int:
        return 1

    with pytest.raises(InvalidStepError):
        g.validate()


def test_duplicate_step_is_raised_at_definition() -> None:
    g = Graph(inputs=["q"])

    @g.step
    async def a() -> int:
        return 1

    async def other() -> int:
        return 2

    with pytest.raises(DuplicateStepError) as info:
        g.step(name="a")(other)
    assert info.value.name == "a"
    with pytest.raises(DuplicateStepError):
        g.step(name="q")(other)  # clashes with an input
    assert set(g.steps) == {"a"}


def test_duplicate_input_names() -> None:
    with pytest.raises(DuplicateStepError):
        Graph(inputs=["q", "q"])


async def test_missing_run_input() -> None:
    g = Graph(inputs=["q", "k"])

    @g.step
    async def a(q: str, k: str) -> str:
        return q + k

    with pytest.raises(MissingInputError) as info:
        await g.run({"q": "x"})
    assert info.value.missing == ["k"]
    assert info.value.report is None  # failed before it started
    with pytest.raises(MissingInputError):
        g.start({})


async def test_unknown_run_input_is_a_config_error() -> None:
    g = Graph(inputs=["q"])

    @g.step
    async def a(q: str) -> str:
        return q

    with pytest.raises(ConfigError, match="typo"):
        await g.run({"q": "x", "typo": 1})


def test_router_with_unknown_branch() -> None:
    g = Graph()

    @g.route(branches=["yes", "no"])
    def choose() -> str:
        return "yes"

    @g.step
    async def yes() -> int:
        return 1

    with pytest.raises(UnknownDependencyError) as info:
        g.validate()
    assert info.value.step == "choose"
    assert info.value.dependency == "no"


def test_router_branches_must_be_a_non_empty_list() -> None:
    g = Graph()
    with pytest.raises(ConfigError):
        g.route(branches="yes")
    with pytest.raises(ConfigError):
        g.route(branches=[])


def test_step_cannot_be_branch_of_two_routers() -> None:
    g = Graph()

    @g.route(branches=["x"])
    def r1() -> str:
        return "x"

    @g.route(branches=["x"])
    def r2() -> str:
        return "x"

    @g.step
    async def x() -> int:
        return 1

    with pytest.raises(InvalidStepError, match="two routers"):
        g.validate()


def test_star_args_and_kwargs_are_rejected() -> None:
    g = Graph()

    async def star(*args: int) -> int:
        return 0

    async def double_star(**kwargs: int) -> int:
        return 0

    with pytest.raises(InvalidStepError, match="args"):
        g.step(star)
    with pytest.raises(InvalidStepError):
        g.step(double_star)
    assert not g.steps


def test_positional_only_parameter_is_rejected() -> None:
    g = Graph()

    async def f(x: int, /) -> int:
        return x

    with pytest.raises(InvalidStepError, match="positional-only"):
        g.step(f)


def test_lambda_needs_a_name() -> None:
    g = Graph(inputs=["x"])
    with pytest.raises(InvalidStepError, match="lambda"):
        g.step(lambda x: x)
    g.step(name="double")(lambda x: 2 * x)
    assert "double" in g.steps


@pytest.mark.parametrize("name", ["a[0]", "b]", "*"])
def test_reserved_step_names(name: str) -> None:
    """``[i]`` names map items and ``*`` names the run in events: no step may use them."""

    async def f() -> int:
        return 1

    with pytest.raises(InvalidStepError):
        Graph().step(name=name)(f)


def test_non_callable_step() -> None:
    with pytest.raises(InvalidStepError):
        Graph().step(42)  # type: ignore[call-overload]


def test_deps_naming_a_missing_parameter() -> None:
    g = Graph()

    async def f(x: int) -> int:
        return x

    with pytest.raises(InvalidStepError, match="y"):
        g.step(deps={"y": "z"})(f)


def test_bad_step_options() -> None:
    g = Graph()

    async def f() -> int:
        return 1

    with pytest.raises(ConfigError):
        g.step(estimate=-1.0)(f)
    with pytest.raises(ConfigError):
        g.step(fallback=0, fallback_fn=lambda e: 1)(f)


def test_map_needs_an_item_parameter() -> None:
    g = Graph(inputs=["xs"])

    async def f() -> int:
        return 1

    with pytest.raises(InvalidStepError):
        g.map(over="xs")(f)


def test_empty_graph_and_unknown_output() -> None:
    with pytest.raises(GraphError):
        Graph("empty").validate()
    g = Graph(output="nope")

    @g.step
    async def a() -> int:
        return 1

    with pytest.raises(UnknownDependencyError):
        g.validate()


def test_validate_returns_graph_and_parameters_are_read() -> None:
    g = Graph(inputs=["q"])

    @g.step
    async def a(q: str, ctx: StepContext) -> str:
        return q

    @g.step(deps={"text": "a"}, after=["a"], resource="llm", estimate=0.5)
    async def b(text: str, context: StepContext) -> str:
        return text

    @g.step
    async def c(b: str = "fallback") -> str:
        return b

    assert g.validate() is g
    a_spec, b_spec, c_spec = g.steps["a"], g.steps["b"], g.steps["c"]
    assert [p.name for p in a_spec.params] == ["q"]
    assert a_spec.ctx_param == "ctx"
    assert c_spec.params[0].default == "fallback"
    assert not c_spec.params[0].required
    assert b_spec.ctx_param == "context"  # found by annotation, not name
    assert b_spec.sources() == ["a"]
    assert (b_spec.resource, b_spec.estimate) == ("llm", 0.5)


def test_graph_errors_share_the_root() -> None:
    for exc in (CycleError, DuplicateStepError, UnknownDependencyError, InvalidStepError):
        assert issubclass(exc, GraphError)
        assert issubclass(exc, critpath.CritpathError)
    assert issubclass(ConfigError, ValueError)
