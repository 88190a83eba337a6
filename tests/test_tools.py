"""Tools and typed answers through the protocol, the simulated model, its server (with
the official ``openai`` client, streamed and whole) and the HTTP adapter."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Literal

import openai
import pytest
from pydantic import BaseModel, Field

from critpath.adapters import (
    Chunk,
    Message,
    OpenAICompatible,
    SimulatedModel,
    complete,
    make_request,
)
from critpath.adapters.completion import complete_valid
from critpath.adapters.sim import Fleet
from critpath.adapters.sim.server import SimServer
from critpath.adapters.sim.tools import CallTools, PlannedCall, Say, WavesScript, example_value
from critpath.adapters.toolcalls import ArgumentsScanner, BrokenCall, ToolCallAssembler
from critpath.adapters.tools import (
    NamedTool,
    ResponseFormat,
    ToolCall,
    ToolCallDelta,
    ToolMode,
    ToolSpec,
)
from critpath.errors import (
    InvalidJSON,
    InvalidOutput,
    InvalidRequestError,
    SchemaMismatch,
    UnknownTool,
    is_retryable,
)

FAST = 0.01


async def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
    """The weather in a city.

    Longer text that is not part of the description."""
    return f"sunny in {city}"


class Lookup(BaseModel):
    """Look up a ticket."""

    ticket: int
    urgent: bool


class Verdict(BaseModel):
    label: Literal["yes", "no", "maybe"]
    score: Annotated[int, Field(ge=0, le=10)]
    sure: bool


# ---- the protocol -------------------------------------------------------------------


def test_tool_spec_from_a_typed_function_and_a_model() -> None:
    spec = ToolSpec.from_function(get_weather)
    assert spec.name == "get_weather"
    assert spec.description == "The weather in a city."
    assert spec.parameters["required"] == ["city"]
    assert spec.parameters["properties"]["unit"]["enum"] == ["c", "f"]
    assert spec.validate_arguments({"city": "Oslo"}) == {"city": "Oslo"}
    with pytest.raises(SchemaMismatch, match="unit"):
        spec.validate_arguments({"city": "Oslo", "unit": "k"})
    with pytest.raises(SchemaMismatch, match="country: Extra"):
        spec.validate_arguments({"city": "Oslo", "country": "NO"})
    lookup = ToolSpec.of(Lookup)
    assert lookup.name == "Lookup"
    assert lookup.description == "Look up a ticket."
    assert set(lookup.parameters["required"]) == {"ticket", "urgent"}


def test_request_validates_tools_and_tool_choice() -> None:
    r = make_request(messages="hi", tools=[get_weather, Lookup], tool_choice="required")
    assert r.tool_choice is ToolMode.REQUIRED
    assert [t.name for t in r.tools or ()] == ["get_weather", "Lookup"]
    named = make_request(messages="hi", tools=[get_weather], tool_choice=get_weather)
    assert named.tool_choice == NamedTool("get_weather")
    with pytest.raises(InvalidRequestError, match="ToolMode"):
        make_request(messages="hi", tools=[get_weather], tool_choice="get_weather")
    with pytest.raises(InvalidRequestError, match="not one of the tools"):
        make_request(messages="hi", tools=[get_weather], tool_choice=NamedTool("other"))
    with pytest.raises(InvalidRequestError, match="needs tools"):
        make_request(messages="hi", tool_choice=ToolMode.REQUIRED)
    with pytest.raises(InvalidRequestError, match="chat"):
        make_request(prompt="hi", tools=[get_weather])
    with pytest.raises(InvalidRequestError, match="unique"):
        make_request(messages="hi", tools=[get_weather, get_weather])
    rf = make_request(messages="hi", response_format=Verdict).response_format
    assert rf is not None
    assert rf.model is Verdict
    assert rf.json_schema["properties"]["label"]["enum"] == ["yes", "no", "maybe"]
    raw = make_request(
        messages="hi",
        response_format={"type": "json_schema", "json_schema": {"name": "v", "schema": {}}},
    ).response_format
    assert raw is not None
    assert raw.name == "v"


def test_messages_carry_tool_calls_and_results() -> None:
    call = ToolCall("c1", "get_weather", {"city": "Oslo"})
    r = make_request(
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ]
    )
    assert r.messages is not None
    assert r.messages[1].tool_calls == (call,)
    with pytest.raises(InvalidRequestError, match="tool_call_id"):
        make_request(messages=[{"role": "tool", "content": "x"}])
    with pytest.raises(InvalidRequestError, match="assistant"):
        make_request(messages=[{"role": "user", "content": "x", "tool_calls": [call]}])


def test_response_format_parses_or_raises_typed_errors() -> None:
    rf = ResponseFormat.of(Verdict)
    v = rf.parse('{"label": "yes", "score": 3, "sure": true}')
    assert v == Verdict(label="yes", score=3, sure=True)
    with pytest.raises(InvalidJSON) as bad:
        rf.parse('{"label": "yes", ')
    assert is_retryable(bad.value)
    assert bad.value.output == '{"label": "yes", '
    with pytest.raises(SchemaMismatch, match="score") as mismatch:
        rf.parse('{"label": "yes", "score": 11, "sure": true}')
    assert "score" in mismatch.value.feedback


# ---- the assembler ------------------------------------------------------------------


def test_scanner_follows_strings_escapes_and_nesting() -> None:
    s = ArgumentsScanner()
    assert not s.feed('  {"a": "}\\"{", "b": [{"c": ')
    assert not s.feed("1}")
    assert s.feed("]}")
    assert s.closed
    bad = ArgumentsScanner()
    assert not bad.feed("[1]")
    assert bad.invalid


def test_each_call_closes_when_its_arguments_do() -> None:
    asm = ToolCallAssembler()
    assert asm.feed([ToolCallDelta(0, "a", "get_weather", "")]) == []
    assert asm.feed([ToolCallDelta(0, arguments='{"city": "Os')]) == []
    # Call 0 is complete with this fragment: before call 1 starts, before the end.
    assert asm.feed([ToolCallDelta(0, arguments='lo"}')]) == [
        ToolCall("a", "get_weather", {"city": "Oslo"})
    ]
    assert asm.feed([ToolCallDelta(1, "b", "Lookup", '{"ticket": 1')]) == []
    assert asm.finish() == [BrokenCall(1, "b", "Lookup", '{"ticket": 1', asm.calls()[1].error)]  # type: ignore[union-attr]
    broken = asm.calls()[1]
    assert isinstance(broken, BrokenCall)
    assert isinstance(broken.error, InvalidJSON)
    assert broken.error.tool_call_id == "b"


def test_a_new_index_closes_the_previous_call() -> None:
    asm = ToolCallAssembler()
    asm.feed([ToolCallDelta(0, "a", "f", "")])  # no arguments at all
    closed = asm.feed([ToolCallDelta(1, "b", "g", "{}")])
    assert closed == [ToolCall("a", "f", {}), ToolCall("b", "g", {})]


# ---- the simulated model ------------------------------------------------------------


async def test_sim_model_streams_tool_calls_that_close_mid_message() -> None:
    script = WavesScript([[PlannedCall("get_weather", {"city": "Oslo"}, tokens=5),
                           PlannedCall("get_weather", {"city": "Rome"}, tokens=5)]])  # fmt: skip
    m = SimulatedModel("s", profile="small", time_scale=FAST, tool_script=script)
    req = make_request(messages="weather in Oslo and Rome?", tools=[get_weather])
    asm = ToolCallAssembler()
    order: list[str] = []
    async with aclosing(m.stream(req)) as stream:
        async for chunk in stream:
            for closed in asm.feed(chunk.tool_calls):
                assert isinstance(closed, ToolCall)
                order.append(f"closed {closed.arguments['city']}")
            if any(d.index == 1 and d.name for d in chunk.tool_calls):
                order.append("second call starts")
            if chunk.finish_reason:
                order.append(f"end {chunk.finish_reason}")
    assert order == ["closed Oslo", "second call starts", "closed Rome", "end tool_calls"]


async def test_complete_validates_calls_and_parses_answers() -> None:
    m = SimulatedModel("s", profile="small", time_scale=FAST)
    named = make_request(messages="x", tools=[get_weather, Lookup], tool_choice=NamedTool("Lookup"))
    c = await complete(m, named)
    assert c.finish_reason == "tool_calls"
    assert [t.name for t in c.tool_calls] == ["Lookup"]
    Lookup.model_validate(c.tool_calls[0].arguments)
    assert c.message().tool_calls == c.tool_calls
    typed = await complete(m, make_request(messages="judge", response_format=Verdict))
    assert isinstance(typed.parsed, Verdict)
    assert typed.tool_calls == ()


async def test_invalid_answers_are_typed_and_fed_back() -> None:
    class Once:
        """Answers with a broken object first, then a valid one."""

        def __init__(self) -> None:
            self.seen: list[int] = []

        def turn(self, request):  # type: ignore[no-untyped-def]
            self.seen.append(len(request.messages))
            if len(self.seen) == 1:
                return Say('{"label": "perhaps", "score": 3, "sure": true}')
            return Say('{"label": "maybe", "score": 3, "sure": true}')

    script = Once()
    m = SimulatedModel("s", profile="small", time_scale=FAST, tool_script=script)
    req = make_request(messages="judge", response_format=Verdict)
    with pytest.raises(SchemaMismatch):
        await complete(m, req)
    script.seen.clear()
    c = await complete_valid(m, req)
    assert c.parsed == Verdict(label="maybe", score=3, sure=True)
    assert script.seen == [1, 3]  # the bad answer and the error went back to the model

    class Wrong:
        def turn(self, request):  # type: ignore[no-untyped-def]
            return CallTools((PlannedCall("nope", {}),))

    bad = SimulatedModel("s", profile="small", time_scale=FAST, tool_script=Wrong())
    with pytest.raises(UnknownTool) as unknown:
        await complete(bad, make_request(messages="x", tools=[get_weather]))
    assert unknown.value.tool_call_id == "call_0_0"
    assert "get_weather" in unknown.value.feedback


def test_example_values_follow_the_schema() -> None:
    import random

    rng = random.Random(0)
    for _ in range(20):
        Verdict.model_validate(example_value(Verdict.model_json_schema(), rng))
        Lookup.model_validate(example_value(Lookup.model_json_schema(), rng))


# ---- over HTTP: the official openai client and critpath's adapter --------------------


@contextlib.asynccontextmanager
async def served() -> AsyncIterator[SimServer]:
    fleet = Fleet.synthetic(["small"], time_scale=FAST)
    async with SimServer(fleet) as server:
        yield server


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": ToolSpec.from_function(get_weather).parameters,
    },
}


async def test_openai_client_parses_tool_calls_whole_and_streamed() -> None:
    async with served() as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sim", max_retries=0)
        async with client:
            whole = await client.chat.completions.create(
                model="small",
                messages=[{"role": "user", "content": "weather in Oslo?"}],
                tools=[WEATHER_TOOL],  # type: ignore[list-item]
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
            )
            choice = whole.choices[0]
            assert choice.finish_reason == "tool_calls"
            calls = choice.message.tool_calls or []
            assert len(calls) == 1
            fn = calls[0].function  # type: ignore[union-attr]
            assert fn.name == "get_weather"
            assert "city" in json.loads(fn.arguments)

            pieces: dict[int, dict[str, str]] = {}
            finish = None
            stream = await client.chat.completions.create(
                model="small",
                messages=[{"role": "user", "content": "weather in Oslo?"}],
                tools=[WEATHER_TOOL],  # type: ignore[list-item]
                tool_choice="required",
                stream=True,
            )
            n_deltas = 0
            async for event in stream:
                if not event.choices:
                    continue
                for d in event.choices[0].delta.tool_calls or []:
                    n_deltas += 1
                    p = pieces.setdefault(d.index, {"id": "", "name": "", "args": ""})
                    p["id"] = d.id or p["id"]
                    if d.function is not None:
                        p["name"] = d.function.name or p["name"]
                        p["args"] += d.function.arguments or ""
                finish = event.choices[0].finish_reason or finish
            assert finish == "tool_calls"
            assert n_deltas > 2  # the arguments arrived in fragments
            assert pieces[0]["name"] == "get_weather"
            assert pieces[0]["id"]
            assert "city" in json.loads(pieces[0]["args"])

            # A tool result goes back; with auto, the model then answers in text.
            after = await client.chat.completions.create(
                model="small",
                messages=[
                    {"role": "user", "content": "weather in Oslo?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": pieces[0]["id"],
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": pieces[0]["args"]},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": pieces[0]["id"], "content": "sunny"},
                ],
                tools=[WEATHER_TOOL],  # type: ignore[list-item]
            )
            assert after.choices[0].finish_reason == "stop"
            assert after.choices[0].message.content


async def test_openai_client_parses_json_schema_answers() -> None:
    async with served() as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sim", max_retries=0)
        async with client:
            parsed = await client.chat.completions.parse(
                model="small",
                messages=[{"role": "user", "content": "judge"}],
                response_format=Verdict,
            )
            assert isinstance(parsed.choices[0].message.parsed, Verdict)
            async with client.chat.completions.stream(
                model="small",
                messages=[{"role": "user", "content": "judge"}],
                response_format=Verdict,
            ) as stream:
                async for _ in stream:
                    pass
                final = await stream.get_final_completion()
            assert isinstance(final.choices[0].message.parsed, Verdict)
            with pytest.raises(openai.BadRequestError):
                await client.chat.completions.create(
                    model="small",
                    messages=[{"role": "user", "content": "x"}],
                    tools=[WEATHER_TOOL],  # type: ignore[list-item]
                    tool_choice="sometimes",  # type: ignore[arg-type]
                )


@pytest.mark.parametrize("streaming", [True, False])
async def test_http_adapter_reads_tool_calls_and_typed_answers(streaming: bool) -> None:
    async with served() as server, OpenAICompatible(server.base_url, "small", retry=None) as m:
        m.streaming = streaming
        req = make_request(messages="x", tools=[get_weather, Lookup], tool_choice=Lookup)
        c = await complete(m, req)
        assert [t.name for t in c.tool_calls] == ["Lookup"]
        Lookup.model_validate(c.tool_calls[0].arguments)
        typed = await complete(m, make_request(messages="judge", response_format=Verdict))
        assert isinstance(typed.parsed, Verdict)
        if streaming:  # deltas arrive one token each, the first with id and name
            chunks: list[Chunk] = []
            async with aclosing(m.stream(req)) as stream:
                async for chunk in stream:
                    chunks.append(chunk)
            deltas = [d for ch in chunks for d in ch.tool_calls]
            assert deltas[0].name == "Lookup"
            assert deltas[0].id
            assert len(deltas) > 2
            assert all(d.name is None for d in deltas[1:])


async def test_conversation_with_tool_results_round_trips_over_http() -> None:
    async with served() as server, OpenAICompatible(server.base_url, "small", retry=None) as m:
        req = make_request(messages="weather?", tools=[get_weather])
        first = await complete(m, req)
        assert first.tool_calls
        call = first.tool_calls[0]
        assert req.messages is not None
        result = Message(role="tool", tool_call_id=call.id, content="sunny")
        follow = req.model_copy(update={"messages": (*req.messages, first.message(), result)})
        second = await complete(m, follow)
        assert second.tool_calls == ()
        assert second.finish_reason == "stop"


def test_invalid_output_is_an_error_of_the_tree() -> None:
    assert issubclass(InvalidJSON, InvalidOutput)
    assert issubclass(UnknownTool, InvalidOutput)
