"""Tool calls and typed answers from simulated models.

A simulated model answers a request with tools or a ``response_format`` through a
``ToolScript``: given the request (the conversation so far), it returns the next
assistant turn — tool calls (``CallTools``) or an answer (``Say``) — or ``None`` for
the default behaviour:

- ``tool_choice`` ``NamedTool``: a call of that tool; ``REQUIRED``: of the first tool;
  ``AUTO``: of the first tool until the conversation holds a tool result, then an
  answer; ``NONE``: an answer.
- an answer to a ``response_format`` request is a schema-valid JSON object
  (``example_value``: enums, integers, booleans, strings, arrays, nested objects and
  ``$ref``s), else a plain sentence.

The turn becomes stream pieces (``plan_pieces``): each call a first piece with its id
and name, then its JSON arguments in token-sized fragments, so arguments take the
model's time per output token to stream, as on a real server. ``WavesScript`` is the
scripted agent of ``critpath bench agent``: waves of independent calls, one message
per wave (or one call per message without ``parallel_tool_calls``), then an answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from critpath.adapters.protocol import ModelRequest
from critpath.adapters.tools import NamedTool, ToolCallDelta, ToolMode

__all__ = [
    "CallTools",
    "PlannedCall",
    "Say",
    "ToolScript",
    "Turn",
    "WavesScript",
    "default_turn",
    "example_value",
    "plan_pieces",
]

_CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """A call a simulated model will make; ``tokens``: how many tokens its arguments
    stream as (default: about one per four characters of their JSON)."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class CallTools:
    calls: tuple[PlannedCall, ...]


@dataclass(frozen=True, slots=True)
class Say:
    text: str


Turn = CallTools | Say


class ToolScript(Protocol):
    """What a simulated model says next in a conversation with tools."""

    def turn(self, request: ModelRequest) -> Turn | None: ...


def _tool_turns(request: ModelRequest) -> int:
    return sum(1 for m in request.messages or () if m.role == "assistant" and m.tool_calls)


def _has_tool_result(request: ModelRequest) -> bool:
    return any(m.role == "tool" for m in request.messages or ())


def default_turn(request: ModelRequest, rng: random.Random) -> Turn | None:
    """The default behaviour (module docstring); ``None`` for a plain request."""
    choice = request.tool_choice
    tools = request.tools or ()
    if tools and choice is not ToolMode.NONE:
        target = None
        if isinstance(choice, NamedTool):
            target = request.tool(choice.name)
        elif choice is ToolMode.REQUIRED or not _has_tool_result(request):
            target = tools[0]
        if target is not None:
            args = example_value(target.parameters, rng)
            return CallTools((PlannedCall(target.name, args if isinstance(args, dict) else {}),))
    if request.response_format is not None:
        value = example_value(request.response_format.json_schema, rng)
        return Say(json.dumps(value, separators=(",", ":")))
    return None


def example_value(schema: Mapping[str, Any], rng: random.Random, *, _root: Any = None) -> Any:
    """A value valid under ``schema`` (the common JSON-schema subset pydantic writes)."""
    root = schema if _root is None else _root
    if "$ref" in schema:
        ref = str(schema["$ref"])
        target: Any = root
        for part in ref.removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return example_value(target, rng, _root=root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(list(schema["enum"]))
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if options:
            real = [o for o in options if o.get("type") != "null"] or options
            return example_value(real[0], rng, _root=root)
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: example_value(v, rng, _root=root) for k, v in props.items()}
    if kind == "array":
        n = max(int(schema.get("minItems", 1)), 1)
        return [example_value(schema.get("items") or {}, rng, _root=root) for _ in range(n)]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        return rng.randint(low, max(low, int(schema.get("maximum", low + 9))))
    if kind == "number":
        bottom = float(schema.get("minimum", 0.0))
        return round(rng.uniform(bottom, float(schema.get("maximum", bottom + 10.0))), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    words = ("alpha", "bravo", "delta", "kilo", "lima", "oscar", "tango")
    return " ".join(rng.choice(words) for _ in range(2))


def _fragments(text: str, tokens: int) -> list[str]:
    """``text`` in ``tokens`` pieces that join back to it, spread evenly (some empty
    when there are more tokens than characters): the last piece ends the text."""
    n = max(1, tokens)
    size = len(text)
    return [text[k * size // n : (k + 1) * size // n] for k in range(n)]


def plan_pieces(turn: Turn, request: ModelRequest) -> list[str | ToolCallDelta]:
    """The turn as stream pieces, one token each: text words, or tool-call deltas."""
    if isinstance(turn, Say):
        words = turn.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]
    pieces: list[str | ToolCallDelta] = []
    base = _tool_turns(request)
    for k, call in enumerate(turn.calls):
        call_id = f"call_{base}_{k}"
        pieces.append(ToolCallDelta(k, call_id, call.name, ""))
        args = json.dumps(dict(call.arguments), separators=(",", ":"))
        tokens = call.tokens if call.tokens is not None else -(-len(args) // _CHARS_PER_TOKEN)
        pieces.extend(ToolCallDelta(k, arguments=f) for f in _fragments(args, tokens))
    return pieces


@dataclass(frozen=True, slots=True)
class WavesScript:
    """A scripted agent: ``waves`` of independent calls, then ``answer``.

    With ``parallel_tool_calls`` (the default) a message calls a whole wave; without
    it, one call per message, wave after wave (ReAct). The turn is read from the
    conversation: how many assistant messages with tool calls it holds.
    """

    waves: Sequence[Sequence[PlannedCall]]
    answer: str = "Done: every tool has answered."

    def turn(self, request: ModelRequest) -> Turn | None:
        done = _tool_turns(request)
        if request.parallel_tool_calls is False:
            flat = [c for wave in self.waves for c in wave]
            return CallTools((flat[done],)) if done < len(flat) else Say(self.answer)
        if done < len(self.waves):
            return CallTools(tuple(self.waves[done]))
        return Say(self.answer)
