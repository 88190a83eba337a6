"""The example chat service (``examples/chatbot``), served for real on loopback.

Its model server is either the embedded simulated fleet or ``critpath sim-server``'s
app (``SimServer``, real HTTP), so "the model server saw the abort" is checked on the
server's own replicas. The browser test drives the page in headless Chromium
(Debian's ``chromium`` with Playwright's Python client); it is skipped when neither is
installed, unless ``CRITPATH_REQUIRE_BROWSER=1`` (CI) makes that a failure.
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
from critpath.cascades import DiffOp, apply_revision
from critpath.errors import ConfigError
from critpath.serve.asgi import AppServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chat_support import RECORD_ORDER, chat_server, sse_events  # noqa: E402

from examples.chatbot import ChatConfig  # noqa: E402

FAST = ChatConfig(time_scale=0.05)


async def test_chat_streams_draft_then_a_revision_that_rebuilds_the_final() -> None:
    question = {"message": "Why does my deploy fail?"}
    async with (
        chat_server(FAST) as server,
        httpx.AsyncClient(base_url=server.url) as client,
        client.stream("POST", "/chat", json=question) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [e async for e in sse_events(r)]
    kinds = [k for k, _ in events]
    assert kinds[0] == "draft"
    assert kinds[-2:] == ["revision", "final"]
    assert set(kinds[:-2]) == {"draft"}
    draft = "".join(d["text"] for k, d in events if k == "draft")
    revision, final = events[-2][1], events[-1][1]
    assert revision["draft"] == draft
    ops = [DiffOp(**op) for op in revision["ops"]]
    assert apply_revision(draft, ops) == final["text"]
    assert final["source"] == "revision"
    assert final["changed"]
    assert events[0][1]["t"] < final["t"]


async def test_openai_compatible_endpoint_with_the_official_client() -> None:
    async with chat_server(FAST) as server:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        try:
            models = await client.models.list()
            assert [m.id for m in models.data] == ["critpath-refine"]
            messages: Any = [{"role": "user", "content": "Why does my deploy fail?"}]
            whole = await client.chat.completions.create(model="critpath-refine",
                                                         messages=messages)  # fmt: skip
            text = whole.choices[0].message.content
            assert text
            assert "release notes" in text
            stream = await client.chat.completions.create(
                model="critpath-refine", messages=messages, stream=True,
                stream_options={"include_usage": True},
            )  # fmt: skip
            parts, usage = [], None
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
                usage = chunk.usage or usage
            assert "".join(parts) == text
            assert usage is not None
        finally:
            await client.close()


async def test_bad_input_gets_clear_4xx() -> None:
    config = ChatConfig(time_scale=0.05, max_chars=100)
    async with chat_server(config) as server, httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post(
            "/chat", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400
        assert "invalid JSON" in r.json()["error"]["message"]
        r = await client.post("/chat", json={"message": "x" * 101})
        assert r.status_code == 413
        assert "longer than 100" in r.json()["error"]["message"]
        r = await client.post("/chat", json={"text": "hi"})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "message"
        r = await client.post("/chat", json={"message": "   "})
        assert r.status_code == 400
        r = await client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": []})
        assert r.status_code == 404
        assert "unknown model" in r.json()["error"]["message"]
        r = await client.post("/v1/chat/completions", json={"model": "critpath-refine"})
        assert r.status_code == 400
        r = await client.get("/healthz")
        assert r.json()["status"] == "ok"


SLOW = LatencyProfile(queue_s=0.01, prefill_per_token_s=0.0, ttft_sigma=0.0, tpot_s=0.05,
                      tpot_sigma=0.0)  # fmt: skip


async def test_a_client_that_disconnects_cancels_both_generations_on_the_model_server() -> None:
    fleet = Fleet.synthetic(("small", "large"), profile_overrides={"small": SLOW, "large": SLOW})
    async with SimServer(fleet) as models:
        config = ChatConfig(base_url=models.base_url, draft_model="small", strong_model="large")
        async with chat_server(config) as server, httpx.AsyncClient(base_url=server.url) as client:
            async with client.stream("POST", "/chat", json={"message": "Hello there"}) as r:
                async for kind, _ in sse_events(r):
                    assert kind == "draft"
                    break  # the first draft token: now go away
            small, large = fleet["small"], fleet["large"]
            deadline = asyncio.get_running_loop().time() + 10
            while (small.aborted, large.aborted) != (1, 1):
                assert asyncio.get_running_loop().time() < deadline, (small.aborted, large.aborted)
                await asyncio.sleep(0.02)
            assert small.scheduler.running == 0
            assert large.scheduler.running == 0


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")




async def test_the_page_shows_the_draft_then_the_revision_in_a_browser() -> None:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        async_playwright = None  # type: ignore[assignment]
    browser_path = _chromium()
    if async_playwright is None or browser_path is None:
        if os.environ.get("CRITPATH_REQUIRE_BROWSER") == "1":
            pytest.fail("CRITPATH_REQUIRE_BROWSER=1 but chromium or playwright is missing")
        pytest.skip("needs Debian's chromium and the playwright package")
    async with chat_server(ChatConfig(time_scale=0.3)) as server, async_playwright() as p:
        browser = await p.chromium.launch(executable_path=browser_path,
                                          args=["--headless", "--no-sandbox"])  # fmt: skip
        try:
            page = await browser.new_page()
            await page.goto(server.url + "/")
            await page.fill("#message", "Why does my 😀 deploy fail?")  # offsets past an emoji
            await page.evaluate(RECORD_ORDER)
            await page.click("#send")
            turn = ".turn:nth-child(1)"
            await page.wait_for_selector(f"{turn} .revision[data-state='revised']",
                                         timeout=20_000)  # fmt: skip
            # the draft was shown before the revision arrived (recorded by the page itself)
            assert await page.evaluate("() => window.shownOrder") == ["draft1", "revised1"]
            assert await page.locator(f"{turn} .revision ins").count() > 0
            await page.wait_for_selector(f"{turn} .status[data-state='done']", timeout=20_000)
            shown = await page.inner_text(f"{turn} .revision")
            final = await page.get_attribute(f"{turn} .revision", "data-final")
            assert final
            assert "release notes" in final
            assert "release notes" in shown
            kept = await page.evaluate(
                "() => { const c = document.querySelector('.turn .revision').cloneNode(true);"
                " c.querySelectorAll('del').forEach((d) => d.remove()); return c.textContent; }"
            )
            assert kept == final  # what the page shows, less deletions, is the final text
            before = await page.evaluate(
                "() => { const c = document.querySelector('.turn .revision').cloneNode(true);"
                " c.querySelectorAll('ins').forEach((i) => i.remove()); return c.textContent; }"
            )
            draft = await page.evaluate("() => document.querySelector('.turn .draft').textContent")
            assert before == draft  # and less insertions, the draft
        finally:
            await browser.close()


async def test_more_bad_input_is_a_clear_4xx_never_a_500() -> None:
    async with chat_server(FAST) as server, httpx.AsyncClient(base_url=server.url) as client:
        lone = b'{"messages":[{"role":"user","content":"hi \\ud800 there"}]}'
        r = await client.post("/v1/chat/completions", content=lone,
                              headers={"content-type": "application/json"})  # fmt: skip
        assert r.status_code == 400
        r = await client.post("/v1/chat/completions", json={"model": 5, "messages": []})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "model"
        big = b'{"message": "' + b"x" * 100_000 + b'"}'
        r = await client.post("/chat", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413


async def test_an_app_that_fails_to_start_is_a_config_error() -> None:
    from starlette.applications import Starlette

    @asynccontextmanager
    async def broken(_app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    with pytest.raises(ConfigError, match="failed to start"):
        async with AppServer(Starlette(lifespan=broken)):
            pass
