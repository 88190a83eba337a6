"""An example chat service embedding critpath: fast draft, then the strong model's revision.

Endpoints (Starlette; run it with ``python -m examples.chatbot`` or any ASGI server):

- ``GET /``: a small web page: type a question, watch the draft appear at once and the
  revision arrive as highlighted changes.
- ``POST /chat`` ``{"message": "..."}``: Server-Sent Events — ``draft`` (a piece of
  the fast model's draft, as it comes), ``revision`` (the strong model's answer as diff
  operations against the draft), ``final`` (the answer, its source and timings), or
  ``error``. Built on ``critpath.cascades.Refine``: both models start at once.
- ``POST /v1/chat/completions``: OpenAI-compatible (streamed or not), answering with the
  final text (existing clients see a normal model named ``critpath-refine``).
- ``GET /v1/models``, ``GET /healthz``.
- ``GET /metrics``: Prometheus text (``examples/chatbot/metrics.py``): requests, in
  flight, time to first token, draft and final latency, errors by type, shed requests.

A client that disconnects cancels the whole answer: both model streams are closed, so
a vLLM (or simulated) server aborts the generations at once.

Configuration (environment variables):

- ``CHATBOT_BASE_URL``: an OpenAI-compatible server (e.g. vLLM,
  ``http://127.0.0.1:8000/v1``); unset: the embedded simulated fleet, in process.
- ``CHATBOT_DRAFT_MODEL`` / ``CHATBOT_STRONG_MODEL``: served model names (default
  ``small`` / ``large``, the simulated fleet's).
- ``CHATBOT_API_KEY_ENV``: the name of the variable holding the server's API key.
- ``CHATBOT_MAX_CHARS`` (default 4000): longest message accepted;
  ``CHATBOT_MAX_TOKENS`` (default 256): longest answer.
- ``CHATBOT_TIME_SCALE`` (default 1.0): the simulated fleet's speed.
- ``CHATBOT_SLO`` (default 30 seconds; empty: none): the time an answer may take. The
  strong side is ``Adaptive([strong, draft])``: under a burst, when the strong model
  is predicted to miss it, the draft model gives the final answer instead of a late
  one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from critpath.adapters import Adaptive, Model, OpenAICompatible, Usage, make_request
from critpath.adapters.sim import FunctionAnswers, SimulatedModel
from critpath.adapters.sim.answers import Answer
from critpath.adapters.sim.wire import APIError, ResponseEncoder, error_body, parse_request
from critpath.cascades import DraftDelta, Final, Revision
from critpath.demo.strategies import DemoStrategy, build_refine, served_name
from critpath.errors import InvalidRequestError, ModelError
from examples.chatbot.metrics import ChatMetrics

__all__ = ["ChatConfig", "create_app"]

STRATEGY = DemoStrategy.REFINE
"""The demo strategy the service answers with (``critpath.demo.strategies``)."""
MODEL_NAME = served_name(STRATEGY)
PAGE = Path(__file__).with_name("page.html")


@dataclass
class ChatConfig:
    """What the service talks to (see the module docstring for the variables)."""

    base_url: str | None = None
    draft_model: str = "small"
    strong_model: str = "large"
    api_key_env: str | None = None
    max_chars: int = 4000
    max_tokens: int = 256
    time_scale: float = 1.0
    slo: float | None = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ChatConfig:
        e = os.environ if env is None else env
        return cls(
            base_url=e.get("CHATBOT_BASE_URL") or None,
            draft_model=e.get("CHATBOT_DRAFT_MODEL", "small"),
            strong_model=e.get("CHATBOT_STRONG_MODEL", "large"),
            api_key_env=e.get("CHATBOT_API_KEY_ENV") or None,
            max_chars=int(e.get("CHATBOT_MAX_CHARS", "4000")),
            max_tokens=int(e.get("CHATBOT_MAX_TOKENS", "256")),
            time_scale=float(e.get("CHATBOT_TIME_SCALE", "1.0")),
            slo=float(e.get("CHATBOT_SLO", "30")) if e.get("CHATBOT_SLO", "30") else None,
        )


def _simulated_answer(model: str, request: Any) -> Answer:
    """The embedded fleet's answers: a quick, plausible draft; a more careful revision."""
    question = request.messages[-1].content if request.messages else ""
    topic = " ".join(question.split()[:8]).rstrip("?.!") or "your question"
    if model == "small":
        text = (f"Short answer about {topic}: check the configuration first, then retry the "
                "deploy. It usually works after that.")  # fmt: skip
    else:
        text = (f"Short answer about {topic}: check the configuration first, then read the "
                "release notes for renamed settings, fix them, and redeploy. A rollback is "
                "rarely needed.")  # fmt: skip
    return Answer(text, len(text.split()), None, 0.9)


def _models(config: ChatConfig) -> tuple[Model, Model, list[OpenAICompatible]]:
    if config.base_url:
        draft = OpenAICompatible(
            config.base_url, config.draft_model, api_key_env=config.api_key_env
        )
        strong = OpenAICompatible(config.base_url, config.strong_model,
                                  api_key_env=config.api_key_env)  # fmt: skip
        return draft, strong, [draft, strong]
    answers = FunctionAnswers(_simulated_answer)
    draft_sim = SimulatedModel("small", profile="local-8b", answers=answers,
                               time_scale=config.time_scale)  # fmt: skip
    strong_sim = SimulatedModel("large", profile="api", answers=answers,
                                time_scale=config.time_scale)  # fmt: skip
    return draft_sim, strong_sim, []


class CancelOnDisconnect(StreamingResponse):
    """A streaming response that stops its generator the moment the client goes away.

    Starlette's own (ASGI 2.4 servers, such as uvicorn) notices a disconnect only when
    its next write fails, which for an answer waiting on a slow model can be seconds
    later; here a task reads ``http.disconnect`` and cancels the stream at once, which
    closes the model streams (and the model server aborts the generations).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self.stream_response(send))
        watch = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait({stream, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stream, watch):
                task.cancel()
            await asyncio.gather(stream, watch, return_exceptions=True)
        failed = stream.done() and not stream.cancelled() and stream.exception() is not None
        if failed and not isinstance(stream.exception(), OSError):  # OSError: client gone
            raise stream.exception()  # type: ignore[misc]


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status)


def create_app(config: ChatConfig | None = None) -> Starlette:
    """The chat service (``config``: from the environment when omitted)."""
    cfg = config or ChatConfig.from_env()
    draft, strong, clients = _models(cfg)
    in_time = Adaptive([strong, draft], slo=cfg.slo, name=strong.name)  # lighter under a burst
    refine = build_refine([draft, in_time], name=MODEL_NAME)
    meter = ChatMetrics()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for c in clients:
                await c.aclose()

    limit = cfg.max_chars * 8 + 4096  # bytes: JSON escapes can take 6 per character

    async def body_of(request: Request) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise APIError(413, "request body too large")
        raw = bytearray()
        async for part in request.stream():  # stop reading at the limit
            raw += part
            if len(raw) > limit:
                raise APIError(413, "request body too large")
        try:
            body = json.loads(raw)
            json.dumps(body, ensure_ascii=False).encode("utf-8")  # lone surrogates: invalid
        except (json.JSONDecodeError, UnicodeError) as exc:
            raise APIError(400, f"invalid JSON: {exc}") from exc
        return body

    async def page(_request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "draft": draft.name, "strong": strong.name})

    async def chat(request: Request) -> Response:
        try:
            body = await body_of(request)
            if not isinstance(body, dict) or not isinstance(body.get("message"), str):
                raise APIError(400, 'the body must be {"message": "..."}', param="message")
            message = body["message"].strip()
            if not message:
                raise APIError(400, "the message is empty", param="message")
            if len(message) > cfg.max_chars:
                raise APIError(
                    413, f"the message is longer than {cfg.max_chars} characters", param="message"
                )
            req = make_request(messages=message, max_tokens=cfg.max_tokens)
        except APIError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        except InvalidRequestError as exc:
            return _error(400, str(exc))

        async def events() -> AsyncIterator[bytes]:
            # Starlette cancels this generator when the client goes away; closing the
            # refine stream then closes both model streams (the server aborts them).
            try:
                async with aclosing(meter.watch_refine(refine.events(req))) as stream:
                    async for ev in stream:
                        if isinstance(ev, DraftDelta):
                            yield _sse("draft", {"text": ev.text, "t": ev.t})
                        elif isinstance(ev, Revision):
                            ops = [dataclasses.asdict(o) for o in ev.ops]
                            change = ev.change_fraction
                            data = {"ops": ops, "t": ev.t, "draft": ev.draft, "change": change}
                            yield _sse("revision", data)
                        elif isinstance(ev, Final):
                            s = ev.stats
                            yield _sse("final", {
                                "text": ev.text, "source": ev.source, "t": ev.t,
                                "ttft_draft": s.ttft_draft, "ttft_strong": s.ttft_strong,
                                "outcome": s.outcome, "changed": s.changed,
                            })  # fmt: skip
            except ModelError as exc:
                yield _sse("error", {"message": f"{type(exc).__name__}: {exc}"})

        return CancelOnDisconnect(events(), media_type="text/event-stream",
                                  headers={"Cache-Control": "no-cache"})  # fmt: skip

    async def completions(request: Request) -> Response:
        try:
            body = await body_of(request)
            if isinstance(body, dict) and not isinstance(body.get("model", ""), str):
                return _error(400, "model must be a string", "model")
            if isinstance(body, dict) and body.get("model") not in (MODEL_NAME, None):
                return _error(404, f"unknown model {body.get('model')!r}; use {MODEL_NAME!r}",
                              "model")  # fmt: skip
            parsed = parse_request(body, chat=True)
        except APIError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        req = parsed.request
        if req.max_tokens > cfg.max_tokens:
            req = req.model_copy(update={"max_tokens": cfg.max_tokens})
        chars = sum(len(m.content) for m in req.messages or ())
        if chars > cfg.max_chars:
            return _error(413, f"the messages are longer than {cfg.max_chars} characters",
                          "messages")  # fmt: skip
        encoder = ResponseEncoder(chat=True, model=MODEL_NAME, request=req,
                                  completion_id="chatcmpl-" + uuid.uuid4().hex,
                                  created=int(time.time()))  # fmt: skip
        if not parsed.stream:
            chunks = []
            try:
                async with aclosing(meter.watch_stream(refine.stream(req))) as stream:
                    async for chunk in stream:
                        chunks.append(chunk)
            except ModelError as exc:
                return _error(502, f"{type(exc).__name__}: {exc}")
            text = "".join(c.text for c in chunks)
            logprobs = [lp for c in chunks for lp in (c.logprobs or ())]
            finish = next((c.finish_reason for c in reversed(chunks) if c.finish_reason), None)
            usage = next((c.usage for c in reversed(chunks) if c.usage), None)
            return JSONResponse(encoder.response(text, logprobs, finish, usage or Usage(0, 0)))

        async def sse() -> AsyncIterator[bytes]:
            usage = None
            try:
                yield f"data: {json.dumps(encoder.role_chunk())}\n\n".encode()
                async with aclosing(meter.watch_stream(refine.stream(req))) as stream:
                    async for chunk in stream:
                        usage = chunk.usage or usage
                        if chunk.text or chunk.finish_reason:
                            yield f"data: {json.dumps(encoder.chunk(chunk))}\n\n".encode()
                if parsed.include_usage:
                    last = encoder.usage_chunk(usage or Usage(0, 0))
                    yield f"data: {json.dumps(last)}\n\n".encode()
            except ModelError as exc:
                yield f"data: {json.dumps(error_body(502, str(exc)))}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return CancelOnDisconnect(sse(), media_type="text/event-stream")

    async def metrics(_request: Request) -> Response:
        text, content_type = meter.render()
        return Response(text, media_type=content_type)

    async def models(_request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": MODEL_NAME, "object": "model", "owned_by": "critpath"}]})  # fmt: skip

    return Starlette(
        routes=[
            Route("/", page),
            Route("/healthz", healthz),
            Route("/chat", chat, methods=["POST"]),
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )
