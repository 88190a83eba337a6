"""Tools and typed answers for the in-process vLLM engine: guided decoding (pure code).

vLLM's engine has no tool-call parser of its own (the server's ``--tool-call-parser``
lives in its HTTP layer), so ``VLLMEngine`` does what vLLM's server does for forced
tool choices, with structured outputs (guided decoding: the sampler can only produce
text that follows a JSON schema):

- ``response_format``: the answer follows its schema;
- ``tool_choice`` ``NamedTool``: the text *is* that tool's JSON arguments, streamed as
  the call's argument fragments (so the call's arguments close mid-stream as usual);
- ``REQUIRED``: the text is a JSON array of ``{"name", "parameters"}`` objects, one
  per call, turned into calls when the message ends;
- ``AUTO`` / ``NONE``: the tools are rendered into the chat template and the model
  answers in text (no parsing of free-form calls here: use the HTTP adapter against a
  server started with ``--enable-auto-tool-choice --tool-call-parser ...`` for that).

``guided_plan(request)`` decides; ``GuidedCalls`` turns the guided text into
``ToolCallDelta``s; ``template_messages`` renders a conversation for a chat template.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from critpath.adapters.protocol import ModelRequest
from critpath.adapters.tools import NamedTool, ToolCallDelta, ToolMode
from critpath.errors import InvalidJSON

__all__ = ["GuidedCalls", "GuidedPlan", "guided_plan", "template_messages", "template_tools"]


@dataclass(frozen=True, slots=True)
class GuidedPlan:
    """The schema the engine must follow, and what its text is: the answer (``calls``
    ``None``), one named call's arguments, or an array of calls."""

    schema: dict[str, Any]
    named: str | None = None
    array: bool = False


def guided_plan(request: ModelRequest) -> GuidedPlan | None:
    choice = request.tool_choice
    if isinstance(choice, NamedTool):
        spec = request.tool(choice.name)
        assert spec is not None  # the request validated it
        return GuidedPlan(spec.parameters, named=spec.name)
    if choice is ToolMode.REQUIRED and request.tools:
        options = [
            {
                "type": "object",
                "properties": {"name": {"enum": [t.name]}, "parameters": t.parameters},
                "required": ["name", "parameters"],
            }
            for t in request.tools
        ]
        items: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
        schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": items}
        if request.parallel_tool_calls is False:
            schema["maxItems"] = 1
        return GuidedPlan(schema, array=True)
    if request.response_format is not None:
        return GuidedPlan(request.response_format.json_schema)
    return None


@dataclass(slots=True)
class GuidedCalls:
    """Guided text -> tool-call pieces (see the module docstring)."""

    plan: GuidedPlan
    model: str | None = None
    _buffer: list[str] = field(default_factory=list)
    _opened: bool = False

    @property
    def calls(self) -> bool:
        return self.plan.named is not None or self.plan.array

    def feed(self, text: str) -> tuple[ToolCallDelta, ...]:
        if self.plan.named is not None:
            out: list[ToolCallDelta] = []
            if not self._opened:
                self._opened = True
                out.append(ToolCallDelta(0, _call_id(), self.plan.named, ""))
            if text:
                out.append(ToolCallDelta(0, arguments=text))
            return tuple(out)
        self._buffer.append(text)
        return ()

    def finish(self) -> tuple[ToolCallDelta, ...]:
        if not self.plan.array:
            return ()
        raw = "".join(self._buffer)
        try:
            items = json.loads(raw)
        except ValueError as exc:
            raise InvalidJSON(f"the tool calls are not valid JSON ({exc})", output=raw,
                              model=self.model) from exc  # fmt: skip
        if not isinstance(items, list):
            raise InvalidJSON("the tool calls are not a JSON array", output=raw, model=self.model)
        out = []
        for k, item in enumerate(items):
            if not isinstance(item, dict):
                raise InvalidJSON("a tool call is not an object", output=raw, model=self.model)
            args = json.dumps(item.get("parameters", {}), separators=(",", ":"))
            out.append(ToolCallDelta(k, _call_id(), str(item.get("name", "")), args))
        return tuple(out)


def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def template_tools(request: ModelRequest) -> list[dict[str, Any]] | None:
    """The tools as Hugging Face chat templates take them (OpenAI's shape)."""
    if not request.tools:
        return None
    return [
        {"type": "function",
         "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in request.tools
    ]  # fmt: skip


def template_messages(request: ModelRequest) -> list[dict[str, Any]]:
    """The conversation for a chat template: tool calls with their arguments as objects
    (what templates expect), tool results with their ``tool_call_id``."""
    out = []
    for m in request.messages or ():
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.name is not None:
            msg["name"] = m.name
        if m.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]  # fmt: skip
        if m.tool_call_id is not None:
            msg["tool_call_id"] = m.tool_call_id
        out.append(msg)
    return out
