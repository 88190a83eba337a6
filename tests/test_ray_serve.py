"""critpath on Ray Serve: the chat service on two replicas, a simulated model server
reached through the OpenAI adapter, and a graph as an app.

The Ray tests start (or join) one local Ray for the module; they are skipped unless
ray is importable, and required when ``CRITPATH_REQUIRE_RAY=1``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import aclosing

import httpx
import pytest

from critpath import Graph
from critpath.adapters import OpenAICompatible, complete, make_request
from critpath.adapters.prometheus import parse_metrics
from critpath.loadtest.runner import run_load
from critpath.serve.asgi import AppServer
from critpath.serve.ray_serve import REPLICA_HEADER, graph_app


def _ray_available() -> bool:
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        if os.environ.get("CRITPATH_REQUIRE_RAY") == "1":
            raise
        return False
    return True


needs_ray = pytest.mark.skipif(not _ray_available(), reason="ray[serve] is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_url() -> Iterator[str]:
    from critpath.serve.ray_serve import (
        asgi_deployment,
        run_app,
        shutdown,
        sim_model_deployment,
        start_http,
        start_ray,
    )

    started = start_ray(num_cpus=2)
    try:
        url = start_http("127.0.0.1", _free_port())
        env = {"CHATBOT_TIME_SCALE": "0.05"}
        chat = asgi_deployment("examples.chatbot.ray_app:build", name="chat", replicas=2,
                               max_ongoing_requests=4, env=env)  # fmt: skip
        run_app(chat, name="chat", route_prefix="/chat-app")
        sim = sim_model_deployment(sizes=("small",), time_scale=1.0)
        run_app(sim, name="sim", route_prefix="/sim")
        yield url
    finally:
        shutdown(stop_ray=started)


class ChatCompletion:
    """A load-test target: a non-streamed chat completion; records the replica."""

    name = "chat on Ray Serve"

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self.client = client
        self.replicas: Counter[str] = Counter()

    async def __call__(self, i: int) -> float | None:
        body = {"messages": [{"role": "user", "content": f"question {i}?"}]}
        r = await self.client.post(self.url + "/v1/chat/completions", json=body)
        r.raise_for_status()
        assert r.json()["choices"][0]["message"]["content"]
        self.replicas[r.headers[REPLICA_HEADER]] += 1
        return None


@needs_ray
async def test_a_load_test_on_two_replicas_succeeds_and_uses_both(ray_url: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        health = [(await client.get(ray_url + "/chat-app/healthz")).json() for _ in range(2)]
        assert all(h["status"] == "ok" and h["replica"].startswith("chat#") for h in health)
        target = ChatCompletion(ray_url + "/chat-app", client)
        result = await run_load(target, rate=20.0, max_requests=40, duration=10, drain_s=30)
    summary = result.summary()
    assert (summary["completed"], summary["errors"]) == (40, 0), summary["error_kinds"]
    assert len(target.replicas) == 2, target.replicas  # served by both replicas
    assert sum(target.replicas.values()) == 40


@needs_ray
async def test_a_model_replica_on_ray_serve_sees_priority_and_cancellation(
    ray_url: str,
) -> None:
    model = OpenAICompatible(ray_url + "/sim/v1", "small", vllm=True)
    try:
        answer = await complete(model, make_request(prompt="hello", max_tokens=4, priority=3))
        assert answer.text
        async with aclosing(model.stream(make_request(prompt="long", max_tokens=200))) as s:
            await anext(s)  # the model is generating...
        # ...and closing the stream aborted it at the model server, behind Ray's proxy.
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                metrics = parse_metrics((await client.get(ray_url + "/sim/metrics")).text)
                aborted = [v for k, v in metrics.items() if "aborted" in k]
                if metrics["vllm:num_requests_running"] == [0.0] and any(
                    x >= 1 for vs in aborted for x in vs
                ):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError(f"the closed stream was not aborted: {metrics}")
    finally:
        await model.aclose()


async def test_a_graph_as_an_app() -> None:
    pytest.importorskip("starlette")

    def build() -> Graph:
        g = Graph("double", inputs=["x"], output="double")

        @g.step
        async def double(x: int) -> int:
            return 2 * x

        return g

    async with AppServer(graph_app(build)) as server, httpx.AsyncClient() as client:
        r = await client.post(server.url + "/run", json={"x": 21})
        assert r.status_code == 200
        assert r.json()["output"] == 42
        assert r.json()["critical_path"] == ["double"]
        bad = await client.post(server.url + "/run", json=[1])
        assert bad.status_code == 400
        missing = await client.post(server.url + "/run", json={})
        assert missing.status_code == 500
        assert "MissingInputError" in missing.json()["error"]
