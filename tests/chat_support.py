"""What the chat service's tests share: serving it on loopback, reading its Server-Sent
Events, and the page script that records the order in which the transcript changes."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from critpath.serve.asgi import AppServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.chatbot import ChatConfig, create_app  # noqa: E402

__all__ = ["RECORD_ORDER", "chat_server", "sse_events"]


@asynccontextmanager
async def chat_server(config: ChatConfig) -> AsyncIterator[AppServer]:
    async with AppServer(create_app(config)) as server:
        yield server


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    event, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif not line and data:
            yield event, json.loads(data)
            event, data = "message", ""


RECORD_ORDER = """() => {
  // records, in the order the page shows them, each turn's first draft text ('draft1')
  // and its revision ('revised1'), and a stopped turn ('stopped1')
  window.shownOrder = [];
  const transcript = document.getElementById('transcript');
  const seen = (what) => { if (!window.shownOrder.includes(what)) window.shownOrder.push(what); };
  new MutationObserver(() => {
    transcript.querySelectorAll('.turn').forEach((turn, i) => {
      if (turn.querySelector('.draft').textContent.length > 0) seen('draft' + (i + 1));
      if (turn.querySelector('.revision').getAttribute('data-state') === 'revised')
        seen('revised' + (i + 1));
      if (turn.getAttribute('data-state') === 'stopped') seen('stopped' + (i + 1));
    });
  }).observe(transcript, {childList: true, subtree: true, characterData: true, attributes: true});
}"""
"""A page script: after it runs, ``window.shownOrder`` lists what the page showed."""
