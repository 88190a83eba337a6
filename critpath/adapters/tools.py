"""Tools and typed answers in the model protocol: what a request offers, what a model calls.

- ``ToolSpec``: one function a model may call (name, description, JSON-schema
  ``parameters``), built from a typed Python function (``ToolSpec.from_function``) or a
  pydantic model (``ToolSpec.from_model``); it validates the arguments a model sends.
- ``ToolChoice``: ``ToolMode.AUTO`` / ``NONE`` / ``REQUIRED``, or ``NamedTool(name)``
  (one function, forced) — an enum or a typed value, never a loose string.
- ``ResponseFormat``: the JSON schema an answer must follow, from a pydantic model class
  (``Completion.parsed`` is then the validated object) or a JSON schema.
- ``ToolCall``: a whole call (``id``, ``name``, ``arguments`` as a dict);
  ``ToolCallDelta``: one streamed piece of a call (``index``, ``id``, ``name``, an
  ``arguments`` fragment), as OpenAI and vLLM stream them (``critpath.adapters.toolcalls``
  assembles them and says when each call's arguments are complete).

Validation failures are typed (``critpath.errors.InvalidOutput``: ``InvalidJSON``,
``SchemaMismatch``), with a ``feedback`` text to give back to the model.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from critpath.errors import ConfigError, InvalidJSON, SchemaMismatch

__all__ = [
    "NamedTool",
    "ResponseFormat",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolMode",
    "ToolSpec",
    "arguments_model",
    "describe_validation",
]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolMode(StrEnum):
    """Whether the model may, must or must not call a tool."""

    AUTO = "auto"
    """The model decides (answer, or call tools)."""
    NONE = "none"
    """No tool calls: answer in text."""
    REQUIRED = "required"
    """At least one tool call."""


@dataclass(frozen=True, slots=True)
class NamedTool:
    """Force a call of this one function."""

    name: str


ToolChoice = ToolMode | NamedTool
"""``ToolMode`` or ``NamedTool``: how a request lets the model use its tools."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One complete tool call of a model's message. ``arguments`` is the decoded JSON
    object (validated against the tool's schema where the caller asked for it)."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A streamed piece of a tool call: ``index`` orders the calls of one message; the
    first piece of a call carries its ``id`` and ``name``; ``arguments`` is the next
    fragment of the JSON arguments (possibly empty)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


def describe_validation(exc: ValidationError) -> str:
    """A pydantic validation error in a few words a model can act on."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    return schema


def _first_paragraph(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def arguments_model(fn: Callable[..., Any], name: str | None = None) -> type[BaseModel]:
    """A pydantic model of ``fn``'s parameters (their annotations and defaults), which
    refuses unknown arguments. Every parameter needs an annotation (``ConfigError``);
    ``Annotated[int, Field(description=...)]`` documents one for the model."""
    fname = name or getattr(fn, "__name__", "tool")
    try:
        hints = get_type_hints(fn, include_extras=True)
        sig = inspect.signature(fn)
    except (NameError, TypeError, ValueError) as exc:
        raise ConfigError(f"cannot read the parameters of tool {fname!r}: {exc}") from exc
    fields: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise ConfigError(f"tool {fname!r}: parameter {p.name!r} must be a named parameter")
        if p.name not in hints:
            raise ConfigError(f"tool {fname!r}: parameter {p.name!r} needs a type annotation")
        fields[p.name] = (hints[p.name], ... if p.default is p.empty else p.default)
    model: type[BaseModel] = create_model(
        f"{fname}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


class ToolSpec(BaseModel):
    """A function a model may call: ``name``, ``description``, JSON-schema ``parameters``.

    ``arguments`` (when built from a function or a model) validates what the model
    sends; a spec from a bare schema checks only that the arguments are a JSON object
    holding the schema's ``required`` keys.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str
    description: str = ""
    parameters: dict[str, Any]
    strict: bool = False
    arguments: type[BaseModel] | None = None

    def model_post_init(self, __context: Any) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"a tool name is 1-64 letters, digits, _ or -: {self.name!r}")

    @classmethod
    def from_function(
        cls, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None
    ) -> ToolSpec:
        """The spec of a typed Python function (its docstring's first paragraph describes it)."""
        fname = str(name or getattr(fn, "__name__", ""))
        model = arguments_model(fn, fname)
        desc = _first_paragraph(fn) if description is None else description
        return cls(name=fname, description=desc, parameters=_schema_of(model), arguments=model)

    @classmethod
    def from_model(
        cls, model: type[BaseModel], *, name: str | None = None, description: str | None = None
    ) -> ToolSpec:
        """The spec of a function whose arguments are the fields of ``model``."""
        desc = _first_paragraph(model) if description is None else description
        return cls(
            name=name or model.__name__,
            description=desc,
            parameters=_schema_of(model),
            arguments=model,
        )

    @classmethod
    def of(cls, tool: ToolSpec | type[BaseModel] | Callable[..., Any]) -> ToolSpec:
        """A spec from a spec, a pydantic model class or a typed function."""
        if isinstance(tool, ToolSpec):
            return tool
        spec = getattr(tool, "spec", None)
        if isinstance(spec, ToolSpec):  # e.g. a critpath.agents.Tool
            return spec
        if isinstance(tool, type) and issubclass(tool, BaseModel):
            return cls.from_model(tool)
        if callable(tool):
            return cls.from_function(tool)
        raise ConfigError(f"not a tool: {tool!r} (give a typed function, a model or a ToolSpec)")

    def validate_arguments(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments as given, once validated (``SchemaMismatch`` says what is wrong)."""
        if self.arguments is not None:
            try:
                self.arguments.model_validate(dict(arguments))
                return dict(arguments)
            except ValidationError as exc:
                raise SchemaMismatch(
                    f"the arguments of {self.name} do not validate: {describe_validation(exc)}",
                    output=json.dumps(dict(arguments)),
                    tool=self.name,
                ) from exc
        missing = [k for k in self.parameters.get("required", ()) if k not in arguments]
        if missing:
            raise SchemaMismatch(
                f"the arguments of {self.name} lack required fields {missing}",
                output=json.dumps(dict(arguments)),
                tool=self.name,
            )
        return dict(arguments)


class ResponseFormat(BaseModel):
    """The JSON schema an answer must follow (``name``, ``json_schema``), and the pydantic
    ``model`` that validates it when the format was built from one."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str = "answer"
    json_schema: dict[str, Any]
    strict: bool = True
    model: type[BaseModel] | None = None

    @classmethod
    def of(cls, value: ResponseFormat | type[BaseModel] | Mapping[str, Any]) -> ResponseFormat:
        """From a format, a pydantic model class, a JSON schema, or OpenAI's
        ``{"type": "json_schema", "json_schema": {"name", "schema"}}``."""
        if isinstance(value, ResponseFormat):
            return value
        if isinstance(value, type) and issubclass(value, BaseModel):
            return cls(name=value.__name__, json_schema=_schema_of(value), model=value)
        if isinstance(value, Mapping):
            if value.get("type") == "json_schema" and isinstance(value.get("json_schema"), Mapping):
                inner = value["json_schema"]
                schema = inner.get("schema")
                if not isinstance(schema, Mapping):
                    raise ConfigError("response_format.json_schema needs a 'schema' object")
                return cls(
                    name=str(inner.get("name") or "answer"),
                    json_schema=dict(schema),
                    strict=bool(inner.get("strict", True)),
                )
            return cls(json_schema=dict(value))
        raise ConfigError(f"not a response format: {value!r} (give a pydantic model or a schema)")

    def parse(self, text: str, *, model_name: str | None = None) -> Any:
        """The answer ``text`` decoded and validated: an instance of ``model``, or (from a
        bare schema) the decoded object. ``InvalidJSON`` / ``SchemaMismatch`` otherwise."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidJSON(
                f"the answer is not valid JSON ({exc}); answer with one JSON object that "
                f"follows the schema {self.name}",
                output=text,
                model=model_name,
            ) from exc
        if self.model is not None:
            try:
                return self.model.model_validate(data)
            except ValidationError as exc:
                raise SchemaMismatch(
                    f"the answer does not follow the schema {self.name}: "
                    f"{describe_validation(exc)}",
                    output=text,
                    model=model_name,
                ) from exc
        if self.json_schema.get("type") == "object":
            if not isinstance(data, dict):
                raise SchemaMismatch(
                    f"the answer must be a JSON object (schema {self.name})",
                    output=text,
                    model=model_name,
                )
            missing = [k for k in self.json_schema.get("required", ()) if k not in data]
            if missing:
                raise SchemaMismatch(
                    f"the answer lacks the required fields {missing} (schema {self.name})",
                    output=text,
                    model=model_name,
                )
        return data
