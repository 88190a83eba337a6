"""Step memoisation: ``@g.step(cache=...)`` reuses results for the same inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from critpath import Graph, StepCache, StepContext
from critpath.caching import SQLiteStore
from critpath.errors import ConfigError


def build(cache: StepCache | bool, calls: list[str]) -> Graph:
    g = Graph("memo", inputs=["question"])

    @g.step(cache=cache)
    async def search(question: str, ctx: StepContext) -> list[str]:
        calls.append(question)
        return [question.upper(), "doc"]

    @g.step
    async def answer(search: list[str]) -> str:
        return " ".join(search)

    return g


async def test_the_same_inputs_reuse_the_result_across_runs() -> None:
    calls: list[str] = []
    memo = StepCache()
    g = build(memo, calls)
    first = await g.run({"question": "a"})
    second = await g.run({"question": "a"})
    third = await g.run({"question": "b"})
    assert first.output == second.output == "A doc"
    assert third.output == "B doc"
    assert calls == ["a", "b"]
    s = memo.statistics()
    assert (s.hits, s.misses, s.stored) == (1, 2, 2)


async def test_cache_true_and_a_custom_key() -> None:
    calls: list[str] = []
    g = build(True, calls)
    await g.run({"question": "a"})
    await g.run({"question": "a"})
    assert calls == ["a"]

    calls2: list[str] = []
    g2 = build(StepCache(key=lambda question: question.lower()), calls2)
    await g2.run({"question": "A"})
    out = await g2.run({"question": "a"})
    assert calls2 == ["A"]
    assert out.output == "A doc"  # the key says "a" and "A" are the same question


async def test_results_json_cannot_write_run_every_time() -> None:
    calls: list[int] = []
    g = Graph("memo", inputs=["n"])

    @g.step(cache=True)
    async def make(n: int) -> object:
        calls.append(n)
        return {n}  # a set: not JSON

    await g.run({"n": 1})
    await g.run({"n": 1})
    assert calls == [1, 1]


async def test_a_failing_step_stores_nothing() -> None:
    attempts: list[int] = []
    memo = StepCache()
    g = Graph("memo", inputs=["n"])

    @g.step(cache=memo, fallback=-1)
    async def flaky(n: int) -> int:
        attempts.append(n)
        if len(attempts) == 1:
            raise RuntimeError("first time")
        return n * 2

    assert (await g.run({"n": 3})).output == -1
    assert (await g.run({"n": 3})).output == 6
    assert (await g.run({"n": 3})).output == 6
    assert len(attempts) == 2
    assert memo.statistics().stored == 1


async def test_memoised_results_persist_in_sqlite(tmp_path: Path) -> None:
    calls: list[str] = []
    store = SQLiteStore(tmp_path / "steps.db")
    await build(StepCache(store), calls).run({"question": "a"})
    await store.aclose()
    store2 = SQLiteStore(tmp_path / "steps.db")
    out = await build(StepCache(store2), calls).run({"question": "a"})  # a new graph, same step
    await store2.aclose()
    assert out.output == "A doc"
    assert calls == ["a"]


def test_stream_steps_cannot_be_memoised() -> None:
    g = Graph("memo")
    with pytest.raises(ConfigError, match="cache"):

        @g.stream(cache=True)
        async def items() -> object:
            yield 1
