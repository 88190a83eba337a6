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
- ``CHATBOT_TOKEN``: when set, ``/chat`` and ``/v1/*`` require ``Authorization: Bearer
  <token>`` (the page and ``/healthz`` stay public).
- ``CHATBOT_ALLOWED_HOSTS``: extra ``Host`` names to accept, comma-separated (the
  loopback names always are).
- ``CHATBOT_SHED_SLO`` (seconds; default: none): the last resort after a lighter
  model: shed requests whose predicted latency would still miss it (503 with
  ``Retry-After``); set it above ``CHATBOT_SLO``. ``CHATBOT_MAX_CONCURRENCY`` (default
  64) / ``CHATBOT_MAX_QUEUE`` (default 64): answers served at once, and admitted beyond
  that (a bounded queue).

Hardening: the app is wrapped in ``critpath.serve.guard.Guard`` (``Host`` allow-list
against DNS rebinding, ``application/json`` required on POSTs, the optional bearer
token, ``Content-Security-Policy`` with the page's inline script and style hashes,
``X-Frame-Options``, ``X-Content-Type-Options``); JSON nested deeper than 64 levels is
a 400; a failed answer reaches the client as a generic message and an id (``ref``),
the details (which name internal addresses) go to the ``examples.chatbot`` log.
Admission control (``critpath.serve.admission``) bounds the queue. ``python -m
examples.chatbot`` also sets uvicorn's connection limit, idle keep-alive timeout and
graceful drain (see its ``--help``).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
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
from critpath.errors import InvalidRequestError, ModelError, Overloaded
from critpath.serve.admission import AdmissionController
from critpath.serve.guard import LOOPBACK_HOSTS, Guard, JSONBodyError, loads_json

__all__ = ["ChatConfig", "create_app", "page_csp"]

_log = logging.getLogger("examples.chatbot")

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
    token: str | None = dataclasses.field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] = ()
    shed_slo: float | None = None
    max_concurrency: int = 64
    max_queue: int = 64

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
            token=e.get("CHATBOT_TOKEN") or None,
            allowed_hosts=tuple(
                h.strip() for h in e.get("CHATBOT_ALLOWED_HOSTS", "").split(",") if h.strip()
            ),
            shed_slo=float(e["CHATBOT_SHED_SLO"]) if e.get("CHATBOT_SHED_SLO") else None,
            max_concurrency=int(e.get("CHATBOT_MAX_CONCURRENCY", "64")),
            max_queue=int(e.get("CHATBOT_MAX_QUEUE", "64")),
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
    ``on_close`` runs when the response ends, however it ends.
    """

    on_close: Callable[[], None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self.stream_response(send))
        watch = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait({stream, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stream, watch):
                task.cancel()
            await asyncio.gather(stream, watch, return_exceptions=True)
            if self.on_close is not None:
                self.on_close()
        failed = stream.done() and not stream.cancelled() and stream.exception() is not None
        if failed and not isinstance(stream.exception(), OSError):  # OSError: client gone
            raise stream.exception()  # type: ignore[misc]


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _event_sse(ev: object) -> bytes:
    if isinstance(ev, DraftDelta):
        return _sse("draft", {"text": ev.text, "t": ev.t})
    if isinstance(ev, Revision):
        ops = [dataclasses.asdict(o) for o in ev.ops]
        data = {"ops": ops, "t": ev.t, "draft": ev.draft, "change": ev.change_fraction}
        return _sse("revision", data)
    if isinstance(ev, Final):
        s = ev.stats
        return _sse("final", {
            "text": ev.text, "source": ev.source, "t": ev.t,
            "ttft_draft": s.ttft_draft, "ttft_strong": s.ttft_strong,
            "outcome": s.outcome, "changed": s.changed,
        })  # fmt: skip
    return b""


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status)


def page_csp(html: str) -> str:
    """The page's Content-Security-Policy: its inline ``<script>`` and ``<style>`` by
    hash, nothing else from anywhere but this origin."""

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
            for b in blocks
        )

    return (
        f"default-src 'none'; script-src {hashes('script') or chr(39) + 'none' + chr(39)}; "
        f"style-src {hashes('style') or chr(39) + 'none' + chr(39)}; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _failure(exc: Exception) -> dict[str, Any]:
    """What an anonymous client learns of a failed answer: a generic message and an
    id to quote; the details (upstream addresses, the error) go to the log."""
    ref = uuid.uuid4().hex[:12]
    _log.warning("answer %s failed: %s: %s", ref, type(exc).__name__, exc)
    return {"message": "the answer failed; try again later", "ref": ref}


def _shed(exc: Overloaded) -> JSONResponse:
    retry = max(1, int(exc.retry_after + 0.999))
    return JSONResponse(error_body(503, "the service is overloaded; retry later"),
                        status_code=503, headers={"Retry-After": str(retry)})  # fmt: skip


def create_app(config: ChatConfig | None = None) -> Guard:
    """The chat service (``config``: from the environment when omitted): the Starlette
    app wrapped in its ``Guard``."""
    cfg = config or ChatConfig.from_env()
    html = PAGE.read_text(encoding="utf-8")
    app = _create_starlette(cfg, html)
    return Guard(app, allowed_hosts=LOOPBACK_HOSTS | set(cfg.allowed_hosts), token=cfg.token,
                 public_paths=("/", "/healthz"), csp=page_csp(html))  # fmt: skip


def _create_starlette(cfg: ChatConfig, html: str) -> Starlette:
    draft, strong, clients = _models(cfg)
    admission = AdmissionController(
        concurrency=cfg.max_concurrency, max_queue=cfg.max_queue, slo=cfg.shed_slo
    )
    in_time = Adaptive([strong, draft], slo=cfg.slo, name=strong.name)  # lighter under a burst
    refine = build_refine([draft, in_time], name=MODEL_NAME)

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
            body = loads_json(bytes(raw))
            json.dumps(body, ensure_ascii=False).encode("utf-8")  # lone surrogates: invalid
        except (JSONBodyError, UnicodeError) as exc:
            raise APIError(400, f"invalid JSON: {exc}") from None
        return body

    async def page(_request: Request) -> Response:
        return HTMLResponse(html)

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
            admitted = admission.admit()
        except APIError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        except InvalidRequestError as exc:
            return _error(400, str(exc))
        except Overloaded as exc:
            return _shed(exc)

        async def events() -> AsyncIterator[bytes]:
            # Starlette cancels this generator when the client goes away; closing the
            # refine stream then closes both model streams (the server aborts them).
            with admitted:
                try:
                    async with aclosing(refine.events(req)) as stream:
                        async for ev in stream:
                            yield _event_sse(ev)
                except ModelError as exc:
                    yield _sse("error", _failure(exc))

        response = CancelOnDisconnect(events(), media_type="text/event-stream",
                                      headers={"Cache-Control": "no-cache"})  # fmt: skip
        response.on_close = admitted.release  # also when the stream never started
        return response

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
        try:
            admitted = admission.admit()
        except Overloaded as exc:
            return _shed(exc)
        if not parsed.stream:
            chunks = []
            try:
                with admitted:
                    async with aclosing(refine.stream(req)) as stream:
                        async for chunk in stream:
                            chunks.append(chunk)
            except ModelError as exc:
                failure = _failure(exc)
                return _error(502, f"{failure['message']} (ref {failure['ref']})")
            text = "".join(c.text for c in chunks)
            logprobs = [lp for c in chunks for lp in (c.logprobs or ())]
            finish = next((c.finish_reason for c in reversed(chunks) if c.finish_reason), None)
            usage = next((c.usage for c in reversed(chunks) if c.usage), None)
            return JSONResponse(encoder.response(text, logprobs, finish, usage or Usage(0, 0)))

        async def sse() -> AsyncIterator[bytes]:
            usage = None
            try:
                with admitted:
                    yield f"data: {json.dumps(encoder.role_chunk())}\n\n".encode()
                    async with aclosing(refine.stream(req)) as stream:
                        async for chunk in stream:
                            usage = chunk.usage or usage
                            if chunk.text or chunk.finish_reason:
                                yield f"data: {json.dumps(encoder.chunk(chunk))}\n\n".encode()
                if parsed.include_usage:
                    last = encoder.usage_chunk(usage or Usage(0, 0))
                    yield f"data: {json.dumps(last)}\n\n".encode()
            except ModelError as exc:
                failure = _failure(exc)
                body = error_body(502, f"{failure['message']} (ref {failure['ref']})")
                yield f"data: {json.dumps(body)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        response = CancelOnDisconnect(sse(), media_type="text/event-stream")
        response.on_close = admitted.release
        return response

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
        ],
        lifespan=lifespan,
    )
