"""Tools and structured output on the OpenAI wire, both ways (pure functions, no I/O).

Client side (``OpenAICompatible``): ``request_fields`` (``tools``, ``tool_choice``,
``parallel_tool_calls``, ``response_format`` as OpenAI and vLLM take them),
``message_json`` (assistant ``tool_calls``, ``tool`` results), ``stream_deltas``
(``choices[0].delta.tool_calls`` of a stream event, as vLLM and OpenAI send them:
``index``, then ``id``/``function.name`` once, ``function.arguments`` in fragments)
and ``message_calls`` (a whole response's ``message.tool_calls``).

Server side (the simulated server): ``tools_from_json``, ``tool_choice_from_json``,
``response_format_from_json``, ``message_from_json`` read a request body, and
``delta_json`` / ``calls_json`` write what the model called.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from critpath.adapters.protocol import Message, ModelRequest
from critpath.adapters.tools import (
    NamedTool,
    ResponseFormat,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolMode,
    ToolSpec,
)

__all__ = [
    "calls_json",
    "delta_json",
    "message_calls",
    "message_from_json",
    "message_json",
    "request_fields",
    "response_format_from_json",
    "stream_deltas",
    "tool_choice_from_json",
    "tool_choice_json",
    "tool_json",
    "tools_from_json",
]


# ---- client side --------------------------------------------------------------------


def tool_json(spec: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": spec.name, "parameters": spec.parameters}
    if spec.description:
        function["description"] = spec.description
    if spec.strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def tool_choice_json(choice: ToolChoice) -> str | dict[str, Any]:
    if isinstance(choice, NamedTool):
        return {"type": "function", "function": {"name": choice.name}}
    return choice.value


def request_fields(r: ModelRequest) -> dict[str, Any]:
    """The body fields for ``r``'s tools and response format (empty without them)."""
    out: dict[str, Any] = {}
    if r.tools:
        out["tools"] = [tool_json(t) for t in r.tools]
    if r.tool_choice is not None:
        out["tool_choice"] = tool_choice_json(r.tool_choice)
    if r.parallel_tool_calls is not None and r.tools:
        out["parallel_tool_calls"] = r.parallel_tool_calls
    if r.response_format is not None:
        rf = r.response_format
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": rf.name, "schema": rf.json_schema, "strict": rf.strict},
        }
    return out


def message_json(m: Message) -> dict[str, Any]:
    """One message as the OpenAI chat API takes it."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = calls_json(m.tool_calls)
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _str(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r:.60}")
    return value


def stream_deltas(delta: dict[str, Any]) -> tuple[ToolCallDelta, ...]:
    """The tool-call pieces of one stream event's ``delta`` (``ValueError`` if malformed)."""
    raw = delta.get("tool_calls")
    if not raw:
        return ()
    if not isinstance(raw, list):
        raise ValueError("delta.tool_calls must be a list")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError("a tool call delta must be an object")
        index = item.get("index", i)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError(f"a tool call delta's index must be an integer >= 0: {index!r}")
        fn = item.get("function") or {}
        if not isinstance(fn, dict):
            raise ValueError("a tool call delta's function must be an object")
        out.append(
            ToolCallDelta(
                index=index,
                id=_str(item.get("id"), "tool call id") or None,
                name=_str(fn.get("name"), "function name") or None,
                arguments=_str(fn.get("arguments"), "function arguments") or "",
            )
        )
    return tuple(out)


def message_calls(message: dict[str, Any]) -> tuple[ToolCallDelta, ...]:
    """A whole response's ``message.tool_calls``, each as one complete piece."""
    return stream_deltas({"tool_calls": message.get("tool_calls")})


# ---- server side --------------------------------------------------------------------


def tools_from_json(raw: object) -> tuple[ToolSpec, ...] | None:
    """A body's ``tools`` (``ValueError`` names what is wrong)."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ValueError("tools must be a list")
    specs = []
    for item in raw:
        if not isinstance(item, dict) or item.get("type", "function") != "function":
            raise ValueError("each tool must be {'type': 'function', 'function': {...}}")
        fn = item.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ValueError("a tool's function needs a name")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise ValueError("a tool's parameters must be a JSON schema object")
        specs.append(
            ToolSpec(
                name=fn["name"],
                description=str(fn.get("description") or ""),
                parameters=params,
                strict=bool(fn.get("strict", False)),
            )
        )
    return tuple(specs)


def tool_choice_from_json(raw: object) -> ToolChoice | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return ToolMode(raw)  # ValueError for an unknown mode
    if isinstance(raw, dict):
        fn = raw.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return NamedTool(fn["name"])
    raise ValueError("tool_choice must be auto, none, required or {'type': 'function', ...}")


def response_format_from_json(raw: object) -> ResponseFormat | None:
    """``json_schema`` formats (``text`` means none; ``json_object``: any object)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("response_format must be an object")
    kind = raw.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat(name="json_object", json_schema={"type": "object"}, strict=False)
    if kind == "json_schema":
        return ResponseFormat.of(raw)
    raise ValueError("response_format.type must be text, json_object or json_schema")


def message_from_json(msg: dict[str, Any], content: str) -> dict[str, Any]:
    """A message's tool fields, read into critpath's message fields (``content`` given)."""
    kept: dict[str, Any] = {"role": msg.get("role"), "content": content}
    if msg.get("name") is not None:
        kept["name"] = msg["name"]
    if msg.get("tool_call_id") is not None:
        kept["tool_call_id"] = msg["tool_call_id"]
    raw = msg.get("tool_calls")
    if raw:
        if not isinstance(raw, list):
            raise ValueError("tool_calls must be a list")
        calls = []
        for item in raw:
            fn = item.get("function") if isinstance(item, dict) else None
            if not isinstance(fn, dict) or not isinstance(item.get("id"), str):
                raise ValueError("a tool call needs an id and a function")
            args = fn.get("arguments") or "{}"
            decoded = json.loads(args) if isinstance(args, str) else args
            if not isinstance(decoded, dict):
                raise ValueError("a tool call's arguments must be a JSON object")
            calls.append(ToolCall(item["id"], str(fn.get("name")), decoded))
        kept["tool_calls"] = tuple(calls)
    return kept


def delta_json(deltas: Sequence[ToolCallDelta]) -> list[dict[str, Any]]:
    """Stream pieces as ``delta.tool_calls`` (as vLLM sends them)."""
    out = []
    for d in deltas:
        item: dict[str, Any] = {"index": d.index}
        fn: dict[str, Any] = {}
        if d.id is not None:
            item["id"] = d.id
            item["type"] = "function"
        if d.name is not None:
            fn["name"] = d.name
        fn["arguments"] = d.arguments
        item["function"] = fn
        out.append(item)
    return out


def calls_json(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """Whole calls as ``message.tool_calls``."""
    return [
        {"id": c.id, "type": "function",
         "function": {"name": c.name, "arguments": c.arguments_json()}}
        for c in calls
    ]  # fmt: skip
