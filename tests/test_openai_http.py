"""``OpenAICompatible`` against a real HTTP server on loopback that misbehaves on demand.

Every test talks to ``tests/fault_server.py`` over real sockets: what the adapter
sends, how it assembles streams, which typed error each fault becomes, retries,
timeouts, cancellation (the server must *see* the disconnect) and leaks (tasks,
in-flight counts, open connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fault_server import (
    PROMPT_TOKENS,
    Exchange,
    FaultServer,
    RecordedRequest,
    Scenario,
    error_event,
    expected_logprob,
    expected_top,
    ok,
    raw_sse,
    reset,
    stall_after,
    stall_before_first_token,
    stall_before_headers,
    stall_body,
    status,
)

import critpath
from critpath import Graph, RetryPolicy, StepContext
from critpath.adapters import (
    Chunk,
    ModelRequest,
    OpenAICompatible,
    ServerLoad,
    Timeouts,
    TokenLogprob,
    Usage,
    complete,
    make_request,
)
from critpath.errors import (
    AuthenticationError,
    BadRequest,
    ConnectTimeout,
    ContextLengthExceeded,
    FirstTokenTimeout,
    IdleTimeout,
    IncompleteStream,
    InvalidRequestError,
    MalformedResponse,
    ModelConnectionError,
    ModelError,
    ModelNotFound,
    ModelTimeout,
    RateLimited,
    ServerError,
    TotalTimeout,
    is_retryable,
)

FAST = Timeouts(connect=2.0, first_token=0.3, idle=0.3, total=20.0)
NO_WAIT = RetryPolicy(attempts=3, initial=0, maximum=0, jitter=0, retry_if=is_retryable)
WITHIN = 2.0  # generous bound for things that should happen "at once"
CHAT = make_request(messages="hi", max_tokens=5)
PROMPT = make_request(prompt="hi", max_tokens=5)
TOKENS = ("Hel", "lo", " world")


def adapter_for(server: FaultServer, **options: Any) -> OpenAICompatible:
    options.setdefault("retry", None)
    options.setdefault("timeouts", FAST)
    return OpenAICompatible(server.base_url, server.model, **options)


def leaked(before: set[asyncio.Task[Any]], server: FaultServer) -> set[asyncio.Task[Any]]:
    """Tasks alive now that were not before, other than the server's and this one.

    The event loop's own ``aclose()`` tasks for async generators nobody closed are left
    out here: whether one is still pending at a given moment is a race; the
    deterministic check for them is ``test_no_async_generator_is_left_to_the_loop``.
    """
    me = asyncio.current_task()
    return {
        t
        for t in asyncio.all_tasks() - before - server.tasks
        if not t.done() and t is not me and not _is_agen_finalizer(t)
    }


def _is_agen_finalizer(task: asyncio.Task[Any]) -> bool:
    return type(task.get_coro()).__name__ == "async_generator_athrow"


async def assert_clean(
    server: FaultServer, adapter: OpenAICompatible, before: set[asyncio.Task[Any]]
) -> None:
    """Nothing left behind: no task, nothing in flight; closing the pool closes every
    connection the server had open."""
    assert leaked(before, server) == set()
    assert adapter.stats.in_flight == 0
    await adapter.aclose()
    await server.wait_until(lambda: server.open_connections == 0, within=5.0)


async def failing(adapter: OpenAICompatible, request: ModelRequest) -> ModelError:
    """Run ``complete`` and return the ModelError it raised (anything else fails)."""
    try:
        await complete(adapter, request)
    except ModelError as exc:
        return exc
    except Exception as exc:
        pytest.fail(f"expected a critpath ModelError, got {type(exc).__name__}: {exc!r}")
    pytest.fail("expected a critpath ModelError, the call succeeded")


def only_request(server: FaultServer) -> RecordedRequest:
    reqs = server.completion_requests
    assert len(reqs) == 1, reqs
    return reqs[0]


async def read_stream(
    adapter: OpenAICompatible,
    request: ModelRequest,
    seen: list[str],
    on_token: asyncio.Event | None = None,
) -> None:
    """Read a stream to its end (closing it), noting each text and the first token."""
    async with contextlib.aclosing(adapter.stream(request)) as stream:
        async for chunk in stream:
            seen.append(chunk.text)
            if chunk.text and on_token is not None:
                on_token.set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# ---- streamed and whole answers -------------------------------------------------------


@pytest.mark.parametrize("request_", [CHAT, PROMPT], ids=["chat", "completion"])
async def test_streamed_answer_is_assembled(
    fault_server: FaultServer, request_: ModelRequest
) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server)
    done = await complete(adapter, request_)
    assert done.text == "Hello world"
    assert done.finish_reason == "stop"
    assert done.usage == Usage(PROMPT_TOKENS, 3)
    assert done.logprobs is None
    assert done.model == "m"
    assert done.timings.tokens == 3
    assert done.timings.ttft is not None
    req = only_request(fault_server)
    expected_path = "/v1/chat/completions" if request_.is_chat else "/v1/completions"
    assert req.path == expected_path
    assert req.method == "POST"
    # the adapter learned the endpoint's latencies from the call
    stats = adapter.stats
    assert (stats.requests, stats.ttft.count, stats.tpot.count, stats.e2e.count) == (1, 1, 1, 1)
    assert not stats.errors
    await assert_clean(fault_server, adapter, before)


async def test_stream_chunks_in_order(fault_server: FaultServer) -> None:
    adapter = adapter_for(fault_server)
    async with contextlib.aclosing(adapter.stream(CHAT)) as stream:
        chunks = [c async for c in stream]
    texts = [c.text for c in chunks if c.text]
    assert texts == list(TOKENS)
    finish = [c for c in chunks if c.finish_reason is not None]
    assert len(finish) == 1
    assert (finish[0].finish_reason, finish[0].text) == ("stop", " world")
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage == [Usage(PROMPT_TOKENS, 3)]
    # the usage chunk (choices: []) comes last and carries no text
    assert chunks[-1] == Chunk(usage=Usage(PROMPT_TOKENS, 3))
    assert all(c.tokens == (1 if c.text else 0) for c in chunks)
    await adapter.aclose()


@pytest.mark.parametrize("streaming", [True, False], ids=["sse", "whole"])
@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completion"])
@pytest.mark.parametrize("k", [0, 2])
async def test_logprobs_parsed_into_token_logprobs(
    fault_server: FaultServer, streaming: bool, chat: bool, k: int
) -> None:
    adapter = adapter_for(fault_server, streaming=streaming)
    fields: dict[str, Any] = {"messages": "hi"} if chat else {"prompt": "hi"}
    request = make_request(**fields, max_tokens=5, logprobs=True, top_logprobs=k or None)
    done = await complete(adapter, request)
    assert done.text == "Hello world"
    assert done.logprobs == tuple(
        TokenLogprob(tok, expected_logprob(i), tuple(expected_top(tok, i, k)))
        for i, tok in enumerate(TOKENS)
    )
    await adapter.aclose()


@pytest.mark.parametrize("request_", [CHAT, PROMPT], ids=["chat", "completion"])
async def test_non_streaming_answer(fault_server: FaultServer, request_: ModelRequest) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server, streaming=False)
    done = await complete(adapter, request_)
    assert done.text == "Hello world"
    assert done.finish_reason == "stop"
    assert done.usage == Usage(PROMPT_TOKENS, 3)
    body = only_request(fault_server).body
    assert "stream" not in body
    assert "stream_options" not in body
    assert adapter.stats.ttft.count == 1
    await assert_clean(fault_server, adapter, before)


@pytest.mark.parametrize("streaming", [True, False], ids=["sse", "whole"])
async def test_connections_are_reused(fault_server: FaultServer, streaming: bool) -> None:
    # One pooled client per adapter: sequential calls share one keep-alive connection.
    # A streamed answer is only over when its chunked body has been read to the end;
    # a client that stops at [DONE] and closes the response drops the connection.
    adapter = adapter_for(fault_server, streaming=streaming)
    for _ in range(3):
        assert (await complete(adapter, CHAT)).text == "Hello world"
    assert fault_server.connections_opened == 1
    assert [r.disconnected.is_set() for r in fault_server.completion_requests] == [False] * 3
    await adapter.aclose()


async def test_many_streams_at_once(fault_server: FaultServer) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server)
    results = await asyncio.gather(*(complete(adapter, PROMPT) for _ in range(20)))
    assert {r.text for r in results} == {"Hello world"}
    assert len(fault_server.completion_requests) == 20
    assert adapter.stats.requests == 20
    assert adapter.stats.ttft.count == 20
    await assert_clean(fault_server, adapter, before)


# ---- what the server receives ---------------------------------------------------------


async def test_chat_body_and_headers(fault_server: FaultServer) -> None:
    adapter = adapter_for(fault_server)
    request = make_request(
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        max_tokens=7,
        temperature=0.5,
        top_p=0.9,
        seed=11,
        stop=("\n\n",),
        extra_body={"top_k": 5, "repetition_penalty": 1.1},
    )
    await complete(adapter, request)
    req = only_request(fault_server)
    assert req.body == {
        "model": "m",
        "max_tokens": 7,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 11,
        "stop": ["\n\n"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "top_k": 5,
        "repetition_penalty": 1.1,
    }
    assert req.headers["content-type"] == "application/json"
    assert "authorization" not in req.headers
    assert "x-request-id" not in req.headers
    await adapter.aclose()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"messages": "hi"}, {}),
        ({"messages": "hi", "logprobs": True}, {"logprobs": True}),
        (
            {"messages": "hi", "logprobs": True, "top_logprobs": 3},
            {"logprobs": True, "top_logprobs": 3},
        ),
        ({"prompt": "hi"}, {}),
        ({"prompt": "hi", "logprobs": True}, {"logprobs": 0}),
        ({"prompt": "hi", "logprobs": True, "top_logprobs": 3}, {"logprobs": 3}),
    ],
    ids=["chat", "chat-lp", "chat-top3", "completion", "completion-lp", "completion-top3"],
)
async def test_logprobs_fields_per_endpoint_kind(
    fault_server: FaultServer, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    adapter = adapter_for(fault_server)
    await complete(adapter, make_request(**fields, max_tokens=5))
    body = only_request(fault_server).body
    assert {k: body[k] for k in ("logprobs", "top_logprobs") if k in body} == expected
    assert body["max_tokens"] == 5
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert ("prompt" in body) == ("prompt" in fields)
    await adapter.aclose()


async def test_priority_and_request_id_only_for_vllm(fault_server: FaultServer) -> None:
    request = make_request(messages="hi", max_tokens=5, priority=5, request_id="req-1")
    plain = adapter_for(fault_server)
    vllm = adapter_for(fault_server, vllm=True)
    await complete(plain, request)
    await complete(vllm, request)
    await complete(vllm, make_request(messages="hi", max_tokens=5))  # outside any step
    sent_plain, sent_vllm, sent_bare = fault_server.completion_requests
    assert "priority" not in sent_plain.body
    assert "request_id" not in sent_plain.body
    assert sent_vllm.body["priority"] == 5
    assert sent_vllm.body["request_id"] == "req-1"
    assert "priority" not in sent_bare.body
    assert "request_id" not in sent_bare.body
    # the header goes to every server
    assert sent_plain.headers["x-request-id"] == "req-1"
    assert sent_vllm.headers["x-request-id"] == "req-1"
    assert "x-request-id" not in sent_bare.headers
    await plain.aclose()
    await vllm.aclose()


async def test_priority_comes_from_the_running_step(fault_server: FaultServer) -> None:
    adapter = adapter_for(fault_server, vllm=True)
    seen: list[int] = []
    g = Graph("prio")

    @g.step(estimate=5.0)
    def slow() -> int:  # predicted long, so `ask` has slack and a priority above 0
        return 1

    @g.step(estimate=0.01)
    async def ask(ctx: StepContext) -> str:
        seen.append(ctx.priority)
        implicit = await complete(adapter, make_request(messages="hi", max_tokens=3))
        explicit = make_request(messages="hi", max_tokens=3, priority=-4)
        await complete(adapter, explicit)
        return implicit.text

    @g.step(estimate=0.01)
    def join(slow: int, ask: str) -> str:
        return ask * slow

    result = await g.run()
    assert result.output == "Hello world"
    implicit_req, explicit_req = fault_server.completion_requests
    assert seen[0] > 0
    assert implicit_req.body["priority"] == seen[0]
    assert explicit_req.body["priority"] == -4
    await adapter.aclose()


async def test_api_key_from_argument_is_sent_and_never_shown(
    fault_server: FaultServer,
) -> None:
    adapter = adapter_for(fault_server, api_key="sk-very-secret")
    await complete(adapter, CHAT)
    assert only_request(fault_server).headers["authorization"] == "Bearer sk-very-secret"
    assert await adapter.models() == ["m"]
    assert fault_server.requests[-1].headers["authorization"] == "Bearer sk-very-secret"
    assert "sk-very-secret" not in repr(adapter)
    assert "sk-very-secret" not in str(adapter)
    fault_server.push(status(401, {"error": {"message": "Invalid API key"}}))
    err = await failing(adapter, CHAT)
    assert "sk-very-secret" not in str(err)
    await adapter.aclose()


async def test_api_key_from_environment(
    fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRITPATH_TEST_KEY", "sk-from-env")
    adapter = adapter_for(fault_server, api_key_env="CRITPATH_TEST_KEY")
    assert "sk-from-env" not in repr(adapter)
    await complete(adapter, CHAT)
    assert only_request(fault_server).headers["authorization"] == "Bearer sk-from-env"
    await adapter.aclose()

    monkeypatch.delenv("CRITPATH_TEST_KEY")
    unset = adapter_for(fault_server, api_key_env="CRITPATH_TEST_KEY")
    await complete(unset, CHAT)
    assert "authorization" not in fault_server.completion_requests[-1].headers
    await unset.aclose()


@pytest.mark.parametrize(
    "fields",
    [
        {"messages": "hi", "prompt": "hi"},
        {},
        {"prompt": "hi", "max_tokens": 0},
        {"prompt": "hi", "temperature": 3.0},
        {"prompt": "hi", "top_logprobs": 2},
        {"prompt": "hi", "extra_body": {"stream": False}},
    ],
    ids=["both", "neither", "max_tokens", "temperature", "top_logprobs", "extra_body"],
)
async def test_invalid_requests_never_reach_the_server(
    fault_server: FaultServer, fields: dict[str, Any]
) -> None:
    adapter = adapter_for(fault_server, retry=NO_WAIT)
    with pytest.raises(InvalidRequestError):
        await complete(adapter, make_request(**fields))
    assert fault_server.requests == []
    assert fault_server.connections_opened == 0
    assert adapter.stats.requests == 0
    await adapter.aclose()


# ---- faults become typed errors -------------------------------------------------------

CONTEXT_MSG = (
    "This model's maximum context length is 2048 tokens. However, you requested "
    "4096 tokens (96 in the messages, 4000 in the completion)."
)

FAULTS: list[tuple[str, Scenario, type[ModelError], int | None, str | None]] = [
    ("garbage-sse-line", raw_sse(b"garbage line\n\n"), MalformedResponse, None, "garbage"),
    ("invalid-json", raw_sse(b"data: {not json\n\n"), MalformedResponse, None, "invalid JSON"),
    (
        "invalid-json-mid-stream",
        raw_sse(b"data: {not json\n\n", head_tokens=("Hel",)),
        MalformedResponse,
        None,
        "invalid JSON",
    ),
    ("no-choices", raw_sse(b'data: {"id": "x"}\n\n'), MalformedResponse, None, "choices"),
    (
        "ends-without-done-or-finish",
        ok(finish=None, done=False, usage=False),
        IncompleteStream,
        None,
        None,
    ),
    (
        "ends-and-closes-without-done-or-finish",
        ok(finish=None, done=False, usage=False, close=True),
        IncompleteStream,
        None,
        None,
    ),
    ("ends-before-any-token", raw_sse(), IncompleteStream, None, None),
    ("error-event", error_event(), ServerError, None, "engine died"),
    (
        "error-event-400",
        error_event({"message": "bad logits processor", "type": "BadRequestError", "code": 400}),
        BadRequest,
        400,
        "bad logits processor",
    ),
    (
        "400",
        status(400, {"error": {"message": "temperature must be sane", "type": "BadRequestError"}}),
        BadRequest,
        400,
        "temperature must be sane",
    ),
    (
        "400-context-length",
        status(400, {"object": "error", "message": CONTEXT_MSG, "type": "BadRequestError"}),
        ContextLengthExceeded,
        400,
        "maximum context length",
    ),
    ("401", status(401), AuthenticationError, 401, None),
    ("403", status(403, b"forbidden"), AuthenticationError, 403, "forbidden"),
    ("404", status(404, {"detail": "The model `m` does not exist."}), ModelNotFound, 404, "exist"),
    ("422", status(422, {"detail": [{"msg": "field required"}]}), BadRequest, 422, None),
    ("429", status(429, headers=[("Retry-After", "1.5")]), RateLimited, 429, None),
    ("500-json", status(500, {"error": {"message": "CUDA OOM"}}), ServerError, 500, "CUDA OOM"),
    ("503-text", status(503, "upstream overloaded"), ServerError, 503, "upstream overloaded"),
    ("502-empty", status(502, b""), ServerError, 502, "Bad Gateway"),
    (
        "500-empty-json-type",
        status(500, b"", content_type="application/json"),
        ServerError,
        500,
        None,
    ),
    ("408", status(408), ServerError, 408, None),
    ("reset-mid-stream", reset(), ModelConnectionError, None, None),
    ("fin-mid-stream", reset(rst=False), ModelConnectionError, None, None),
    ("reset-before-first-token", reset(after=()), ModelConnectionError, None, None),
]


@pytest.mark.parametrize(
    ("scenario", "expected", "code", "text"),
    [f[1:] for f in FAULTS],
    ids=[f[0] for f in FAULTS],
)
async def test_fault_becomes_typed_error(
    fault_server: FaultServer,
    scenario: Scenario,
    expected: type[ModelError],
    code: int | None,
    text: str | None,
) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server)
    fault_server.scenario = scenario
    err = await failing(adapter, CHAT)
    assert type(err) is expected, repr(err)
    assert err.model == "m"
    assert err.status == code
    if text is not None:
        assert text in str(err)
    assert is_retryable(err) is issubclass(
        expected, ModelConnectionError | IncompleteStream | ServerError | RateLimited
    )
    if isinstance(err, RateLimited):
        assert err.retry_after == 1.5
    assert len(fault_server.completion_requests) == 1
    assert dict(adapter.stats.errors) == {expected.__name__: 1}
    # A failed call records no end-to-end or per-token latency; its TTFT only if a
    # token arrived before the fault (TTFT is learned at the first token).
    assert adapter.stats.e2e.count == 0
    assert adapter.stats.tpot.count == 0
    assert adapter.stats.ttft.count <= 1
    await assert_clean(fault_server, adapter, before)


async def test_stream_ending_after_finish_reason_without_done_is_accepted(
    fault_server: FaultServer,
) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server)
    fault_server.push(ok(done=False), ok(done=False, usage=False, close=True))
    first = await complete(adapter, CHAT)
    assert (first.text, first.finish_reason, first.usage) == (
        "Hello world",
        "stop",
        Usage(PROMPT_TOKENS, 3),
    )
    second = await complete(adapter, PROMPT)
    assert (second.text, second.finish_reason, second.usage) == ("Hello world", "stop", None)
    assert not adapter.stats.errors
    await assert_clean(fault_server, adapter, before)


async def test_error_event_after_tokens_is_raised_to_the_reader(
    fault_server: FaultServer,
) -> None:
    adapter = adapter_for(fault_server, retry=NO_WAIT)
    fault_server.scenario = error_event(after=("Hel", "lo"))
    texts: list[str] = []
    with pytest.raises(ServerError, match="engine died"):
        await read_stream(adapter, CHAT, texts)
    assert "".join(texts) == "Hello"
    assert len(fault_server.completion_requests) == 1  # after a token: no retry
    await adapter.aclose()


async def test_malformed_non_streaming_bodies(fault_server: FaultServer) -> None:
    adapter = adapter_for(fault_server, streaming=False)
    for body in (b"not json", b"[1, 2]", b'{"choices": []}', b'{"choices": [{"message": 3}]}'):
        fault_server.push(status(200, body, content_type="application/json"))
        with pytest.raises(MalformedResponse):
            await complete(adapter, CHAT)
    assert adapter.stats.errors["MalformedResponse"] == 4
    await adapter.aclose()


# ---- retries --------------------------------------------------------------------------


async def test_retry_after_503_then_ok(fault_server: FaultServer) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server, retry=NO_WAIT)
    fault_server.push(status(503), ok())
    done = await complete(adapter, CHAT)
    assert done.text == "Hello world"
    assert len(fault_server.completion_requests) == 2
    assert adapter.stats.requests == 2
    assert dict(adapter.stats.errors) == {"ServerError": 1}
    assert adapter.stats.ttft.count == 1
    await assert_clean(fault_server, adapter, before)


@pytest.mark.parametrize(
    "fault",
    [status(429, headers=[("Retry-After", "0")]), reset(after=()), raw_sse(), stall_body(502)],
    ids=["429", "reset-before-first-token", "ends-before-any-token", "502-stalled-body"],
)
async def test_retryable_faults_before_the_first_token_are_retried(
    fault_server: FaultServer, fault: Scenario
) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server, retry=NO_WAIT)
    fault_server.push(fault, ok())
    done = await complete(adapter, PROMPT)
    assert done.text == "Hello world"
    assert len(fault_server.completion_requests) == 2
    await assert_clean(fault_server, adapter, before)


async def test_retries_stop_after_the_policys_attempts(fault_server: FaultServer) -> None:
    adapter = adapter_for(fault_server, retry=NO_WAIT)
    fault_server.scenario = status(500)
    err = await failing(adapter, CHAT)
    assert type(err) is ServerError
    assert len(fault_server.completion_requests) == 3
    assert adapter.stats.errors["ServerError"] == 3
    await adapter.aclose()


@pytest.mark.parametrize(
    "fault",
    [status(400), status(401), status(404), raw_sse(b"garbage\n\n")],
    ids=["400", "401", "404", "malformed"],
)
async def test_non_retryable_errors_are_not_retried(
    fault_server: FaultServer, fault: Scenario
) -> None:
    adapter = adapter_for(fault_server, retry=NO_WAIT)
    fault_server.push(fault, ok())
    err = await failing(adapter, CHAT)
    assert not is_retryable(err)
    assert len(fault_server.completion_requests) == 1
    await adapter.aclose()


@pytest.mark.parametrize(
    "fault_after_token",
    ["reset", "fin", "incomplete", "stall"],
)
async def test_failure_after_the_first_token_is_not_retried(
    fault_server: FaultServer, fault_after_token: str
) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server, retry=NO_WAIT)
    proceed = asyncio.Event()
    fault = {
        "reset": reset(after=("Hel",), proceed=proceed),
        "fin": reset(after=("Hel",), proceed=proceed, rst=False),
        "incomplete": ok(("Hel",), finish=None, done=False, usage=False),
        "stall": stall_after(("Hel",)),
    }[fault_after_token]
    fault_server.push(fault, ok())
    seen: list[str] = []
    with pytest.raises(ModelError) as info:
        # the server drops the connection only once the reader has seen a token
        await read_stream(adapter, CHAT, seen, on_token=proceed)
    assert is_retryable(info.value)  # retryable by type, but the reader has seen a token
    assert "".join(seen) == "Hel"
    assert len(fault_server.completion_requests) == 1
    await assert_clean(fault_server, adapter, before)


SLOW_RETRY = RetryPolicy(attempts=3, initial=1.0, maximum=1.0, jitter=0, retry_if=is_retryable)


async def test_no_retry_when_the_request_timeout_would_pass_during_back_off(
    fault_server: FaultServer,
) -> None:
    adapter = adapter_for(fault_server, retry=SLOW_RETRY)
    fault_server.push(status(503), ok())
    request = make_request(messages="hi", max_tokens=5, timeout=0.5)
    t0 = time.perf_counter()
    err = await failing(adapter, request)
    assert type(err) is ServerError  # the last error, not a timeout after sleeping
    assert time.perf_counter() - t0 < 0.9  # it did not sleep the 1 s back-off
    assert len(fault_server.completion_requests) == 1
    await adapter.aclose()


async def test_no_retry_when_the_deadline_scope_would_pass_during_back_off(
    fault_server: FaultServer,
) -> None:
    adapter = adapter_for(fault_server, retry=SLOW_RETRY)
    fault_server.push(status(503), ok())
    t0 = time.perf_counter()
    async with critpath.deadline(0.5):
        err = await failing(adapter, CHAT)
    assert type(err) is ServerError
    assert time.perf_counter() - t0 < 0.9
    assert len(fault_server.completion_requests) == 1
    await adapter.aclose()


async def test_back_off_that_fits_the_deadline_does_retry(fault_server: FaultServer) -> None:
    policy = RetryPolicy(attempts=2, initial=0.05, maximum=0.05, jitter=0, retry_if=is_retryable)
    adapter = adapter_for(fault_server, retry=policy)
    fault_server.push(status(503), ok())
    async with critpath.deadline(5.0):
        done = await complete(adapter, make_request(messages="hi", timeout=5.0))
    assert done.text == "Hello world"
    assert len(fault_server.completion_requests) == 2
    await adapter.aclose()


# ---- timeouts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stall",
    [stall_before_first_token(), stall_before_headers()],
    ids=["after-headers", "before-headers"],
)
async def test_stall_before_the_first_token_is_a_first_token_timeout(
    fault_server: FaultServer, stall: Scenario
) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server)
    fault_server.scenario = stall
    t0 = time.perf_counter()
    err = await failing(adapter, CHAT)
    elapsed = time.perf_counter() - t0
    assert type(err) is FirstTokenTimeout
    assert 0.25 <= elapsed < 0.3 + WITHIN
    req = only_request(fault_server)
    await asyncio.wait_for(req.disconnected.wait(), WITHIN)  # the client hung up
    assert dict(adapter.stats.errors) == {"FirstTokenTimeout": 1}
    await assert_clean(fault_server, adapter, before)


async def test_first_token_timeouts_are_retried_up_to_the_policy(
    fault_server: FaultServer,
) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server, retry=NO_WAIT)
    fault_server.scenario = stall_before_first_token()
    err = await failing(adapter, PROMPT)
    assert type(err) is FirstTokenTimeout
    reqs = fault_server.completion_requests
    assert len(reqs) == 3
    for req in reqs:  # every abandoned attempt was closed, not left running
        await asyncio.wait_for(req.disconnected.wait(), WITHIN)
    assert adapter.stats.errors["FirstTokenTimeout"] == 3
    await assert_clean(fault_server, adapter, before)


async def test_first_token_timeout_then_ok_on_retry(fault_server: FaultServer) -> None:
    adapter = adapter_for(fault_server, retry=NO_WAIT)
    fault_server.push(stall_before_first_token(), ok())
    assert (await complete(adapter, CHAT)).text == "Hello world"
    assert len(fault_server.completion_requests) == 2
    await adapter.aclose()


async def test_keep_alive_comments_do_not_feed_the_first_token_watchdog(
    fault_server: FaultServer,
) -> None:
    async def comments_forever(ex: Exchange) -> None:
        await ex.send_head(200)
        while True:
            await ex.send_chunk(b": keep-alive\n\n")
            await asyncio.sleep(0.05)

    adapter = adapter_for(fault_server)
    fault_server.scenario = comments_forever
    err = await failing(adapter, CHAT)
    assert type(err) is FirstTokenTimeout
    await adapter.aclose()


async def test_non_streaming_answer_that_never_comes_is_a_first_token_timeout(
    fault_server: FaultServer,
) -> None:
    # headers arrive, the JSON body never does: the watchdog must still map to a
    # typed, retryable ModelError, never leak a bare TimeoutError
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server, streaming=False)
    fault_server.scenario = stall_body(200)
    err = await failing(adapter, CHAT)
    assert type(err) is FirstTokenTimeout
    await assert_clean(fault_server, adapter, before)


async def test_error_status_whose_body_never_comes_is_a_typed_timeout(
    fault_server: FaultServer,
) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server)
    fault_server.scenario = stall_body(503)
    err = await failing(adapter, CHAT)
    assert isinstance(err, ModelTimeout)
    assert is_retryable(err)
    await assert_clean(fault_server, adapter, before)


async def test_stall_mid_stream_is_an_idle_timeout(fault_server: FaultServer) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server, timeouts=Timeouts(first_token=5.0, idle=0.3))
    fault_server.scenario = stall_after(("Hel", "lo"))
    seen: list[str] = []
    t0 = time.perf_counter()
    with pytest.raises(IdleTimeout):
        await read_stream(adapter, CHAT, seen)
    assert 0.25 <= time.perf_counter() - t0 < 0.3 + WITHIN
    assert "".join(seen) == "Hello"
    await asyncio.wait_for(only_request(fault_server).disconnected.wait(), WITHIN)
    assert dict(adapter.stats.errors) == {"IdleTimeout": 1}
    await assert_clean(fault_server, adapter, before)


async def test_slow_stream_within_the_idle_timeout_completes(fault_server: FaultServer) -> None:
    # gaps of 0.05 s against an idle timeout of 0.5 s; the whole stream takes longer
    # than the idle timeout, so the clock must restart with every chunk
    before = asyncio.all_tasks()
    tokens = tuple(f"t{i}" for i in range(13))
    adapter = adapter_for(fault_server, timeouts=Timeouts(first_token=0.5, idle=0.5))
    fault_server.scenario = ok(tokens, delay=0.05)
    t0 = time.perf_counter()
    done = await complete(adapter, PROMPT)
    assert time.perf_counter() - t0 > 0.5
    assert done.text == "".join(tokens)
    assert done.finish_reason == "stop"
    assert len(done.timings.gaps) == len(tokens) - 1
    assert adapter.stats.tpot.count == 1
    await assert_clean(fault_server, adapter, before)


@pytest.mark.parametrize(
    "stall", [stall_before_first_token(), stall_after()], ids=["before-token", "mid-stream"]
)
async def test_request_timeout_shorter_than_the_clocks_is_a_total_timeout(
    fault_server: FaultServer, stall: Scenario
) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server, timeouts=Timeouts(first_token=5.0, idle=5.0), retry=NO_WAIT)
    fault_server.scenario = stall
    t0 = time.perf_counter()
    err = await failing(adapter, make_request(messages="hi", timeout=0.3))
    assert type(err) is TotalTimeout
    assert not is_retryable(err)
    assert 0.25 <= time.perf_counter() - t0 < 0.3 + WITHIN
    assert len(fault_server.completion_requests) == 1
    await asyncio.wait_for(only_request(fault_server).disconnected.wait(), WITHIN)
    await assert_clean(fault_server, adapter, before)


async def test_timeouts_total_is_a_total_timeout(fault_server: FaultServer) -> None:
    adapter = adapter_for(fault_server, timeouts=Timeouts(first_token=5.0, idle=5.0, total=0.3))
    fault_server.scenario = stall_after()
    err = await failing(adapter, CHAT)
    assert type(err) is TotalTimeout
    await adapter.aclose()


async def test_deadline_scope_shorter_than_the_clocks_is_a_total_timeout(
    fault_server: FaultServer,
) -> None:
    # TotalTimeout is "the call's total budget, or the deadline in force, ran out"; it
    # is a TimeoutError, so it also honours the scope's "raises TimeoutError" contract.
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server, timeouts=Timeouts(first_token=5.0, idle=5.0))
    fault_server.scenario = stall_before_first_token()
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError) as info:
        async with critpath.deadline(0.3):
            await complete(adapter, CHAT)
    assert time.perf_counter() - t0 < 0.3 + WITHIN
    await asyncio.wait_for(only_request(fault_server).disconnected.wait(), WITHIN)
    await assert_clean(fault_server, adapter, before)
    assert type(info.value) is TotalTimeout, repr(info.value)
    assert dict(adapter.stats.errors) == {"TotalTimeout": 1}


async def test_connecting_to_a_closed_port_fails_fast() -> None:
    before = asyncio.all_tasks()
    port = free_port()
    adapter = OpenAICompatible(f"http://127.0.0.1:{port}/v1", "m", retry=None, timeouts=FAST)
    t0 = time.perf_counter()
    with pytest.raises(ModelConnectionError) as info:
        await complete(adapter, CHAT)
    assert time.perf_counter() - t0 < WITHIN
    assert is_retryable(info.value)
    assert dict(adapter.stats.errors) == {"ModelConnectionError": 1}
    assert adapter.stats.in_flight == 0
    retrying = OpenAICompatible(f"http://127.0.0.1:{port}/v1", "m", retry=NO_WAIT, timeouts=FAST)
    with pytest.raises(ModelConnectionError):
        await complete(retrying, CHAT)
    assert retrying.stats.requests == 3
    me = asyncio.current_task()
    assert {t for t in asyncio.all_tasks() - before if not t.done() and t is not me} == set()
    await adapter.aclose()
    await retrying.aclose()


@pytest.mark.skipif(sys.platform != "linux", reason="needs Linux: SYNs to a full backlog dropped")
async def test_server_that_does_not_accept_is_a_connect_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]  # fill the accept queue: SYNs get dropped
    for f in fillers:
        f.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            f.connect(("127.0.0.1", port))
    adapter = OpenAICompatible(
        f"http://127.0.0.1:{port}/v1", "m", retry=None, timeouts=Timeouts(connect=0.3)
    )
    try:
        t0 = time.perf_counter()
        err = await failing(adapter, CHAT)
        assert type(err) is ConnectTimeout
        assert is_retryable(err)
        assert 0.25 <= time.perf_counter() - t0 < 0.3 + WITHIN
        assert dict(adapter.stats.errors) == {"ConnectTimeout": 1}
        assert adapter.stats.in_flight == 0
    finally:
        await adapter.aclose()
        for f in fillers:
            f.close()
        listener.close()


# ---- cancellation closes the connection -----------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "wait_token"),
    [
        (stall_before_headers(), False),
        (stall_before_first_token(), False),
        (stall_after(("Hel", "lo")), True),
        (ok(tuple(f"t{i}" for i in range(200)), delay=0.02), True),
    ],
    ids=["before-headers", "before-first-token", "mid-stream", "slow-stream"],
)
@pytest.mark.parametrize("retry", [None, NO_WAIT], ids=["no-retry", "retry"])
async def test_cancelling_the_reader_closes_the_http_connection(
    fault_server: FaultServer, scenario: Scenario, wait_token: bool, retry: RetryPolicy | None
) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server, retry=retry, timeouts=Timeouts(first_token=30, idle=30))
    fault_server.scenario = scenario
    first_token = asyncio.Event()
    task = asyncio.create_task(read_stream(adapter, CHAT, [], on_token=first_token))
    await fault_server.wait_until(lambda: len(fault_server.completion_requests) == 1)
    if wait_token:
        await asyncio.wait_for(first_token.wait(), WITHIN)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    req = only_request(fault_server)
    # the server saw the client hang up, before the pool was closed
    await asyncio.wait_for(req.disconnected.wait(), WITHIN)
    await asyncio.wait_for(req.finished.wait(), WITHIN)
    assert fault_server.open_connections == 0
    assert len(fault_server.completion_requests) == 1  # cancellation is never retried
    assert adapter.stats.in_flight == 0
    assert not adapter.stats.errors  # a cancellation is not an endpoint error
    await assert_clean(fault_server, adapter, before)


async def test_closing_the_stream_early_closes_the_http_connection(
    fault_server: FaultServer,
) -> None:
    before = asyncio.all_tasks()
    adapter = adapter_for(fault_server)
    fault_server.scenario = ok(tuple(f"t{i}" for i in range(200)), delay=0.02)
    async with contextlib.aclosing(adapter.stream(CHAT)) as stream:
        async for chunk in stream:
            if chunk.text:
                break
    await asyncio.wait_for(only_request(fault_server).disconnected.wait(), WITHIN)
    assert adapter.stats.in_flight == 0
    await assert_clean(fault_server, adapter, before)


async def test_cancelling_a_graph_run_closes_its_model_stream(fault_server: FaultServer) -> None:
    adapter = adapter_for(fault_server, timeouts=Timeouts(first_token=30, idle=30))
    fault_server.scenario = stall_after(("Hel",))
    g = Graph("cancel")

    @g.step
    async def ask() -> str:
        return (await complete(adapter, CHAT)).text

    run = g.start()
    await fault_server.wait_until(lambda: len(fault_server.completion_requests) == 1)
    run.cancel()
    with pytest.raises(critpath.RunCancelled):
        await run
    await asyncio.wait_for(only_request(fault_server).disconnected.wait(), WITHIN)
    await adapter.aclose()


# ---- nothing is left to the event loop ----------------------------------------------


def watch_async_generators() -> list[str]:
    """From now on (in this event-loop run), record every async generator of critpath's
    that is garbage-collected unclosed, which the loop then closes in a task of its own.

    httpx's own nested byte iterators are not counted: closing the outer one (which
    critpath does) cannot close the ones inside it, and ``Response.aclose`` has already
    closed the connection under them by the time the loop finalizes them.
    """
    hooks = sys.get_asyncgen_hooks()
    orphans: list[str] = []
    package = str(Path(critpath.__file__).parent)

    def finalizer(agen: Any) -> None:
        if agen.ag_code.co_filename.startswith(package):
            orphans.append(agen.ag_code.co_qualname)
        if hooks.finalizer is not None:
            hooks.finalizer(agen)

    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
    return orphans  # the loop restores its own hooks when this run ends


async def _read_first_token_then_close(adapter: OpenAICompatible) -> None:
    async with contextlib.aclosing(adapter.stream(CHAT)) as stream:
        async for chunk in stream:
            if chunk.text:
                break


async def _read_to_end(adapter: OpenAICompatible) -> None:
    await complete(adapter, CHAT)


@pytest.mark.parametrize(
    ("scenario", "read"),
    [
        (ok(), _read_to_end),
        (ok(tuple(f"t{i}" for i in range(50)), delay=0.01), _read_first_token_then_close),
    ],
    ids=["whole-stream", "closed-after-first-token"],
)
async def test_no_async_generator_is_left_to_the_loop(
    fault_server: FaultServer, scenario: Scenario, read: Any
) -> None:
    # Structured concurrency: nothing is fire-and-forget. An async generator dropped
    # unclosed is closed later by the event loop in a task that no one owns.
    adapter = adapter_for(fault_server)
    fault_server.scenario = scenario
    orphans = watch_async_generators()
    await read(adapter)
    gc.collect()
    await adapter.aclose()
    assert orphans == []


# ---- load and discovery ---------------------------------------------------------------

METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
"""


async def test_load_reads_metrics(fault_server: FaultServer) -> None:
    adapter = adapter_for(fault_server)
    fault_server.metrics_text = METRICS
    assert await adapter.load() == ServerLoad(running=3.0, waiting=2.0, kv_cache_usage=0.25)
    assert fault_server.requests[-1].path == "/metrics"  # at the root, not under /v1
    fault_server.metrics_text = "process_start_time_seconds 1\n"
    assert await adapter.load() is None
    fault_server.metrics_text = None  # 404
    assert await adapter.load() is None
    fault_server.metrics_text = "vllm:num_requests_running{oops 3\n"
    with pytest.raises(MalformedResponse):
        await adapter.load()
    await adapter.aclose()


async def test_models_lists_ids(fault_server: FaultServer) -> None:
    adapter = adapter_for(fault_server)
    fault_server.models_body = b'{"object": "list", "data": [{"id": "a"}, {"id": "b"}]}'
    assert await adapter.models() == ["a", "b"]
    assert fault_server.requests[-1].path == "/v1/models"
    await adapter.aclose()


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"object": "list"}', b'{"data": 5}', b'{"data": [{"name": "a"}]}'],
)
async def test_models_malformed_body(fault_server: FaultServer, body: bytes) -> None:
    adapter = adapter_for(fault_server)
    fault_server.models_body = body
    with pytest.raises(MalformedResponse):
        await adapter.models()
    await adapter.aclose()


async def test_load_and_models_on_a_closed_port() -> None:
    adapter = OpenAICompatible(f"http://127.0.0.1:{free_port()}/v1", "m")
    with pytest.raises(ModelConnectionError):
        await adapter.load()
    with pytest.raises(ModelConnectionError):
        await adapter.models()
    await adapter.aclose()


async def test_fault_server_counts_connections(fault_server: FaultServer) -> None:
    # the instrument the other tests rely on: it must see open and closed connections
    adapter = adapter_for(fault_server, streaming=False)  # a whole answer keeps it open
    await complete(adapter, CHAT)
    assert fault_server.open_connections == 1
    req = only_request(fault_server)
    assert not req.disconnected.is_set()
    await adapter.aclose()
    await fault_server.wait_until(lambda: fault_server.open_connections == 0, within=WITHIN)
    await asyncio.wait_for(req.disconnected.wait(), WITHIN)


# ---- logging --------------------------------------------------------------------------

HTTP_LOG = "critpath.adapters.openai_http"
TAGGED = make_request(messages="hi", max_tokens=5, request_id="r-7")


def logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == HTTP_LOG]


async def test_a_retry_is_logged_with_its_attempt_error_and_wait(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    policy = RetryPolicy(attempts=3, initial=0.02, maximum=0.02, jitter=0, retry_if=is_retryable)
    adapter = adapter_for(fault_server, retry=policy)
    fault_server.push(status(503), ok())
    with caplog.at_level("INFO", logger=HTTP_LOG):
        assert (await complete(adapter, TAGGED)).text == "Hello world"
    (record,) = logged(caplog)
    assert record.levelname == "INFO"
    message = record.getMessage()
    assert message.startswith("retrying m (request r-7): attempt 2 after ServerError: ")
    waited = float(message.rsplit("waited ", 1)[1].rstrip("s"))
    assert waited >= 0.02 - 1e-3  # the back-off the policy asked for, measured
    await adapter.aclose()


async def test_giving_up_after_retries_is_logged(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = adapter_for(fault_server, retry=NO_WAIT)
    fault_server.scenario = status(500)
    with caplog.at_level("INFO", logger=HTTP_LOG):
        await failing(adapter, TAGGED)
    messages = [r.getMessage() for r in logged(caplog)]
    assert [m.split(":")[0] for m in messages] == [
        "retrying m (request r-7)",
        "retrying m (request r-7)",
        "giving up on m (request r-7) after 3 attempts",
    ]
    assert "attempt 3 after ServerError" in messages[1]
    await adapter.aclose()


async def test_a_cancelled_or_closed_stream_is_logged_as_aborted(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = adapter_for(fault_server, timeouts=Timeouts(first_token=30, idle=30))
    fault_server.scenario = stall_after(("Hel", "lo"))
    first_token = asyncio.Event()
    with caplog.at_level("DEBUG", logger=HTTP_LOG):
        task = asyncio.create_task(read_stream(adapter, TAGGED, [], on_token=first_token))
        await asyncio.wait_for(first_token.wait(), WITHIN)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with contextlib.aclosing(adapter.stream(TAGGED)) as stream:
            async for chunk in stream:
                if chunk.text:
                    break
        fault_server.scenario = ok()
        await complete(adapter, TAGGED)  # read to its end: nothing logged
    messages = [r.getMessage() for r in logged(caplog)]
    assert messages == [
        "m: request r-7 cancelled before its end: its HTTP stream is closed, the server aborts it",
        "m: request r-7 closed by its reader before its end: its HTTP stream is closed, "
        "the server aborts it",
    ]
    assert {r.levelname for r in logged(caplog)} == {"DEBUG"}
    await adapter.aclose()


async def test_the_api_key_never_appears_in_a_log_record(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-never-logged-42"
    adapter = adapter_for(fault_server, api_key=secret, retry=NO_WAIT)
    fault_server.push(status(503), reset(after=()), ok(), stall_after(("Hel",)))
    with caplog.at_level("DEBUG"):  # every logger: critpath's, httpx's, httpcore's
        await complete(adapter, TAGGED)  # two retries, then an answer
        first_token = asyncio.Event()
        task = asyncio.create_task(read_stream(adapter, TAGGED, [], on_token=first_token))
        await asyncio.wait_for(first_token.wait(), WITHIN)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        fault_server.push(status(401, {"error": {"message": "Invalid API key"}}))
        await failing(adapter, TAGGED)
        await adapter.models()
    assert len(logged(caplog)) == 3  # the two retries and the cancellation were logged
    for record in caplog.records:
        assert secret not in record.getMessage()
        assert secret not in repr(record.args)
        assert secret not in (record.exc_text or "")
    assert secret not in caplog.text
    await adapter.aclose()
