"""``critpath sim-server``: the simulated fleet behind the OpenAI-compatible HTTP API.

Every test starts the server in process on 127.0.0.1 (port 0) with a small time
scale and talks to it over real sockets, with the official ``openai`` client, with
critpath's ``OpenAICompatible`` adapter, or with raw ``httpx``. Orders and aborts are
observed through events and ``/metrics``, waiting on conditions, never on sleeps.
When a server stops, nothing may be left behind: no scheduler slot, queue place,
in-flight request or task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from critpath.adapters import (
    ModelRequest,
    OpenAICompatible,
    Timeouts,
    complete,
    make_request,
    parse_metrics,
    server_load,
)
from critpath.adapters.sim import PROFILES, Fleet, FunctionAnswers, LatencyProfile, parse_choice
from critpath.adapters.sim.server import (
    SimServer,
    build_fleet,
    check_host,
    create_app,
    parse_faults,
)
from critpath.cli import main
from critpath.errors import (
    BadRequest,
    ConfigError,
    FirstTokenTimeout,
    IdleTimeout,
    IncompleteStream,
    ModelConnectionError,
    ModelNotFound,
    ServerError,
)

FAST = 0.01  # time scale: a 0.4 s TTFT takes 4 ms
WAIT = 10.0  # generous timeout of every condition
# A model that answers its first token at once, then sleeps 30 s before each next one.
SLOW = LatencyProfile(
    queue_s=0.001, prefill_per_token_s=0.0, ttft_sigma=0.0, tpot_s=30.0, tpot_sigma=0.0
)
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]


@contextlib.asynccontextmanager
async def running(fleet: Fleet) -> AsyncIterator[SimServer]:
    """The fleet served on loopback; afterwards, checks that nothing was left behind."""
    before = asyncio.all_tasks()
    async with SimServer(fleet) as server:
        yield server
    leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert leftover == []
    for replicas in fleet.models.values():
        for r in replicas:
            assert (r.scheduler.running, r.scheduler.waiting, r.stats.in_flight) == (0, 0, 0)


@contextlib.asynccontextmanager
async def openai_client(server: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sim", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until ``check()`` holds (polled), failing after ``WAIT`` seconds."""
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


async def metrics(server: SimServer) -> dict[str, list[float]]:
    async with httpx.AsyncClient() as http:
        resp = await http.get(server.url + "/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return parse_metrics(resp.text)


# ---- the OpenAI API, as the official client sees it ---------------------------------


async def test_chat_whole_and_streamed_with_the_openai_client() -> None:
    fleet = Fleet.synthetic(["small", "large"], time_scale=FAST, seed=3)
    async with running(fleet) as server, openai_client(server) as client:
        whole = await client.chat.completions.create(
            model="large",
            messages=[{"role": "user", "content": "Which option?"}],
            logprobs=True,
            top_logprobs=2,
            extra_body={"question_id": "syn-5"},
        )
        choice = whole.choices[0]
        text = choice.message.content
        assert text
        assert choice.message.role == "assistant"
        assert choice.finish_reason == "stop"
        assert whole.model == "large"
        assert whole.object == "chat.completion"
        assert whole.usage is not None
        assert choice.logprobs is not None
        assert choice.logprobs.content
        tokens = choice.logprobs.content
        assert "".join(t.token for t in tokens) == text
        assert whole.usage.completion_tokens == len(tokens)
        assert whole.usage.total_tokens == whole.usage.prompt_tokens + len(tokens)
        for t in tokens:
            assert t.logprob <= 0.0
            assert bytes(t.bytes or []) == t.token.encode()
            assert [(a.token, a.logprob) for a in t.top_logprobs] == [(t.token, t.logprob)]

        stream = await client.chat.completions.create(
            model="large",
            messages=[{"role": "user", "content": "Which option?"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"question_id": "syn-5"},
        )
        chunks = [c async for c in stream]
    first, *content, last = chunks
    assert first.choices[0].delta.role == "assistant"
    assert not first.choices[0].delta.content
    assert "".join(c.choices[0].delta.content or "" for c in content) == text
    assert [c.choices[0].finish_reason for c in content][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in content[:-1])
    assert all(c.object == "chat.completion.chunk" and c.id == first.id for c in chunks)
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == whole.usage.completion_tokens


async def test_completions_whole_and_streamed_with_the_openai_client() -> None:
    fleet = Fleet.synthetic(["small"], time_scale=FAST)
    async with running(fleet) as server, openai_client(server) as client:
        whole = await client.completions.create(
            model="small", prompt="Synthetic question 2: which option?", logprobs=1, max_tokens=6
        )
        stream = await client.completions.create(
            model="small",
            prompt="Synthetic question 2: which option?",
            logprobs=1,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    choice = whole.choices[0]
    assert whole.object == "text_completion"
    assert choice.finish_reason == "length"  # the answer is longer than 6 tokens
    assert whole.usage is not None
    assert whole.usage.completion_tokens == 6
    lp = choice.logprobs
    assert lp is not None
    assert lp.tokens
    assert lp.text_offset
    assert lp.top_logprobs
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    assert [list(top) for top in lp.top_logprobs] == [[t] for t in lp.tokens]

    *content, last = chunks
    assert "".join(c.choices[0].text for c in content) == choice.text
    assert content[-1].choices[0].finish_reason == "length"
    offsets = [o for c in content for o in (c.choices[0].logprobs.text_offset or [])]  # type: ignore[union-attr]
    assert offsets == lp.text_offset
    assert last.choices == []
    assert last.usage == whole.usage


async def test_models_are_listed() -> None:
    fleet = Fleet.synthetic(["small", "medium"], time_scale=FAST)
    async with running(fleet) as server, openai_client(server) as client:
        page = await client.models.list()
        async with OpenAICompatible(server.base_url, "small") as llm:
            listed = await llm.models()
        async with httpx.AsyncClient() as http:
            health = await http.get(server.url + "/health")
    assert [m.id for m in page.data] == ["small", "medium"]
    assert all(m.object == "model" and m.owned_by for m in page.data)
    assert listed == ["small", "medium"]
    assert health.status_code == 200


# ---- critpath's adapter -------------------------------------------------------------


@pytest.mark.parametrize("streaming", [True, False])
async def test_the_critpath_adapter_reads_everything(streaming: bool) -> None:
    fleet = Fleet.synthetic(["small"], time_scale=FAST, seed=1)
    async with (
        running(fleet) as server,
        OpenAICompatible(
            server.base_url, "small", vllm=True, streaming=streaming, retry=None
        ) as llm,
    ):
        request = make_request(
            messages="Which option?",
            logprobs=True,
            top_logprobs=1,
            priority=7,
            request_id="req-1",
            extra_body={"question_id": "syn-9"},
        )
        answer = await complete(llm, request)
        prompt = await complete(
            llm, make_request(prompt="Synthetic question 9: which option?", max_tokens=3)
        )
        load = await llm.load()
    expected = fleet.answers.answer("small", request)  # type: ignore[union-attr]
    assert answer.text == expected.text
    assert parse_choice(answer.text) == expected.choice
    assert answer.finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == expected.tokens
    assert answer.logprobs is not None
    assert len(answer.logprobs) == expected.tokens
    assert "".join(t.token for t in answer.logprobs) == answer.text
    assert prompt.finish_reason == "length"
    assert prompt.usage is not None
    assert prompt.usage.completion_tokens == 3
    assert load is not None
    assert (load.running, load.waiting, load.kv_cache_usage) == (0.0, 0.0, 0.0)
    assert fleet["small"].stats.requests == 2


async def test_metrics_use_vllm_names_per_model() -> None:
    fleet = Fleet.synthetic(["small", "large"], time_scale=FAST, replicas=2)
    async with running(fleet) as server, openai_client(server) as client:
        await client.chat.completions.create(model="small", messages=HI, max_tokens=2)
        parsed = await metrics(server)
        async with httpx.AsyncClient() as http:
            text = (await http.get(server.url + "/metrics")).text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
        assert parsed[name] == [0.0, 0.0]  # one sample per model, summed over replicas
    assert 'vllm:kv_cache_usage_perc{model_name="large"} 0.0' in text
    assert 'vllm:request_success_total{model_name="small"} 1.0' in text
    assert 'vllm:request_success_total{model_name="large"} 0.0' in text
    assert server_load(parsed) is not None


async def test_the_replica_with_the_fewest_outstanding_requests_answers() -> None:
    fleet = Fleet(None)
    fleet.add("slow", SLOW, replicas=3)
    async with running(fleet) as server, openai_client(server) as client:
        # Each stream holds its replica: its second token is 30 s away.
        streams = [
            await client.chat.completions.create(model="slow", messages=HI, stream=True)
            for _ in range(6)
        ]
        busy = [r.scheduler.running for r in fleet.replicas("slow")]
        for stream in streams[:3]:
            await stream.close()
        await until(lambda: _aborted(server, 3), "the server has aborted three streams")
        streams.append(await client.chat.completions.create(model="slow", messages=HI, stream=True))
        after = [r.scheduler.running for r in fleet.replicas("slow")]
        for stream in streams[3:]:
            await stream.close()
    assert busy == [2, 2, 2]
    assert sorted(after) == [1, 1, 2]
    assert [r.stats.requests for r in fleet.replicas("slow")] == [3, 2, 2]


async def _aborted(server: SimServer, n: int) -> bool:
    return (await metrics(server))["critpath_sim_requests_aborted_total"] == [n]


# ---- invalid requests ---------------------------------------------------------------


INVALID: list[tuple[str, Any, str | None]] = [  # path, body, the parameter named
    ("/chat/completions", b"{not json", None),
    ("/chat/completions", b"[1, 2]", None),
    ("/chat/completions", {"model": "small"}, None),
    ("/chat/completions", {"model": "small", "messages": []}, None),
    ("/chat/completions", {"model": "small", "messages": "Hi"}, "messages"),
    ("/chat/completions", {"model": "small", "messages": HI, "temperature": 9}, "temperature"),
    ("/chat/completions", {"model": "small", "messages": HI, "max_tokens": 0}, "max_tokens"),
    ("/chat/completions", {"model": "small", "messages": HI, "top_logprobs": 2}, None),
    ("/chat/completions", {"model": "small", "messages": HI, "logprobs": 3}, "logprobs"),
    ("/chat/completions", {"model": "small", "messages": HI, "n": 2}, "n"),
    ("/chat/completions", {"model": "small", "messages": HI, "priority": "x"}, "priority"),
    ("/chat/completions", {"model": "small", "prompt": "Hi"}, "prompt"),
    (
        "/chat/completions",
        {"model": "small", "messages": HI, "stream_options": {"include_usage": True}},
        "stream_options",
    ),
    ("/chat/completions", {"messages": HI}, "model"),  # two models: which one?
    ("/completions", {"model": "small", "prompt": "Hi", "logprobs": True}, "logprobs"),
    ("/completions", {"model": "small", "prompt": ["a", "b"]}, "prompt"),
    ("/completions", {"model": "small", "prompt": "Hi", "stop": [""]}, None),
]


async def test_invalid_requests_are_400() -> None:
    fleet = Fleet.synthetic(["small", "large"], time_scale=FAST)
    async with running(fleet) as server, httpx.AsyncClient() as http:
        for path, body, param in INVALID:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            resp = await http.post(
                server.base_url + path,
                content=content,
                headers={"content-type": "application/json"},
            )
            assert resp.status_code == 400, (body, resp.text)
            error = resp.json()["error"]
            assert error["type"] == "BadRequestError"
            assert error["code"] == 400
            assert error["message"]
            assert error["param"] == param, (body, error)
    assert fleet["small"].stats.requests == 0


async def test_unknown_model_is_404() -> None:
    fleet = Fleet.synthetic(["small"], time_scale=FAST)
    async with running(fleet) as server, openai_client(server) as client:
        async with httpx.AsyncClient() as http:
            resp = await http.post(
                server.base_url + "/chat/completions", json={"model": "gpt-9", "messages": HI}
            )
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="gpt-9", messages=HI)
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="small", messages=[])
        async with OpenAICompatible(server.base_url, "gpt-9", retry=None) as llm:
            with pytest.raises(ModelNotFound):
                await complete(llm, make_request(messages="Hi"))
        async with OpenAICompatible(server.base_url, "small", retry=None) as llm:
            with pytest.raises(BadRequest):
                await complete(llm, make_request(messages="Hi", extra_body={"n": 3}))
    assert resp.status_code == 404
    assert resp.json()["error"] == {
        "message": "The model `gpt-9` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }


# ---- priority and disconnects -------------------------------------------------------


def _one_slot_fleet() -> Fleet:
    """One model, one sequence at a time; "hold" gets a very long answer."""

    def answer(model: str, request: ModelRequest) -> str:
        assert request.messages is not None
        if request.messages[-1].content == "hold":
            return " ".join(["word"] * 5000)
        return "A short answer."

    fleet = Fleet(FunctionAnswers(answer))
    fleet.add("m", PROFILES["7b"].with_(max_num_seqs=1), time_scale=0.05)
    return fleet


async def test_priority_serves_the_urgent_request_before_the_queued_ones() -> None:
    fleet = _one_slot_fleet()
    scheduler = fleet["m"].scheduler
    granted: list[int] = []
    acquire = scheduler.acquire

    async def recording_acquire(priority: int) -> None:
        await acquire(priority)
        granted.append(priority)

    scheduler.acquire = recording_acquire  # type: ignore[method-assign]
    finished: list[str] = []
    async with running(fleet) as server, OpenAICompatible(server.base_url, "m", vllm=True) as llm:

        async def waiting(n: int) -> bool:
            load = await llm.load()
            return load is not None and load.waiting == n and load.running == 1

        async def ask(label: str, priority: int) -> None:
            await complete(llm, make_request(messages=label, priority=priority))
            finished.append(label)

        first_token = asyncio.Event()

        async def hold() -> None:
            async with contextlib.aclosing(
                llm.stream(make_request(messages="hold", priority=5))
            ) as stream:
                async for chunk in stream:
                    if chunk.text:
                        first_token.set()

        holder = asyncio.create_task(hold())
        await asyncio.wait_for(first_token.wait(), WAIT)
        lows = [asyncio.create_task(ask(f"low{i}", 10)) for i in range(2)]
        await until(lambda: waiting(2), "two low-priority requests wait")
        high = asyncio.create_task(ask("high", 0))
        await until(lambda: waiting(3), "the high-priority request waits too")
        holder.cancel()  # frees the slot: the scheduler picks the next request
        await asyncio.gather(high, *lows)
        with contextlib.suppress(asyncio.CancelledError):
            await holder
        load = await llm.load()
    assert granted == [5, 0, 10, 10]
    assert finished[0] == "high"
    assert sorted(finished[1:]) == ["low0", "low1"]
    assert fleet["m"].aborted == 1  # the held request
    assert load is not None
    assert (load.running, load.waiting) == (0.0, 0.0)


async def test_a_client_that_goes_away_aborts_its_request_at_once() -> None:
    fleet = Fleet(None)
    fleet.add("slow", SLOW.with_(max_num_seqs=1))
    model = fleet["slow"]
    async with running(fleet) as server, openai_client(server) as client:
        # Running: read the first token; the model now sleeps 30 s before the next.
        stream = await client.chat.completions.create(model="slow", messages=HI, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        # Queued behind it: a non-streamed request, whose client gives up.
        queued = asyncio.create_task(client.chat.completions.create(model="slow", messages=HI))

        async def state(running: int, waiting: int, aborted: int) -> bool:
            m = await metrics(server)
            return (
                m["vllm:num_requests_running"] == [running]
                and m["vllm:num_requests_waiting"] == [waiting]
                and m["critpath_sim_requests_aborted_total"] == [aborted]
                and model.aborted == aborted
            )

        await until(lambda: state(1, 1, 0), "one request runs and one waits")
        queued.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await queued
        await until(lambda: state(1, 0, 1), "the queued request is aborted")
        await stream.close()
        await until(lambda: state(0, 0, 2), "the running request is aborted mid-sleep")
        kv = (await metrics(server))["vllm:kv_cache_usage_perc"]
    assert kv == [0.0]
    assert model.stats.in_flight == 0


async def test_cancelling_the_adapter_task_aborts_the_stream() -> None:
    fleet = Fleet(None)
    fleet.add("slow", SLOW)
    model = fleet["slow"]
    async with running(fleet) as server, OpenAICompatible(server.base_url, "slow") as llm:
        got_token = asyncio.Event()

        async def read() -> None:
            async for chunk in llm.stream(make_request(messages="Hi")):
                if chunk.text:
                    got_token.set()

        task = asyncio.create_task(read())
        await asyncio.wait_for(got_token.wait(), WAIT)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        async def aborted() -> bool:
            load = await llm.load()
            return model.aborted == 1 and load is not None and load.running == 0

        await until(aborted, "the server aborts the generation")


async def test_stopping_the_server_drops_answers_still_running_after_the_grace() -> None:
    fleet = Fleet(None)
    fleet.add("slow", SLOW)
    server = SimServer(fleet, shutdown_timeout=0.2)
    await server.start()
    try:
        async with OpenAICompatible(server.base_url, "slow", retry=None) as llm:
            got_token = asyncio.Event()

            async def read() -> None:
                async for chunk in llm.stream(make_request(messages="Hi")):
                    if chunk.text:
                        got_token.set()

            reader = asyncio.create_task(read())
            await asyncio.wait_for(got_token.wait(), WAIT)
            await asyncio.wait_for(server.stop(), WAIT)
            with pytest.raises((ModelConnectionError, IncompleteStream)):
                await asyncio.wait_for(reader, WAIT)
    finally:
        await server.stop()
    assert fleet["slow"].aborted == 1
    assert fleet["slow"].scheduler.running == 0


# ---- determinism and faults ---------------------------------------------------------


async def _answers(seed: int, questions: list[str]) -> list[str]:
    fleet = Fleet.synthetic(["medium"], time_scale=0.002, seed=seed)
    async with running(fleet) as server, openai_client(server) as client:
        replies = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model="medium",
                    messages=HI,
                    extra_body={"question_id": q},
                )
                for q in questions
            )
        )
    return [r.choices[0].message.content or "" for r in replies]


async def test_the_same_seed_gives_the_same_answers() -> None:
    questions = [f"syn-{i}" for i in range(6)]
    first = await _answers(11, questions)
    again = await _answers(11, questions)
    other = await _answers(12, questions)
    assert first == again
    assert first != other
    assert all(text.endswith((").", "I don't know.")) for text in first)


async def test_a_simulated_server_error_is_http_500() -> None:
    fleet = build_fleet(sizes=["small"], time_scale=FAST, faults={"error_p": 1.0})
    async with running(fleet) as server, openai_client(server) as client:
        async with OpenAICompatible(server.base_url, "small", retry=None) as llm:
            with pytest.raises(ServerError) as info:
                await complete(llm, make_request(messages="Hi"))
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="small", messages=HI)
        m = await metrics(server)
    assert info.value.status == 500
    assert m["critpath_sim_request_errors_total"] == [2.0]
    assert m["vllm:request_success_total"] == [0.0]


@pytest.mark.parametrize("streaming", [True, False])
async def test_a_simulated_reset_drops_the_connection(
    streaming: bool, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = build_fleet(sizes=["small"], time_scale=FAST, faults={"reset_p": 1.0})
    async with (
        running(fleet) as server,
        OpenAICompatible(server.base_url, "small", retry=None, streaming=streaming) as llm,
    ):
        for i in range(3):  # resets fall on different tokens, the first one included
            with pytest.raises((ModelConnectionError, IncompleteStream)):
                await complete(llm, make_request(messages="Hi", request_id=f"r{i}"))
        m = await metrics(server)
    assert m["critpath_sim_connection_resets_total"] == [3.0]
    assert m["vllm:num_requests_running"] == [0.0]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_a_stalled_stream_is_aborted_when_the_client_times_out() -> None:
    fleet = build_fleet(sizes=["small"], time_scale=FAST, faults={"stall_p": 1.0})
    timeouts = Timeouts(first_token=0.3, idle=0.3)
    async with (
        running(fleet) as server,
        OpenAICompatible(server.base_url, "small", retry=None, timeouts=timeouts) as llm,
    ):
        with pytest.raises((FirstTokenTimeout, IdleTimeout)):
            await complete(llm, make_request(messages="Hi"))

        async def aborted() -> bool:
            return fleet["small"].aborted == 1 and (await metrics(server))[
                "vllm:num_requests_running"
            ] == [0.0]

        await until(aborted, "the stalled request is aborted")


# ---- options and the command --------------------------------------------------------


def test_faults_are_parsed_into_profile_fields() -> None:
    assert parse_faults("straggler=0.05,error=0.01,reset=0.01,stall=0.01") == {
        "straggler_p": 0.05,
        "error_p": 0.01,
        "reset_p": 0.01,
        "stall_p": 0.01,
    }
    assert parse_faults("") == {}
    for bad in ("error", "boom=0.1", "error=x", "error=1.5", "error=0.6,reset=0.6"):
        with pytest.raises(ConfigError):
            parse_faults(bad)
    fleet = build_fleet(
        sizes=["small", "large"],
        replicas=2,
        faults=parse_faults("straggler=0.05,error=0.01"),
        max_num_seqs=4,
    )
    for replicas in fleet.models.values():
        assert len(replicas) == 2
        for r in replicas:
            assert (r.profile.straggler_p, r.profile.error_p, r.profile.reset_p) == (0.05, 0.01, 0)
            assert r.scheduler.slots == 4
    assert fleet["large"].profile.tpot_s == PROFILES["70b"].tpot_s
    with pytest.raises(ConfigError):
        build_fleet(models=["gemma-7b"])  # recorded models need data


def test_only_loopback_hosts_unless_allowed() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_host(host)
    for host in ("0.0.0.0", "10.1.2.3", "::", ""):
        with pytest.raises(ConfigError, match="loopback"):
            check_host(host)
        check_host(host, allow_remote=True)
    with pytest.raises(ConfigError):
        SimServer(Fleet.synthetic(["small"]), "0.0.0.0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "loopback"),
        (["--faults", "boom=0.1"], "bad fault"),
        (["--fleet", "huge"], "unknown size"),
        (["--models", "gemma-7b"], "--data"),
    ],
)
def test_the_command_rejects_bad_options(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sim-server", "--port", "0", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1, err  # one line


def _shared_data() -> Path | None:
    env = os.environ.get("CRITPATH_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    return next((c for c in candidates if (c / "mmlu_pro" / "questions.jsonl").is_file()), None)


async def test_recorded_models_are_served() -> None:
    data = _shared_data()
    if data is None:
        pytest.skip("no recorded data (set CRITPATH_DATA)")
    fleet = build_fleet(data=data, models=["gemma-7b"], time_scale=0.002)
    assert fleet.names() == ["gemma-7b"]
    qid = fleet.answers.questions[0].id  # type: ignore[union-attr]
    async with running(fleet) as server, openai_client(server) as client:
        reply = await client.chat.completions.create(
            model="gemma-7b",
            messages=HI,
            extra_body={"question_id": qid},
        )
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0


async def test_the_command_serves_until_interrupted() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "critpath.cli", "sim-server", "--port", "0", "--fleet", "small",
        "--time-scale", "0.01", "--faults", "straggler=0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert "small at http://127.0.0.1:" in line, line
        base_url = line.split(" at ")[1].split()[0]
        async with OpenAICompatible(base_url, "small", retry=None) as llm:
            answer = await complete(llm, make_request(messages="Hi", max_tokens=3))
        assert answer.usage is not None
        assert answer.usage.completion_tokens == 3
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), WAIT)
        assert proc.returncode == 0, err.decode()
        assert b"stopped" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_the_serve_extra_is_needed_only_to_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    code = (
        "import sys, critpath, critpath.adapters.sim, critpath.adapters.sim.server; "
        "assert not {'starlette', 'uvicorn'} & set(sys.modules), sorted(sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    monkeypatch.setitem(sys.modules, "starlette.applications", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'critpath\[serve\]'"):
        create_app(Fleet.synthetic(["small"]))
