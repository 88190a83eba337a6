"""The example chat service as a conversation: sessions, history, Stop, streamed tokens.

The store's bounds are checked with a fake clock; the service is served for real on
loopback, backed by the embedded simulated fleet or by ``SimServer``s (real HTTP), so
aborts, routing and prefix-cache hits are read on the model servers' own replicas. The
browser tests drive the page in headless Chromium like ``test_chatbot``'s, recording the
order of page changes with a ``MutationObserver``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from critpath.adapters.sim import Fleet, LatencyProfile, SimServer
from critpath.serve.asgi import AppServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chat_support import RECORD_ORDER, chat_server, sse_events  # noqa: E402

from examples.chatbot import ChatConfig, create_app  # noqa: E402
from examples.chatbot.sessions import SessionStore  # noqa: E402

FAST = ChatConfig(time_scale=0.05)
SLOW = LatencyProfile(queue_s=0.01, prefill_per_token_s=0.0, ttft_sigma=0.0, tpot_s=0.05,
                      tpot_sigma=0.0)  # fmt: skip





async def ask(client: httpx.AsyncClient, message: str, session: str | None) -> dict[str, Any]:
    """One turn to its end: the ``final`` event's data."""
    body: dict[str, Any] = {"message": message}
    if session is not None:
        body["session"] = session
    async with client.stream("POST", "/chat", json=body) as r:
        assert r.status_code == 200
        events = [e async for e in sse_events(r)]
    assert events[-1][0] == "final", events[-1]
    return events[-1][1]


async def wait_until(check: Any, what: str, limit: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


# ---- the store ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_store_is_bounded_in_count_length_and_age() -> None:
    clock = FakeClock()
    store = SessionStore(max_sessions=2, max_turns=2, max_chars=100, ttl=60, clock=clock)
    a = store.get("session-a")
    for i in range(3):
        a.add(f"q{i}", f"a{i}")
    assert [t.message for t in a.turns] == ["q1", "q2"]  # at most max_turns
    assert [m.role for m in a.messages("q3")] == ["user", "assistant"] * 2 + ["user"]
    a.add("x" * 70, "y" * 28)  # 98 chars: the older turns go to fit 100
    assert [t.message[:1] for t in a.turns] == ["x"]
    assert a.chars == 98
    a.add("z" * 101, "")  # longer than the bound on its own: not kept
    assert not a.turns
    assert a.chars == 0

    store.get("session-b")
    clock.now = 1
    store.get("session-a")  # b is now the least recently used
    store.get("session-c")
    assert len(store) == 2
    assert "session-b" not in store
    assert "session-a" in store

    clock.now = 1 + 60  # neither used for ttl seconds
    assert store.expire() == 2
    assert not store.get("session-a").turns  # forgotten: a new, empty one

    with pytest.raises(ValueError, match="session id"):
        store.get("bad id!")
    with pytest.raises(ValueError, match="session id"):
        store.get("short")


# ---- the service ----------------------------------------------------------------------


async def test_a_session_is_a_conversation_and_no_session_a_single_turn() -> None:
    async with chat_server(FAST) as server, httpx.AsyncClient(base_url=server.url) as client:
        first = await ask(client, "Why does my deploy fail?", "conversation-1")
        assert first["turn"] == 1
        assert "Following up" not in first["text"]
        second = await ask(client, "And what about the rollback?", "conversation-1")
        assert second["turn"] == 2
        # the models saw the history: the answer follows up on the first question
        assert "Following up on Why does my deploy fail (turn 2)" in second["text"]
        assert "about And what about the rollback" in second["text"]
        other = await ask(client, "Is the cache warm?", "conversation-2")
        assert other["turn"] == 1  # sessions are apart
        single = await ask(client, "And what about the rollback?", None)
        assert single["turn"] == 1
        assert "Following up" not in single["text"]
        r = await client.post("/chat", json={"message": "hi", "session": "no spaces here"})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "session"
        r = await client.post("/chat", json={"message": "hi", "session": 7})
        assert r.status_code == 400


async def test_the_embedded_fleet_with_several_replicas_holds_a_conversation() -> None:
    app = create_app(ChatConfig(time_scale=0.05, sim_replicas=3))
    async with AppServer(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        await ask(client, "Why does my deploy fail?", "embedded-replicas")
        second = await ask(client, "And the rollback?", "embedded-replicas")
    assert "Following up on Why does my deploy fail (turn 2)" in second["text"]


async def test_the_history_is_bounded_and_a_stopped_turn_is_not_kept() -> None:
    config = ChatConfig(time_scale=0.05, history_turns=1)
    async with chat_server(config) as server, httpx.AsyncClient(base_url=server.url) as client:
        await ask(client, "First question here?", "bounded-1")
        await ask(client, "Second question here?", "bounded-1")
        third = await ask(client, "Third question here?", "bounded-1")
        # one turn of history kept: the second, not the first
        assert "Following up on Second question here (turn 2)" in third["text"]
        async with client.stream(
            "POST", "/chat", json={"message": "Fourth, stopped?", "session": "bounded-1"}
        ) as r:
            async for kind, _ in sse_events(r):
                assert kind == "draft"
                break  # stop after the first draft token
        fifth = await ask(client, "Fifth question here?", "bounded-1")
        assert "Following up on Third question here (turn 2)" in fifth["text"]


async def test_the_openai_stream_sends_tokens_as_the_model_makes_them() -> None:
    fleet = Fleet.synthetic(("small", "large"), profile_overrides={"small": SLOW, "large": SLOW})
    async with SimServer(fleet) as models:
        config = ChatConfig(base_url=models.base_url, draft_model="small", strong_model="large")
        async with chat_server(config) as server:
            client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
            try:
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                stream = await client.chat.completions.create(
                    model="critpath-refine", stream=True,
                    messages=[{"role": "user", "content": "Why does my deploy fail?"}],
                )  # fmt: skip
                arrivals: list[float] = []
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        arrivals.append(loop.time() - t0)
            finally:
                await client.close()
    large = fleet["large"]
    assert large.stats.requests == 1
    ttft, e2e = large.stats.ttft.mean, large.stats.e2e.mean
    decode = e2e - ttft
    assert len(arrivals) > 10
    assert decode > 0.3  # the model took its time to decode
    # the tokens came as the model made them, not all at the end: the client's first
    # token came before the model was half-way through, and the stream spread over
    # (at least half of) the model's own decode time
    assert arrivals[0] < ttft + decode / 2, (arrivals[0], ttft, e2e)
    assert arrivals[-1] - arrivals[0] > decode / 2, (arrivals[0], arrivals[-1], ttft, e2e)


async def test_the_openai_endpoint_honours_the_messages_history() -> None:
    messages: Any = [
        {"role": "user", "content": "Why does my deploy fail?"},
        {"role": "assistant", "content": "Check the configuration first."},
        {"role": "user", "content": "And what about the rollback?"},
    ]
    async with chat_server(FAST) as server:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        try:
            whole = await client.chat.completions.create(model="critpath-refine",
                                                         messages=messages)  # fmt: skip
            stream = await client.chat.completions.create(
                model="critpath-refine", messages=messages, stream=True
            )
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        finally:
            await client.close()
    text = whole.choices[0].message.content or ""
    assert "Following up on Why does my deploy fail (turn 2)" in text
    assert "".join(parts) == text


async def test_several_replicas_route_a_conversation_to_its_prefix() -> None:
    fleets = [
        Fleet.synthetic(("small", "large"), time_scale=0.05).with_prefix_caching(1024)
        for _ in range(3)
    ]
    async with (
        SimServer(fleets[0]) as s0,
        SimServer(fleets[1]) as s1,
        SimServer(fleets[2]) as s2,
    ):
        urls = ",".join(s.base_url for s in (s0, s1, s2))
        config = ChatConfig(base_url=urls, draft_model="small", strong_model="large")
        async with chat_server(config) as server, httpx.AsyncClient(base_url=server.url) as client:
            placed = []  # the replica (server) of the strong model's request, turn by turn
            for n in range(1, 6):
                before = [f["large"].stats.requests for f in fleets]
                question = f"Question {n}: " + "why does my deploy fail after the upgrade? " * 8
                await ask(client, question, "routed-chat")  # each over a routing block
                after = [f["large"].stats.requests for f in fleets]
                moved = [i for i in range(3) if after[i] != before[i]]
                assert len(moved) == 1
                placed.append(moved[0])
    # The router matches whole blocks of the prompt (each question spans one): every
    # later turn goes where its prefix was sent, and finds it in that replica's cache.
    assert len(set(placed)) == 1, placed
    owner = fleets[placed[-1]]["large"]
    assert owner.prefix_cache is not None
    assert owner.prefix_cache.hits > 0


# ---- in a browser ---------------------------------------------------------------------



@asynccontextmanager
async def browser_page() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        async_playwright = None  # type: ignore[assignment]
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if async_playwright is None or browser_path is None:
        if os.environ.get("CRITPATH_REQUIRE_BROWSER") == "1":
            pytest.fail("CRITPATH_REQUIRE_BROWSER=1 but chromium or playwright is missing")
        pytest.skip("needs Debian's chromium and the playwright package")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=browser_path,
                                          args=["--headless", "--no-sandbox"])  # fmt: skip
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def test_a_two_turn_conversation_in_a_browser() -> None:
    async with chat_server(ChatConfig(time_scale=0.2)) as server, browser_page() as page:
        await page.goto(server.url + "/")
        await page.evaluate(RECORD_ORDER)
        for n, question in enumerate(["Why does my deploy fail?", "And the rollback?"], 1):
            await page.fill("#message", question)
            await page.click("#send")
            await page.wait_for_selector(f".turn:nth-child({n}) .status[data-state='done']",
                                         timeout=20_000)  # fmt: skip
        assert await page.locator(".turn").count() == 2
        order = await page.evaluate("() => window.shownOrder")
        assert order == ["draft1", "revised1", "draft2", "revised2"]
        for n in (1, 2):
            turn = f".turn:nth-child({n})"
            assert await page.inner_text(f"{turn} .draft")
            assert await page.locator(f"{turn} .revision ins").count() > 0
        questions = await page.locator(".turn .question").all_inner_texts()
        assert questions == ["Why does my deploy fail?", "And the rollback?"]
        second = await page.get_attribute(".turn:nth-child(2) .revision", "data-final")
        assert second
        assert "Following up on Why does my deploy fail (turn 2)" in second
        first = await page.get_attribute(".turn:nth-child(1) .revision", "data-final")
        assert first
        assert "Following up" not in first


async def test_the_stop_button_cancels_the_generation_on_the_model_server() -> None:
    fleet = Fleet.synthetic(("small", "large"), profile_overrides={"small": SLOW, "large": SLOW})
    async with SimServer(fleet) as models:
        config = ChatConfig(base_url=models.base_url, draft_model="small", strong_model="large")
        async with chat_server(config) as server, browser_page() as page:
            await page.goto(server.url + "/")
            await page.evaluate(RECORD_ORDER)
            await page.fill("#message", "Hello there")
            await page.click("#send")
            await page.wait_for_function(
                "() => document.querySelector('.turn .draft').textContent.length > 0",
                timeout=20_000,
            )
            assert await page.is_enabled("#stop")
            await page.click("#stop")
            await page.wait_for_selector(".turn .status[data-state='stopped']", timeout=5_000)
            assert "stopped" in await page.inner_text(".turn .status")
            assert await page.evaluate("() => window.shownOrder") == ["draft1", "stopped1"]
            small, large = fleet["small"], fleet["large"]
            await wait_until(lambda: (small.aborted, large.aborted) == (1, 1),
                             "both generations aborted on the model server")  # fmt: skip
            assert small.scheduler.running == 0
            assert large.scheduler.running == 0
            assert await page.is_enabled("#send")
            assert await page.is_disabled("#stop")
            revised = await page.get_attribute(".turn .revision", "data-state")
            assert revised is None  # stopped before the revision
