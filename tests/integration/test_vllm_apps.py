"""The demo and the example chat service against a real vLLM server (tiny random model).

The model's text is noise, so these check the plumbing — streaming, timings, the
refine events, no errors — not answers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from critpath.demo import DemoOptions, run_demo
from critpath.serve.asgi import AppServer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from examples.chatbot import ChatConfig, create_app  # noqa: E402


async def test_demo_against_vllm(vllm_url: str, vllm_model: str, tmp_path: Path) -> None:
    opts = DemoOptions(questions=3, base_url=vllm_url, models=[vllm_model, vllm_model],
                       timeline=tmp_path / "t.html", progress=False)  # fmt: skip
    result = await run_demo(opts)
    assert result["time"] == "real"
    for row in result["strategies"]:
        assert row["errors"] == 0, row
        assert row["latency_ms"]["p50"] > 0
    assert (tmp_path / "t.html").is_file()
    assert result["agent"]["critical_path"][-1] == "answer"


async def test_chat_service_backed_by_vllm(vllm_url: str, vllm_model: str) -> None:
    config = ChatConfig(base_url=vllm_url, draft_model=vllm_model, strong_model=vllm_model,
                        max_tokens=16)  # fmt: skip
    async with AppServer(create_app(config)) as server, httpx.AsyncClient(timeout=60) as client:
        kinds = []
        async with client.stream("POST", server.url + "/chat", json={"message": "Hello"}) as r:
            assert r.status_code == 200
            event = ""
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    kinds.append(event)
                    if event == "final":
                        assert isinstance(json.loads(line[6:])["text"], str)
    assert kinds[-1] == "final"
    assert "error" not in kinds
