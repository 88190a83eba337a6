"""The chat service's ``/metrics`` (Prometheus text), read directly and by a real Prometheus.

The service runs for real on loopback over the embedded simulated fleet. The first
tests read ``/metrics`` themselves with ``prometheus_client``'s parser; the last starts
Debian's ``prometheus`` on 127.0.0.1 (its own config, a temporary storage folder, a
free port) scraping the service every second, sends a short load, and asks
Prometheus's HTTP API for the time-to-first-token histogram. It is skipped when
``prometheus`` is not installed, unless ``CRITPATH_REQUIRE_PROMETHEUS=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chat_support import chat_server  # noqa: E402

from examples.chatbot import ChatConfig  # noqa: E402

FAST = ChatConfig(time_scale=0.05)



def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def ask(client: httpx.AsyncClient, message: str = "Why does my deploy fail?") -> None:
    async with client.stream("POST", "/chat", json={"message": message}) as r:
        assert r.status_code == 200
        async for _ in r.aiter_lines():
            pass


async def test_metrics_count_requests_and_time_the_first_token_draft_and_final() -> None:
    async with chat_server(FAST) as server, httpx.AsyncClient(base_url=server.url) as client:
        await ask(client)
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "critpath-refine", "messages": [{"role": "user", "content": "Hi"}]},
        )
        assert r.status_code == 200
        m = await client.get("/metrics")
    assert m.status_code == 200
    assert m.headers["content-type"].startswith("text/plain")
    s = samples(m.text)
    chat = (("endpoint", "chat"),)
    completions = (("endpoint", "completions"),)
    assert s[("chatbot_requests_total", chat)] == 1
    assert s[("chatbot_requests_total", completions)] == 1
    assert s[("chatbot_requests_in_flight", chat)] == 0
    assert s[("chatbot_time_to_first_token_seconds_count", chat)] == 1
    assert s[("chatbot_time_to_first_token_seconds_count", completions)] == 1
    assert s[("chatbot_draft_seconds_count", ())] == 1
    assert s[("chatbot_final_seconds_count", (("source", "revision"),))] == 1
    ttft = s[("chatbot_time_to_first_token_seconds_sum", chat)]
    final = s[("chatbot_final_seconds_sum", (("source", "revision"),))]
    assert 0 < ttft < final  # the draft's first token comes well before the final answer


async def test_a_client_that_goes_away_is_counted_and_leaves_nothing_in_flight() -> None:
    async with chat_server(FAST) as server, httpx.AsyncClient(base_url=server.url) as client:
        async with client.stream("POST", "/chat", json={"message": "Hi"}) as r:
            async for line in r.aiter_lines():
                if line.startswith("event: draft"):
                    break  # leave mid-answer
        deadline = time.monotonic() + 10
        while True:  # the server notices the disconnect on its own schedule
            s = samples((await client.get("/metrics")).text)
            if s[("chatbot_requests_in_flight", (("endpoint", "chat"),))] == 0:
                break
            assert time.monotonic() < deadline, "the abandoned answer is still in flight"
            await asyncio.sleep(0.02)
    assert s[("chatbot_errors_total", (("type", "client_disconnected"),))] == 1


async def test_requests_shed_by_admission_control_are_counted() -> None:
    busy = ChatConfig(time_scale=1.0, max_concurrency=1, max_queue=0)
    async with (
        chat_server(busy) as server,
        httpx.AsyncClient(base_url=server.url) as client,
        client.stream("POST", "/chat", json={"message": "Hi"}) as first,
    ):
        async for line in first.aiter_lines():
            if line.startswith("event: draft"):
                break  # admitted and answering: the one slot is taken
        second = await client.post("/chat", json={"message": "And me?"})
        assert second.status_code == 503
        s = samples((await client.get("/metrics")).text)
    assert s[("chatbot_shed_total", (("reason", "admission"),))] == 1
    assert s[("chatbot_requests_total", (("endpoint", "chat"),))] == 1  # the shed one never began


# ---- a real Prometheus ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def prometheus(target: str, work: Path) -> Iterator[str]:
    exe = shutil.which("prometheus")
    if exe is None:
        if os.environ.get("CRITPATH_REQUIRE_PROMETHEUS") == "1":
            pytest.fail("CRITPATH_REQUIRE_PROMETHEUS=1 but prometheus is not installed")
        pytest.skip("prometheus not installed (Debian: apt-get install prometheus)")
    port = _free_port()
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: chatbot\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [exe, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


async def until(check: Any, what: str, within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(httpx.HTTPError):
            value = await check()
            if value is not None:
                return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_prometheus_scrapes_the_ttft_histogram(tmp_path: Path) -> None:
    n = 8
    async with chat_server(FAST) as server, httpx.AsyncClient(base_url=server.url) as client:
        with prometheus(f"127.0.0.1:{server.port}", tmp_path) as prom:
            async with httpx.AsyncClient(base_url=prom, timeout=5) as api:

                async def ready() -> bool | None:
                    return True if (await api.get("/-/ready")).status_code == 200 else None

                async def query(q: str) -> list[dict[str, Any]]:
                    r = await api.get("/api/v1/query", params={"query": q})
                    r.raise_for_status()
                    body = r.json()
                    assert body["status"] == "success"
                    result: list[dict[str, Any]] = body["data"]["result"]
                    return result

                await until(ready, "prometheus to be ready")

                async def scraped() -> bool | None:
                    up = await query('up{job="chatbot"}')
                    return True if up and up[0]["value"][1] == "1" else None

                await until(scraped, "a first successful scrape")
                await asyncio.gather(*(ask(client, f"question {i}") for i in range(n)))

                async def counted() -> list[dict[str, Any]] | None:
                    q = 'chatbot_time_to_first_token_seconds_count{endpoint="chat"}'
                    res = await query(q)
                    return res if res and float(res[0]["value"][1]) >= n else None

                (count,) = await until(counted, f"{n} first tokens in Prometheus")
                assert float(count["value"][1]) == n
                buckets = await query('chatbot_time_to_first_token_seconds_bucket{endpoint="chat"}')
                by_le = {b["metric"]["le"]: float(b["value"][1]) for b in buckets}
                assert by_le["+Inf"] == n
                p50 = await query(
                    "histogram_quantile(0.5, "
                    'chatbot_time_to_first_token_seconds_bucket{endpoint="chat"})'
                )
                assert 0 < float(p50[0]["value"][1]) < 60
