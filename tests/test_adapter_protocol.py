"""The pure parts of the adapters: request validation, SSE decoding, Prometheus
metrics, timings, configuration and the retryability of model errors. No network."""

from __future__ import annotations

import math
from typing import Any

import pytest

from critpath.adapters import (
    Message,
    OpenAICompatible,
    ServerLoad,
    SSEDecoder,
    Timeouts,
    Timings,
    make_request,
    parse_metrics,
    server_load,
)
from critpath.errors import (
    AuthenticationError,
    BadRequest,
    ConfigError,
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

# ---- request validation ---------------------------------------------------------------

INVALID_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("both messages and prompt", {"messages": "hi", "prompt": "hi"}),
    ("neither messages nor prompt", {"max_tokens": 5}),
    ("empty messages", {"messages": ()}),
    ("max_tokens 0", {"prompt": "hi", "max_tokens": 0}),
    ("max_tokens negative", {"prompt": "hi", "max_tokens": -3}),
    ("temperature below 0", {"prompt": "hi", "temperature": -0.1}),
    ("temperature above 2", {"prompt": "hi", "temperature": 2.5}),
    ("top_p 0", {"prompt": "hi", "top_p": 0.0}),
    ("top_p above 1", {"prompt": "hi", "top_p": 1.5}),
    ("top_logprobs without logprobs", {"prompt": "hi", "top_logprobs": 2}),
    ("top_logprobs above 20", {"prompt": "hi", "logprobs": True, "top_logprobs": 21}),
    ("empty stop string", {"prompt": "hi", "stop": ("",)}),
    ("timeout 0", {"prompt": "hi", "timeout": 0.0}),
    ("empty request_id", {"prompt": "hi", "request_id": ""}),
    ("extra_body sets model", {"prompt": "hi", "extra_body": {"model": "other"}}),
    ("extra_body sets stream", {"prompt": "hi", "extra_body": {"stream": False}}),
    ("extra_body sets messages", {"prompt": "hi", "extra_body": {"messages": []}}),
    ("extra_body sets prompt", {"messages": "hi", "extra_body": {"prompt": "x"}}),
    ("unknown field", {"prompt": "hi", "max_new_tokens": 5}),
    ("bad role", {"messages": [{"role": "robot", "content": "hi"}]}),
]


@pytest.mark.parametrize(
    "fields", [f for _, f in INVALID_REQUESTS], ids=[n for n, _ in INVALID_REQUESTS]
)
def test_make_request_rejects_invalid_fields_with_invalid_request_error(
    fields: dict[str, Any],
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        make_request(**fields)
    err = info.value
    assert isinstance(err, ModelError)
    assert isinstance(err, ValueError)
    assert not is_retryable(err)
    assert str(err).startswith("invalid request")


def test_invalid_request_error_names_the_field() -> None:
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        make_request(prompt="hi", max_tokens=0)
    with pytest.raises(InvalidRequestError, match=r"\['model', 'stream'\]"):
        make_request(prompt="hi", extra_body={"stream": True, "model": "x", "top_k": 3})


def test_make_request_accepts_valid_requests() -> None:
    chat = make_request(messages="hi")
    assert chat.is_chat
    assert chat.messages == (Message(role="user", content="hi"),)
    assert chat.prompt is None
    assert chat.max_tokens == 256

    dicts = make_request(
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    )
    assert [m.role for m in dicts.messages or ()] == ["system", "user"]

    comp = make_request(
        prompt="hi",
        max_tokens=1,
        temperature=0.0,
        top_p=1.0,
        logprobs=True,
        top_logprobs=20,
        extra_body={"top_k": 5, "min_p": 0.1},
    )
    assert not comp.is_chat
    assert comp.extra_body == {"top_k": 5, "min_p": 0.1}
    # top_logprobs=0 asks for no alternatives, which does not need logprobs
    assert make_request(prompt="hi", top_logprobs=0).top_logprobs == 0


def test_requests_are_frozen() -> None:
    req = make_request(prompt="hi")
    with pytest.raises(ValueError, match="frozen"):
        req.max_tokens = 3


# ---- SSE decoding ---------------------------------------------------------------------

STREAM = (
    b": keep-alive comment\n"
    b'data: {"a": 1}\n'
    b"\n"
    b"event: message\n"
    b"id: 7\n"
    b"retry: 1000\n"
    b'data: {"b": "\xc3\xa9"}\n'
    b"\n"
    b"data: line one\n"
    b"data: line two\n"
    b"\n"
    b"\n"  # a blank line with no data dispatches nothing
    b"data: [DONE]\n"
    b"\n"
)
EVENTS = [b'{"a": 1}', b'{"b": "\xc3\xa9"}', b"line one\nline two", b"[DONE]"]


def feed_all(decoder: SSEDecoder, pieces: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for p in pieces:
        out.extend(decoder.feed(p))
    out.extend(decoder.close())
    return out


def test_sse_decoder_whole_stream() -> None:
    assert feed_all(SSEDecoder(), [STREAM]) == EVENTS


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_sse_decoder_any_split_of_the_bytes_gives_the_same_events(size: int) -> None:
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert feed_all(SSEDecoder(), pieces) == EVENTS


def test_sse_decoder_crlf_line_endings_even_split_between_cr_and_lf() -> None:
    crlf = STREAM.replace(b"\n", b"\r\n")
    assert feed_all(SSEDecoder(), [crlf]) == EVENTS
    d = SSEDecoder()
    assert d.feed(b"data: x\r") == []
    assert d.feed(b"\n\r") == []
    assert d.feed(b"\n") == [b"x"]


def test_sse_decoder_events_come_out_as_soon_as_complete() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: 1\n") == []
    assert d.feed(b"\ndata: 2\n\ndata: 3") == [b"1", b"2"]
    assert d.feed(b"\n") == []
    assert d.feed(b"\n") == [b"3"]
    assert d.close() == []


def test_sse_decoder_strips_exactly_one_leading_space() -> None:
    d = SSEDecoder()
    assert d.feed(b"data:x\n\ndata:  y\n\ndata: \n\n") == [b"x", b" y", b""]


def test_sse_decoder_close_flushes_an_event_missing_its_blank_line() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: [DONE]") == []
    assert d.close() == [b"[DONE]"]
    d = SSEDecoder()
    assert d.feed(b"data: [DONE]\n") == []
    assert d.close() == [b"[DONE]"]
    assert SSEDecoder().close() == []


@pytest.mark.parametrize(
    "line",
    [b"garbage line", b'{"choices": []}', b"date: 1", b"foo: bar", b"DATA: x"],
)
def test_sse_decoder_rejects_lines_that_are_not_sse_fields(line: bytes) -> None:
    d = SSEDecoder("tiny")
    with pytest.raises(MalformedResponse) as info:
        d.feed(b"data: ok\n\n" + line + b"\n\n")
    assert info.value.model == "tiny"
    assert "malformed server-sent event" in str(info.value)
    assert not is_retryable(info.value)


def test_sse_decoder_rejects_a_malformed_line_split_across_reads() -> None:
    d = SSEDecoder()
    assert d.feed(b"garb") == []
    with pytest.raises(MalformedResponse):
        d.feed(b"age\n")


def test_sse_decoder_malformed_last_line_is_caught_on_close() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: 1\n\ngarbage") == [b"1"]
    with pytest.raises(MalformedResponse):
        d.close()


def test_sse_decoder_bare_data_field_is_an_empty_data_line() -> None:
    # The SSE spec: a line without a colon is a field name with an empty value, so a
    # bare "data" line appends an empty line to the event's data.
    d = SSEDecoder()
    assert d.feed(b"data: a\ndata\n\n") == [b"a\n"]


# ---- Prometheus metrics ---------------------------------------------------------------

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 3.0
vllm:num_requests_running{engine="1",model_name="tiny"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 2.0
vllm:num_requests_waiting{engine="1",model_name="tiny"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="tiny"} 0.25
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="0.3",model_name="tiny"} 4.0
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="tiny"} 9.0
vllm:e2e_request_latency_seconds_count{model_name="tiny"} 9.0
vllm:e2e_request_latency_seconds_sum{model_name="tiny"} 1.25
process_start_time_seconds 1.7e+09
python_info{implementation="CPython",version="3.12.3"} 1.0
"""


def test_parse_metrics_reads_vllm_text() -> None:
    m = parse_metrics(VLLM_METRICS)
    assert m["vllm:num_requests_running"] == [3.0, 1.0]
    assert m["vllm:num_requests_waiting"] == [2.0, 0.0]
    assert m["vllm:kv_cache_usage_perc"] == [0.5, 0.25]
    assert m["vllm:e2e_request_latency_seconds_bucket"] == [4.0, 9.0]
    assert m["process_start_time_seconds"] == [1.7e9]
    assert m["python_info"] == [1.0]
    assert not any(name.startswith("#") for name in m)


def test_server_load_sums_engines_and_averages_cache_usage() -> None:
    load = server_load(parse_metrics(VLLM_METRICS))
    assert load == ServerLoad(running=4.0, waiting=2.0, kv_cache_usage=0.375)
    assert load.outstanding == 6.0


def test_server_load_older_vllm_and_sglang_names() -> None:
    old = "vllm:num_requests_running 1\nvllm:gpu_cache_usage_perc 0.9\n"
    assert server_load(parse_metrics(old)) == ServerLoad(1.0, 0.0, 0.9)
    sglang = 'sglang:num_running_reqs{tp_rank="0"} 5\nsglang:num_queue_reqs{tp_rank="0"} 7\n'
    assert server_load(parse_metrics(sglang)) == ServerLoad(5.0, 7.0, None)


def test_server_load_none_without_load_metrics() -> None:
    assert server_load(parse_metrics("process_start_time_seconds 1\n")) is None
    assert server_load(parse_metrics("")) is None


def test_parse_metrics_labels_with_braces_spaces_timestamps_and_special_values() -> None:
    text = (
        'http_requests_total{path="/v1/x} y",code="200"} 12 1700000000000\n'
        "   vllm:num_requests_waiting   4   \n"
        'g{a="b"} NaN\n'
        'h{a="b"} +Inf\n'
    )
    m = parse_metrics(text)
    assert m["http_requests_total"] == [12.0]
    assert m["vllm:num_requests_waiting"] == [4.0]
    assert math.isnan(m["g"][0])
    assert m["h"] == [math.inf]


@pytest.mark.parametrize(
    "line",
    [
        'vllm:num_requests_running{model_name="tiny" 3',
        "vllm:num_requests_running",
        'vllm:num_requests_running{model_name="tiny"}',
        "vllm:num_requests_running three",
        "<html><body>502 Bad Gateway</body></html>",
    ],
)
def test_parse_metrics_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(MalformedResponse):
        parse_metrics("vllm:num_requests_waiting 1\n" + line + "\n")


# ---- timings and configuration --------------------------------------------------------


def test_timings_tpot() -> None:
    t = Timings(queued=0.1, ttft=1.0, e2e=3.0, gaps=(0.5,) * 4, tokens=5)
    assert t.tpot == pytest.approx(0.5)
    assert Timings(queued=None, ttft=1.0, e2e=3.0, gaps=(), tokens=1).tpot is None
    assert Timings(queued=None, ttft=None, e2e=3.0, gaps=(), tokens=0).tpot is None


@pytest.mark.parametrize("field", ["connect", "first_token", "idle", "total"])
@pytest.mark.parametrize("value", [0, -1.0])
def test_timeouts_must_be_positive(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        Timeouts(**{field: value})
    assert getattr(Timeouts(**{field: None}), field) is None


def test_adapter_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        OpenAICompatible("127.0.0.1:8000/v1", "m")
    with pytest.raises(ConfigError, match="model"):
        OpenAICompatible("http://127.0.0.1:8000/v1", "")


# ---- the error tree -------------------------------------------------------------------

RETRYABLE: list[tuple[ModelError, bool]] = [
    (ModelConnectionError("x"), True),
    (ConnectTimeout("x"), True),
    (FirstTokenTimeout("x"), True),
    (IdleTimeout("x"), True),
    (TotalTimeout("x"), False),
    (RateLimited("x", retry_after=1.5), True),
    (ServerError("x", status=503), True),
    (IncompleteStream("x"), True),
    (BadRequest("x", status=400), False),
    (AuthenticationError("x", status=401), False),
    (ModelNotFound("x", status=404), False),
    (ContextLengthExceeded("x", status=400), False),
    (MalformedResponse("x"), False),
    (InvalidRequestError("x"), False),
]


@pytest.mark.parametrize(
    ("exc", "retryable"), RETRYABLE, ids=[type(e).__name__ for e, _ in RETRYABLE]
)
def test_retryability_is_decided_by_type(exc: ModelError, retryable: bool) -> None:
    assert is_retryable(exc) is retryable


def test_timeouts_are_timeout_errors_and_incomplete_stream_is_malformed() -> None:
    for cls in (ConnectTimeout, FirstTokenTimeout, IdleTimeout, TotalTimeout):
        assert issubclass(cls, ModelTimeout)
        assert issubclass(cls, TimeoutError)
    assert issubclass(IncompleteStream, MalformedResponse)
    assert issubclass(ContextLengthExceeded, BadRequest)
    assert RateLimited("slow down", model="m", retry_after=1.5).retry_after == 1.5
    assert str(ServerError("boom", model="tiny")) == "tiny: boom"
    assert not is_retryable(ValueError("not ours"))
