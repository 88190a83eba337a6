"""Both servers — ``critpath sim-server`` and the example chat service — against a
hostile client and a broken upstream: deep JSON is a 400 (keep-alive kept), Host and
content type are checked, prompts past the context window are refused, failures reach
anonymous clients as a generic message with an id, overload is shed with 503.

Real servers on loopback (uvicorn), real HTTP clients.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from critpath.adapters.sim import Fleet, SimServer
from critpath.adapters.sim.limits import ContextLimits
from critpath.serve.asgi import AppServer
from critpath.serve.guard import JSONBodyError, loads_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.chatbot import ChatConfig, create_app

DEEP = b"[" * 5000 + b"]" * 5000  # past Python's recursion limit, within body limits
JSON = {"content-type": "application/json"}
CHAT = {"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_loads_json_refuses_deep_nesting_before_parsing() -> None:
    assert loads_json(b'{"a": [1, {"b": "[[[["}]}') == {"a": [1, {"b": "[[[["}]}
    with pytest.raises(JSONBodyError, match="nested deeper"):
        loads_json(DEEP)
    with pytest.raises(JSONBodyError, match="invalid JSON"):
        loads_json(b"{nope")


async def test_sim_server_refuses_hostile_requests_with_openai_errors() -> None:
    fleet = Fleet.synthetic(["small"], time_scale=0.01)
    async with (
        SimServer(fleet, context=ContextLimits(default=1000)) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        r = await client.post("/v1/chat/completions", content=DEEP, headers=JSON)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == 400
        # the same keep-alive connection still serves the next request
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200
        r = await client.post("/v1/chat/completions", json=CHAT, headers={"host": "evil.test"})
        assert r.status_code == 400
        assert "Host" in r.json()["error"]["message"]
        r = await client.post(
            "/v1/chat/completions", content=b"{}", headers={"content-type": "text/plain"}
        )
        assert r.status_code == 415
        long = {**CHAT, "messages": [{"role": "user", "content": "word " * 1000}]}
        r = await client.post("/v1/chat/completions", json=long)
        assert r.status_code == 400
        assert "maximum context length is 1000 tokens" in r.json()["error"]["message"]
        r = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1000})
        assert r.status_code == 400
        r = await client.get("/v1/models")
        assert r.headers["x-content-type-options"] == "nosniff"


FAST = ChatConfig(time_scale=0.02)


async def test_chat_service_refuses_deep_json_foreign_hosts_and_other_content_types() -> None:
    async with AppServer(create_app(FAST)) as server, httpx.AsyncClient(base_url=server.url) as c:
        for path in ("/chat", "/v1/chat/completions"):
            r = await c.post(path, content=DEEP, headers=JSON)
            assert r.status_code == 400
            assert "nested deeper" in r.json()["error"]["message"]
        r = await c.post("/chat", json={"message": "hi"}, headers={"host": "rebound.evil.test"})
        assert r.status_code == 400
        r = await c.post(
            "/chat", content=b'{"message": "hi"}', headers={"content-type": "text/plain"}
        )
        assert r.status_code == 415
        page = await c.get("/")
        assert page.status_code == 200
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        csp = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        assert "'sha256-" in csp  # the page's inline script, by hash; nothing else inline
        assert "unsafe-inline" not in csp
        r = await c.post("/chat", json={"message": "hi"})  # still works
        assert r.status_code == 200


async def test_chat_service_bearer_token_guards_its_api_not_its_page() -> None:
    config = ChatConfig(time_scale=0.02, token="s3cret-token")
    async with AppServer(create_app(config)) as server, httpx.AsyncClient(base_url=server.url) as c:
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/v1/models")).status_code == 401
        r = await c.post("/chat", json={"message": "hi"}, headers={"authorization": "Bearer no"})
        assert r.status_code == 401
        auth = {"authorization": "Bearer s3cret-token"}
        assert (await c.get("/v1/models", headers=auth)).status_code == 200


async def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name:
            import json

            events.append((name, json.loads(line[6:])))
    return events


async def test_upstream_failures_reach_clients_as_a_generic_message_and_an_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = ChatConfig(base_url="http://127.0.0.1:1/v1", time_scale=0.02)
    caplog.set_level(logging.WARNING, logger="examples.chatbot")
    async with AppServer(create_app(config)) as server, httpx.AsyncClient(base_url=server.url) as c:
        async with c.stream("POST", "/chat", json={"message": "hi"}) as r:
            events = await sse_events(r)
        errors = [data for name, data in events if name == "error"]
        assert errors
        assert "127.0.0.1:1" not in str(events)
        assert errors[0]["message"] == "the answer failed; try again later"
        ref = errors[0]["ref"]
        assert any(ref in rec.getMessage() and "127.0.0.1:1" in rec.getMessage()
                   for rec in caplog.records)  # fmt: skip
        r = await c.post("/v1/chat/completions", json={"messages": CHAT["messages"]})
        assert r.status_code == 502
        assert "127.0.0.1" not in r.text
        assert "ref " in r.json()["error"]["message"]


async def test_chat_service_sheds_overload_with_503_and_retry_after() -> None:
    config = ChatConfig(time_scale=1.0, max_concurrency=1, max_queue=0)
    async with AppServer(create_app(config)) as server, httpx.AsyncClient(base_url=server.url) as c:
        async with c.stream("POST", "/chat", json={"message": "first"}) as first:
            assert first.status_code == 200  # admitted: holds the only place
            r = await c.post("/chat", json={"message": "second"})
            assert r.status_code == 503
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == 503
            r = await c.post("/v1/chat/completions", json={"messages": CHAT["messages"]})
            assert r.status_code == 503
            async for _ in first.aiter_bytes():  # the first answer ends: its place is free
                pass
        r = await c.post("/v1/chat/completions", json={"messages": CHAT["messages"]})
        assert r.status_code == 200
