"""``OpenAICompatible`` against a hostile or broken server: every answer that is not what
the API promises becomes a typed ``critpath`` error; sizes are bounded; secrets never
leave the adapter; a server asking to come back much later gets no wait.

All against ``tests/fault_server.py`` over real loopback sockets.
"""

from __future__ import annotations

import asyncio
import functools
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from fault_server import (
    FaultServer,
    big_body,
    echo_auth,
    encoded,
    ok,
    raw_sse,
    status,
)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from critpath import Graph, RetryPolicy, StepFailedError
from critpath.adapters import OpenAICompatible, ResponseLimits, Timeouts, complete, make_request
from critpath.adapters.openai_wire import parse_chat_chunk
from critpath.adapters.redact import Redactor, redacted_url
from critpath.errors import (
    AuthenticationError,
    CritpathError,
    FirstTokenTimeout,
    MalformedResponse,
    ModelConnectionError,
    ModelError,
    RateLimited,
    ServerError,
    is_retryable,
)

FAST = Timeouts(connect=2.0, first_token=0.3, idle=0.3, total=20.0)
CHAT = make_request(messages="hi", max_tokens=5)
KEY = "sk-hostile-0123456789abcdef"
DEEP = b"[" * 100_000 + b"]" * 100_000


def adapter_for(server: FaultServer, **options: Any) -> OpenAICompatible:
    options.setdefault("retry", None)
    options.setdefault("timeouts", FAST)
    return OpenAICompatible(server.base_url, server.model, **options)


async def failing(adapter: OpenAICompatible, request: Any = CHAT) -> ModelError:
    try:
        await complete(adapter, request)
    except ModelError as exc:
        return exc
    except Exception as exc:
        pytest.fail(f"expected a critpath ModelError, got {type(exc).__name__}: {exc!r}")
    pytest.fail("expected a critpath ModelError, the call succeeded")


def event(choice: dict[str, Any] | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"choices": [choice] if choice is not None else [], **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


# ---- malformed values: MalformedResponse, never a plain Python error -----------------

MALFORMED_EVENTS = {
    "content-number": event({"delta": {"content": 5}}),
    "content-object": event({"delta": {"content": {"a": 1}}}),
    "finish-reason-number": event({"delta": {"content": "x"}, "finish_reason": 7}),
    "usage-overflow": b'data: {"choices": [], "usage": {"prompt_tokens": 1e999, '
    b'"completion_tokens": 1}}\n\n',
    "usage-negative": event(usage={"prompt_tokens": 3, "completion_tokens": -2}),
    "usage-bool": event(usage={"prompt_tokens": True, "completion_tokens": 1}),
    "usage-fraction": event(usage={"prompt_tokens": 1.5, "completion_tokens": 1}),
    "logprob-400-digits": b'data: {"choices": [{"delta": {"content": "x"}, "logprobs": '
    b'{"content": [{"token": "x", "logprob": -' + b"9" * 400 + b"}]}}]}\n\n",
    "logprob-string": event(
        {"delta": {"content": "x"}, "logprobs": {"content": [{"token": "x", "logprob": "a"}]}}
    ),
    "nested-event": b"data: " + DEEP + b"\n\n",
    "nested-in-choice": b'data: {"choices": [' + DEEP + b"]}\n\n",
}


@pytest.mark.parametrize("body", MALFORMED_EVENTS.values(), ids=MALFORMED_EVENTS.keys())
async def test_malformed_stream_values_are_malformed_response(
    fault_server: FaultServer, body: bytes
) -> None:
    adapter = adapter_for(fault_server)
    fault_server.scenario = raw_sse(body, b"data: [DONE]\n\n")
    err = await failing(adapter, make_request(messages="hi", logprobs=True))
    assert type(err) is MalformedResponse, repr(err)
    assert not is_retryable(err)
    await adapter.aclose()


WHOLE_CHOICE = {"message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}
MALFORMED_BODIES = {
    "content-number": {"choices": [{"message": {"content": 12}}]},
    "finish-reason-number": {"choices": [{"message": {"content": "x"}, "finish_reason": 7}]},
    "usage-negative": {
        "choices": [WHOLE_CHOICE],
        "usage": {"prompt_tokens": -1, "completion_tokens": 1},
    },
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
async def test_malformed_whole_bodies_are_malformed_response(
    fault_server: FaultServer, body: dict[str, Any]
) -> None:
    adapter = adapter_for(fault_server, streaming=False)
    fault_server.scenario = status(200, body)
    assert type(await failing(adapter)) is MalformedResponse
    await adapter.aclose()


@pytest.mark.parametrize(
    "raw",
    [DEEP, b'{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 1e999, '
     b'"completion_tokens": 1}}'],
    ids=["nested", "usage-overflow"],
)  # fmt: skip
async def test_hostile_whole_bodies_are_malformed_response(
    fault_server: FaultServer, raw: bytes
) -> None:
    adapter = adapter_for(fault_server, streaming=False)
    fault_server.scenario = status(200, raw, content_type="application/json")
    assert type(await failing(adapter)) is MalformedResponse
    await adapter.aclose()


@pytest.mark.parametrize("code", [400, 500])
async def test_deeply_nested_error_body_keeps_its_typed_status(
    fault_server: FaultServer, code: int
) -> None:
    """An error status whose body is hostile is still that status (a 500 is retryable)."""
    adapter = adapter_for(fault_server)
    fault_server.scenario = status(code, DEEP, content_type="application/json")
    err = await failing(adapter)
    assert err.status == code
    assert isinstance(err, ServerError if code == 500 else CritpathError)
    nested = {"error": {"message": json.loads(b"[" * 500 + b"]" * 500)}}
    fault_server.scenario = status(code, nested)
    assert (await failing(adapter)).status == code
    await adapter.aclose()


def test_wire_parsing_refuses_wrong_types_without_a_server() -> None:
    with pytest.raises(MalformedResponse):
        parse_chat_chunk({"choices": [{"delta": {"content": ["a"]}}]}, "m")
    ok_chunk = parse_chat_chunk({"choices": [{"delta": {"content": None}}]}, "m")
    assert ok_chunk is None  # no text, no finish: nothing to report


# ---- line endings ----------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\r", b"\r\n", b"\n"], ids=["cr", "crlf", "lf"])
async def test_every_sse_line_ending_is_accepted(fault_server: FaultServer, eol: bytes) -> None:
    adapter = adapter_for(fault_server)
    events = [
        {"choices": [{"delta": {"content": "Hel"}}]},
        {"choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}]},
    ]
    body = b"".join(b"data: " + json.dumps(e).encode() + eol + eol for e in events)
    fault_server.scenario = raw_sse(body + b"data: [DONE]" + eol + eol)
    done = await complete(adapter, CHAT)
    assert (done.text, done.finish_reason) == ("Hello", "stop")
    await adapter.aclose()


# ---- sizes -----------------------------------------------------------------------------


async def test_a_line_that_never_ends_is_refused_at_the_line_limit(
    fault_server: FaultServer,
) -> None:
    limits = ResponseLimits(max_line=64 * 1024)
    adapter = adapter_for(fault_server, limits=limits)
    total = 64 * 65536  # 4 MiB with no newline
    fault_server.scenario = raw_sse(b"data: ", *([b"x" * 65536] * 64))
    err = await failing(adapter)
    assert type(err) is MalformedResponse
    assert "longer than 65536 bytes" in str(err)
    await fault_server.wait_until(lambda: fault_server.open_connections == 0)
    assert fault_server.bytes_written < total  # the client stopped reading and hung up
    await adapter.aclose()


async def test_an_endless_event_is_refused_at_the_event_limit(fault_server: FaultServer) -> None:
    adapter = adapter_for(fault_server, limits=ResponseLimits(max_event=100_000))
    fault_server.scenario = raw_sse(*([b"data: " + b"y" * 1000 + b"\n"] * 200))
    err = await failing(adapter)
    assert type(err) is MalformedResponse
    assert "larger than 100000 bytes" in str(err)
    await adapter.aclose()


async def test_a_huge_error_body_is_read_only_up_to_the_limit(fault_server: FaultServer) -> None:
    adapter = adapter_for(fault_server, limits=ResponseLimits(max_error_body=4096))
    size = 256 << 20  # 256 MiB promised
    fault_server.scenario = big_body(500, size)
    err = await failing(adapter)
    assert type(err) is ServerError
    assert err.status == 500
    assert len(str(err)) < 1000
    await fault_server.wait_until(lambda: fault_server.open_connections == 0)
    assert fault_server.bytes_written < size // 4
    await adapter.aclose()


async def test_a_whole_answer_past_the_body_limit_is_malformed(fault_server: FaultServer) -> None:
    adapter = adapter_for(fault_server, streaming=False, limits=ResponseLimits(max_body=100_000))
    fault_server.scenario = big_body(200, 10 << 20, content_type="application/json")
    err = await failing(adapter)
    assert type(err) is MalformedResponse
    assert "larger than 100000 bytes" in str(err)
    await adapter.aclose()


BOMB_PIECE = (b":" + b"k" * 1022 + b"\n") * 1024  # 1 MiB of SSE comments (keep-alives)


@functools.cache
def gzip_of(pieces: int, piece: bytes) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    out = [z.compress(piece) for _ in range(pieces)]
    out.append(z.flush())
    return b"".join(out)


async def test_a_gzip_bomb_does_not_freeze_the_loop_the_first_token_timer_fires(
    fault_server: FaultServer,
) -> None:
    """128 MiB of keep-alive comments, ~0.1 MB on the wire, sent at once: no token ever
    comes, so the first-token watchdog must fire while the body is being inflated. The
    loop keeps turning meanwhile: a ticker task gets many turns (a body inflated in one
    go, as before, left it a turn per network read)."""
    bomb = gzip_of(128, BOMB_PIECE)
    assert len(bomb) < 1 << 20
    adapter = adapter_for(fault_server)
    fault_server.scenario = encoded(bomb, "gzip", piece=len(bomb))
    ticks = 0
    call = asyncio.ensure_future(failing(adapter))
    while not call.done():
        ticks += 1
        await asyncio.sleep(0)
    err = call.result()
    assert type(err) is FirstTokenTimeout, repr(err)
    assert ticks > 50, ticks
    await adapter.aclose()


async def test_a_gzip_bomb_stops_at_the_stream_limit(fault_server: FaultServer) -> None:
    bomb = gzip_of(128, BOMB_PIECE)
    slow = Timeouts(connect=2.0, first_token=30.0, idle=30.0, total=60.0)
    adapter = adapter_for(fault_server, limits=ResponseLimits(max_stream=1 << 20), timeouts=slow)
    fault_server.scenario = encoded(bomb, "gzip")
    err = await failing(adapter)
    assert type(err) is MalformedResponse
    assert "stream larger than" in str(err)
    whole = adapter_for(fault_server, streaming=False, limits=ResponseLimits(max_body=1 << 20))
    fault_server.scenario = encoded(gzip_of(128, BOMB_PIECE), "gzip",
                                    content_type="application/json")  # fmt: skip
    err = await failing(whole)
    assert type(err) is MalformedResponse
    assert "larger than 1048576 bytes" in str(err)
    await adapter.aclose()
    await whole.aclose()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_answers_are_decoded(fault_server: FaultServer, encoding: str) -> None:
    adapter = adapter_for(fault_server)
    sse = b"".join(
        b"data: " + json.dumps(e).encode() + b"\n\n"
        for e in (
            {"choices": [{"delta": {"content": "Hi"}, "finish_reason": "stop"}]},
        )
    ) + b"data: [DONE]\n\n"  # fmt: skip
    body = gzip_of(1, sse) if encoding == "gzip" else zlib.compress(sse)
    fault_server.scenario = encoded(body, encoding)
    assert (await complete(adapter, CHAT)).text == "Hi"
    fault_server.scenario = encoded(b"not compressed at all", "gzip")
    assert type(await failing(adapter)) is MalformedResponse
    fault_server.scenario = encoded(sse, "br")
    assert type(await failing(adapter)) is MalformedResponse
    await adapter.aclose()


# ---- secrets -----------------------------------------------------------------------------

_EXPORTER: InMemorySpanExporter | None = None


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    global _EXPORTER
    if _EXPORTER is None:
        exp = InMemorySpanExporter()
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            trace.set_tracer_provider(TracerProvider())
            provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        provider.add_span_processor(SimpleSpanProcessor(exp))
        _EXPORTER = exp
    return _EXPORTER


def leaks(text: str) -> bool:
    return KEY in text or "hunter2" in text


async def test_an_echoed_api_key_never_leaves_the_adapter(
    fault_server: FaultServer, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    adapter = adapter_for(fault_server, api_key=KEY)
    fault_server.scenario = echo_auth(401)
    err = await failing(adapter)
    assert isinstance(err, AuthenticationError)
    assert "Incorrect API key provided" in str(err)
    assert not leaks(str(err))
    assert not leaks(repr(err.args))

    g = Graph("leak")

    @g.step
    async def ask() -> str:
        return (await complete(adapter, CHAT)).text

    with pytest.raises(StepFailedError) as failed:
        await g.run(run_id="leak-run")
    assert not leaks(str(failed.value))
    report = failed.value.report
    assert report is not None
    for saved in (report.save_json(tmp_path / "r.json"), report.save_html(tmp_path / "r.html")):
        assert not leaks(saved.read_text())
    for span in exporter.get_finished_spans():
        assert not leaks(str(span.status.description or ""))
        assert not any(leaks(str(v)) for v in (span.attributes or {}).values())
    await adapter.aclose()


async def test_credentials_in_the_base_url_are_never_shown(
    fault_server: FaultServer, exporter: InMemorySpanExporter
) -> None:
    url = f"http://user:hunter2@127.0.0.1:{fault_server.port}/v1"
    adapter = OpenAICompatible(url, "m", retry=None, timeouts=FAST)
    assert not leaks(repr(adapter))
    assert not leaks(adapter.base_url)
    fault_server.scenario = echo_auth(403)
    err = await failing(adapter)
    assert err.status == 403
    assert not leaks(str(err))
    # the credentials were sent (HTTP basic auth), just never shown
    assert fault_server.completion_requests[-1].headers["authorization"].startswith("Basic ")
    exporter.clear()
    fault_server.scenario = ok()
    await complete(adapter, CHAT)
    endpoints = [str((s.attributes or {}).get("critpath.endpoint")) for s in
                 exporter.get_finished_spans()]  # fmt: skip
    assert endpoints
    assert not any(leaks(e) for e in endpoints)
    await adapter.aclose()

    closed = OpenAICompatible("http://user:hunter2@127.0.0.1:1/v1", "m", retry=None, timeouts=FAST)
    err = await failing(closed)
    assert isinstance(err, ModelConnectionError)
    assert not leaks(str(err))
    cause = err.__cause__
    while cause is not None:
        assert not leaks(str(cause))
        cause = cause.__cause__ or cause.__context__
    await closed.aclose()


def test_redactor_masks_secrets_in_text_and_chained_exceptions() -> None:
    shown, found = redacted_url("https://me:s3cret@h/v1?api-key=abc123&x=1")
    assert "s3cret" not in shown
    assert "abc123" not in shown
    assert "x=1" in shown
    r = Redactor.for_request("https://me:s3cret@h/v1", {"Authorization": "Bearer tok-xyz"})
    inner = ValueError("sent tok-xyz")
    outer = RuntimeError("with Bearer tok-xyz and s3cret")
    outer.__cause__ = inner
    outer.add_note("note tok-xyz")
    r.exception(outer)
    assert "tok-xyz" not in str(outer)
    assert "s3cret" not in str(outer)
    assert "tok-xyz" not in str(inner)
    assert outer.__notes__ == ["note ***"]
    assert "abc123" in found


# ---- Retry-After ------------------------------------------------------------------------


async def test_retry_after_past_the_policys_maximum_fails_fast(fault_server: FaultServer) -> None:
    policy = RetryPolicy(attempts=3, initial=0, maximum=2.0, jitter=0, retry_if=is_retryable)
    adapter = adapter_for(fault_server, retry=policy)
    fault_server.push(status(429, headers=[("Retry-After", "100000")]), ok())
    err = await asyncio.wait_for(failing(adapter), 5.0)
    assert isinstance(err, RateLimited)
    assert err.retry_after == 100000
    assert len(fault_server.completion_requests) == 1  # no wait, no second try
    fault_server.push(status(429, headers=[("Retry-After", "0.01")]), ok())
    assert (await complete(adapter, CHAT)).text == "Hello world"  # within the maximum
    await adapter.aclose()


async def test_retry_after_past_the_request_timeout_fails_fast(fault_server: FaultServer) -> None:
    policy = RetryPolicy(attempts=3, initial=0, maximum=60.0, jitter=0, retry_if=is_retryable)
    adapter = adapter_for(fault_server, retry=policy)
    fault_server.push(status(429, headers=[("Retry-After", "30")]), ok())
    err = await asyncio.wait_for(failing(adapter, make_request(messages="hi", timeout=2.0)), 5.0)
    assert isinstance(err, RateLimited)
    assert len(fault_server.completion_requests) == 1
    fault_server.scenarios.clear()
    fault_server.scenario = status(429, headers=[("Retry-After", "nan")])
    err = await failing(adapter)
    assert isinstance(err, RateLimited)
    assert err.retry_after is None
    await adapter.aclose()


# ---- a benchmark counts failed requests instead of stopping -------------------------


async def test_the_adapter_benchmark_counts_failures_instead_of_crashing() -> None:
    from collections import Counter

    from critpath.bench.adapter import _batch

    calls = 0

    async def flaky() -> tuple[float, float, int]:
        nonlocal calls
        calls += 1
        if calls % 3 == 0:
            raise ServerError("busy", model="m")
        return 1.0, 0.5, 3

    failed: Counter[str] = Counter()
    _, results = await _batch(flaky, 9, 3, failed)
    assert len(results) == 6
    assert failed == {"ServerError": 3}
