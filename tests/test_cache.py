"""Response cache, stores and coalescing: keys, hits, bounds, failing stores, shared streams."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path

import pytest
from redis_server import RedisServer, redis_or_skip
from scripted import Scripted

from critpath.adapters import Chunk, complete, make_request
from critpath.adapters.cache import Cache, decode_answer, encode_answer
from critpath.adapters.coalesce import Coalesce
from critpath.adapters.request_keys import request_key
from critpath.caching import MemoryStore, SQLiteStore
from critpath.caching.store import CacheStore
from critpath.errors import CacheStoreError, ConfigError, ServerError

ROOT = str(Path(__file__).resolve().parents[1])
WORDS = ("Hello", " hedged", " world", ".")


def det(**fields: object) -> object:
    return make_request(**{"messages": "hi", "temperature": 0, **fields})


# ---- keys ---------------------------------------------------------------------------


def test_key_ignores_how_a_request_is_served_not_what_it_asks() -> None:
    base = make_request(messages="hi", temperature=0)
    same = [
        make_request(messages="hi", temperature=0, request_id="x", priority=3, timeout=2.0),
    ]
    different = [
        make_request(messages="ho", temperature=0),
        make_request(prompt="hi", temperature=0),
        make_request(messages="hi", temperature=0, max_tokens=7),
        make_request(messages="hi", temperature=0, seed=1),
        make_request(messages="hi", temperature=0, stop=("x",)),
        make_request(messages="hi", temperature=0, logprobs=True),
        make_request(messages="hi", temperature=0, extra_body={"top_k": 5}),
        make_request(
            messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
            temperature=0,
        ),
    ]
    k = request_key("m", base)
    assert all(request_key("m", r) == k for r in same)
    keys = {request_key("m", r) for r in different}
    assert k not in keys
    assert len(keys) == len(different)
    assert request_key("other", base) != k


def test_extra_body_order_does_not_matter() -> None:
    a = make_request(messages="hi", seed=1, extra_body={"top_k": 5, "min_p": 0.1})
    b = make_request(messages="hi", seed=1, extra_body={"min_p": 0.1, "top_k": 5})
    assert request_key("m", a) == request_key("m", b)


def test_entry_round_trip_marks_usage_cached() -> None:
    from critpath.adapters import TokenLogprob, Usage

    chunks = [
        Chunk(),
        Chunk(text="a", tokens=1, logprobs=(TokenLogprob("a", -0.1, (("b", -2.0),)),)),
        Chunk(text="b", tokens=1, finish_reason="stop", usage=Usage(3, 2)),
    ]
    raw = encode_answer(chunks)
    assert raw is not None
    hit = decode_answer(raw)
    assert hit.text == "ab"
    assert hit.tokens == 2
    assert hit.finish_reason == "stop"
    assert hit.usage == Usage(3, 2, cached=True)
    assert hit.logprobs == (TokenLogprob("a", -0.1, (("b", -2.0),)),)
    assert encode_answer(chunks[:2]) is None  # unfinished: not an entry
    with pytest.raises(ValueError, match="not a cache entry"):
        decode_answer(b"{nonsense")


# ---- the cache ----------------------------------------------------------------------


async def test_a_repeated_deterministic_request_is_answered_from_the_cache() -> None:
    model = Scripted(words=WORDS, open_gate=True)
    cache = Cache(model)
    first = await complete(cache, det(request_id="a"))
    second = await complete(cache, det(request_id="b", priority=5))
    assert len(model.calls) == 1
    assert second.text == first.text == "".join(WORDS)
    assert second.finish_reason == "stop"
    assert second.usage is not None
    assert second.usage.cached
    assert first.usage is None or not first.usage.cached
    s = cache.statistics()
    assert (s.hits, s.misses, s.stored, s.upstream_calls) == (1, 1, 1, 1)
    assert s.hit_rate == 0.5


async def test_sampled_requests_are_not_cached_unless_the_user_says_so() -> None:
    model = Scripted(words=WORDS, open_gate=True)
    cache = Cache(model)
    sampled = make_request(messages="hi", temperature=0.8)
    await complete(cache, sampled)
    await complete(cache, sampled)
    assert len(model.calls) == 2
    assert cache.statistics().bypassed == 2
    await complete(cache, make_request(messages="hi", seed=7, temperature=0.8))
    await complete(cache, make_request(messages="hi", seed=7, temperature=0.8))
    assert len(model.calls) == 3  # a seed makes it deterministic

    model2 = Scripted(words=WORDS, open_gate=True)
    always = Cache(model2, sampled=True)
    await complete(always, sampled)
    await complete(always, sampled)
    assert len(model2.calls) == 1


async def test_ttl_expires_answers() -> None:
    now = [0.0]
    model = Scripted(words=WORDS, open_gate=True)
    cache = Cache(model, MemoryStore(clock=lambda: now[0]), ttl=10.0)
    await complete(cache, det())
    now[0] = 9.0
    await complete(cache, det())
    assert len(model.calls) == 1
    now[0] = 10.5
    await complete(cache, det())
    assert len(model.calls) == 2


async def test_memory_store_is_bounded_by_entries_and_bytes() -> None:
    store = MemoryStore(max_entries=2, max_bytes=10)
    await store.set("a", b"1")
    await store.set("b", b"2")
    assert await store.get("a") == b"1"  # a is now the most recently used
    await store.set("c", b"3")
    assert await store.get("b") is None
    assert await store.get("a") == b"1"
    await store.set("big", b"x" * 9)  # 1 + 9 > 10 bytes: the older entries go
    assert await store.get("big") == b"x" * 9
    assert store.statistics().bytes <= 10
    await store.set("huge", b"x" * 11)  # larger than the bound on its own
    assert await store.get("huge") is None
    with pytest.raises(ConfigError):
        MemoryStore(max_entries=0)


async def test_an_answer_that_did_not_finish_is_not_stored() -> None:
    model = Scripted(words=WORDS, open_gate=True, fail=ServerError("boom", status=500),
                     fail_mid_stream=True)  # fmt: skip
    cache = Cache(model)
    with pytest.raises(ServerError):
        await complete(cache, det())
    assert cache.statistics().stored == 0

    model.fail = None
    async with aclosing(cache.stream(det())) as stream:
        async for chunk in stream:
            if chunk.text:
                break  # the reader stops early: nothing to store
    assert cache.statistics().stored == 0
    await complete(cache, det())
    assert cache.statistics().stored == 1


async def test_oversized_answers_are_not_stored() -> None:
    model = Scripted(words=WORDS, open_gate=True)
    cache = Cache(model, max_entry_bytes=10)
    await complete(cache, det())
    await complete(cache, det())
    assert len(model.calls) == 2


class BrokenStore:
    kind = "broken"

    def __init__(self) -> None:
        self.gets = 0
        self.sets = 0

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        raise CacheStoreError("store down")

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self.sets += 1
        raise CacheStoreError("store down")

    async def aclose(self) -> None:
        return None


async def test_a_failing_store_never_fails_the_request(caplog: pytest.LogCaptureFixture) -> None:
    model = Scripted(words=WORDS, open_gate=True)
    store = BrokenStore()
    assert isinstance(store, CacheStore)
    cache = Cache(model, store)
    with caplog.at_level(logging.WARNING, logger="critpath.adapters.cache"):
        c = await complete(cache, det())
    assert c.text == "".join(WORDS)
    assert (store.gets, store.sets) == (1, 1)
    assert cache.statistics().store_errors == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("lookup failed" in m and "store down" in m for m in messages)
    assert any("write failed" in m for m in messages)


async def test_a_store_bug_is_not_hidden() -> None:
    class Buggy(BrokenStore):
        async def get(self, key: str) -> bytes | None:
            raise KeyError("a bug, not a store failure")

    cache = Cache(Scripted(open_gate=True), Buggy())
    with pytest.raises(KeyError):
        await complete(cache, det())


# ---- coalescing ---------------------------------------------------------------------


async def read_all(model: object, request: object) -> list[str]:
    out = []
    async with aclosing(model.stream(request)) as stream:  # type: ignore[attr-defined]
        async for chunk in stream:
            out.append(chunk.text)
    return out


@pytest.mark.parametrize("wrapper", [Cache, Coalesce])
async def test_concurrent_identical_requests_reach_the_model_once(wrapper: type) -> None:
    model = Scripted(words=WORDS)
    shared = wrapper(model)
    tasks = [asyncio.create_task(read_all(shared, det(request_id=str(i)))) for i in range(8)]
    await model.started.wait()
    for _ in range(5):
        await asyncio.sleep(0)  # let every reader join the flight
    model.gate.set()
    results = await asyncio.gather(*tasks)
    assert len(model.calls) == 1
    assert all(r == ["", *WORDS] for r in results)  # every chunk, the accepted one included


async def test_a_late_joiner_gets_every_chunk_from_the_first() -> None:
    resume = asyncio.Event()
    calls = []

    class Paused:
        name = "paused"

        async def stream(self, request: object) -> AsyncIterator[Chunk]:
            calls.append(request)
            yield Chunk()
            yield Chunk(text="Hello", tokens=1)
            await resume.wait()  # the flight is in the air until the test resumes it
            yield Chunk(text=" world", tokens=1, finish_reason="stop")

    shared = Coalesce(Paused())  # type: ignore[arg-type]
    first_chunks: list[str] = []
    got_first_word = asyncio.Event()

    async def first() -> None:
        async with aclosing(shared.stream(det())) as stream:
            async for chunk in stream:
                first_chunks.append(chunk.text)
                if chunk.text == "Hello":
                    got_first_word.set()

    t1 = asyncio.create_task(first())
    await got_first_word.wait()
    late = asyncio.create_task(read_all(shared, det()))  # joins mid-flight
    for _ in range(5):
        await asyncio.sleep(0)
    assert shared.statistics().joined == 1
    resume.set()
    await t1
    assert await late == first_chunks == ["", "Hello", " world"]
    assert len(calls) == 1


async def test_upstream_errors_reach_every_waiter() -> None:
    model = Scripted(words=WORDS, fail=ServerError("boom", status=500))
    shared = Coalesce(model)
    tasks = [asyncio.create_task(read_all(shared, det())) for _ in range(3)]
    await model.started.wait()
    await asyncio.sleep(0)
    model.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ServerError) for r in results)
    assert len(model.calls) == 1


async def test_upstream_is_cancelled_only_when_every_waiter_has_gone() -> None:
    model = Scripted(words=WORDS)
    shared = Coalesce(model)
    tasks = [asyncio.create_task(read_all(shared, det())) for _ in range(3)]
    await model.started.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    assert shared.statistics().joined == 2
    tasks[0].cancel()
    tasks[1].cancel()
    await asyncio.gather(tasks[0], tasks[1], return_exceptions=True)
    assert model.outcome == "running"  # one waiter is still there
    tasks[2].cancel()
    await asyncio.gather(tasks[2], return_exceptions=True)
    await asyncio.wait_for(model.calls[0].ended.wait(), 5)
    assert model.outcome in ("cancelled", "closed")
    s = shared.statistics()
    assert (s.flights, s.abandoned, s.in_flight) == (1, 1, 0)
    # a later request starts a new flight
    model.gate.set()
    assert await read_all(shared, det()) == ["", *WORDS]
    assert len(model.calls) == 2


async def test_a_closed_reader_leaves_the_others_reading() -> None:
    model = Scripted(words=WORDS)
    shared = Coalesce(model)
    stays = asyncio.create_task(read_all(shared, det()))
    await model.started.wait()
    leaver = shared.stream(det())
    assert (await leaver.__anext__()).text == ""
    await leaver.aclose()
    model.gate.set()
    assert await stays == ["", *WORDS]
    assert model.outcome == "finished"


async def test_sampled_requests_are_not_coalesced() -> None:
    model = Scripted(words=WORDS, open_gate=True)
    shared = Coalesce(model)
    req = make_request(messages="hi", temperature=1.0)
    await asyncio.gather(read_all(shared, req), read_all(shared, req))
    assert len(model.calls) == 2


# ---- SQLite -------------------------------------------------------------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "cache.db", max_entries=3)
    yield store
    await store.aclose()


async def test_sqlite_store_persists_expires_and_bounds(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "c.db"
    store = SQLiteStore(path, max_entries=2, clock=lambda: now[0])
    await store.set("a", b"1", ttl=5)
    await store.set("b", b"2")
    assert await store.get("a") == b"1"
    now[0] += 1
    await store.get("b")
    now[0] += 1
    await store.set("c", b"3")  # evicts a (least recently used)
    assert await store.get("a") is None
    assert await store.count() == 2
    await store.aclose()
    with pytest.raises(CacheStoreError, match="closed"):
        await store.get("b")

    reopened = SQLiteStore(path, clock=lambda: now[0])
    assert await reopened.get("b") == b"2"
    await reopened.set("t", b"x", ttl=1)
    now[0] += 2
    assert await reopened.get("t") is None
    await reopened.aclose()


async def test_sqlite_store_is_shared_with_another_process(sqlite_store: SQLiteStore) -> None:
    model = Scripted(words=WORDS, open_gate=True)
    cache = Cache(model, sqlite_store)
    await complete(cache, det())
    key = cache.key(det())
    assert key is not None
    code = (
        "import asyncio, sys\n"
        "from critpath.caching import SQLiteStore\n"
        "async def main():\n"
        "    s = SQLiteStore(sys.argv[1])\n"
        "    v = await s.get(sys.argv[2])\n"
        "    await s.set('from-child', b'hello')\n"
        "    await s.aclose()\n"
        "    print('found' if v else 'missing')\n"
        "asyncio.run(main())\n"
    )
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code, str(sqlite_store.path), key],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": ROOT},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "found"
    assert await sqlite_store.get("from-child") == b"hello"


async def test_an_unwritable_sqlite_file_is_a_miss(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "no" / "such" / "dir" / "c.db")
    model = Scripted(words=WORDS, open_gate=True)
    cache = Cache(model, store)
    assert (await complete(cache, det())).text == "".join(WORDS)
    assert cache.statistics().store_errors == 2
    await store.aclose()


# ---- Redis --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    binary = redis_or_skip()
    with RedisServer(binary) as server:
        yield server


async def test_redis_store_caches_and_expires(redis_server: RedisServer) -> None:
    from critpath.caching.redis_store import RedisStore

    store = RedisStore(redis_server.url, prefix="t1:")
    try:
        model = Scripted(words=WORDS, open_gate=True)
        cache = Cache(model, store, ttl=60)
        await complete(cache, det())
        hit = await complete(cache, det())
        assert hit.usage is not None
        assert hit.usage.cached
        assert len(model.calls) == 1
        key = cache.key(det())
        assert await store.client.pttl("t1:" + str(key)) > 0  # Redis expires it itself
        # a second process-like client sees the same entry
        other = RedisStore(redis_server.url, prefix="t1:")
        assert await other.get(str(key)) is not None
        await other.aclose()
        await store.set("short", b"x", ttl=0.05)
        for _ in range(100):
            if await store.get("short") is None:
                break
            await asyncio.sleep(0.02)  # waits for Redis's own expiry, bounded
        assert await store.get("short") is None
    finally:
        await store.aclose()


async def test_an_unreachable_redis_is_a_miss() -> None:
    redis_or_skip()
    from redis_server import _free_port

    from critpath.caching.redis_store import RedisStore

    store = RedisStore(f"redis://127.0.0.1:{_free_port()}/0", timeout=0.2)
    model = Scripted(words=WORDS, open_gate=True)
    cache = Cache(model, store)
    assert (await complete(cache, det())).text == "".join(WORDS)
    assert (await complete(cache, det())).text == "".join(WORDS)
    assert len(model.calls) == 2
    assert cache.statistics().store_errors == 4
    await store.aclose()


def test_requests_that_differ_only_in_tools_or_format_have_different_keys() -> None:
    from pydantic import BaseModel

    from critpath.adapters.request_keys import request_key

    class Answer(BaseModel):
        ok: bool

    def lookup(city: str) -> str:
        """Look a city up."""
        return city

    plain = make_request(messages="hi", temperature=0)
    with_tool = make_request(messages="hi", temperature=0, tools=[lookup])
    typed = make_request(messages="hi", temperature=0, response_format=Answer)
    keys = {request_key("m", r) for r in (plain, with_tool, typed)}
    assert len(keys) == 3


def test_answers_that_call_tools_are_not_stored() -> None:
    from critpath.adapters.cache import encode_answer
    from critpath.adapters.protocol import Chunk
    from critpath.adapters.tools import ToolCallDelta

    call = ToolCallDelta(index=0, id="c1", name="lookup", arguments='{"city": "Oslo"}')
    assert encode_answer([Chunk(text="", tool_calls=(call,), finish_reason="tool_calls")]) is None
    assert encode_answer([Chunk(text="hi", tokens=1, finish_reason="stop")]) is not None
