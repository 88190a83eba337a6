"""``Tool``: a plain async function an agent may call, its arguments typed and validated.

The function's parameters (their annotations and defaults) are the tool's JSON-schema
parameters (``critpath.adapters.tools.ToolSpec``); its docstring's first paragraph
describes it to the model. The arguments a model sends are validated with pydantic
before the function runs: a bad argument is a ``SchemaMismatch`` (the agent loop sends
it back to the model as the tool's result, it does not crash the run).

``side_effects=True`` marks a tool that must not run speculatively: the agent loop
starts it only once the model's whole message has arrived intact, never while the
message still streams (a stream that fails later would have run it for nothing).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, overload

from pydantic import BaseModel, ValidationError

from critpath.adapters.tools import ToolSpec, describe_validation
from critpath.errors import ConfigError, SchemaMismatch

__all__ = ["Tool", "tool"]


class Tool:
    """An async function the model may call; see the module docstring."""

    def __init__(
        self,
        fn: Callable[..., Awaitable[Any]],
        *,
        name: str | None = None,
        description: str | None = None,
        side_effects: bool = False,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"a tool is an async function; {fn!r} is not")
        self.fn = fn
        self.spec = ToolSpec.from_function(fn, name=name, description=description)
        self.side_effects = side_effects

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def arguments_model(self) -> type[BaseModel]:
        model = self.spec.arguments
        assert model is not None  # built from a function
        return model

    def __repr__(self) -> str:
        extra = ", side_effects=True" if self.side_effects else ""
        return f"Tool({self.name!r}{extra})"

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The typed keyword arguments (``SchemaMismatch`` says what is wrong)."""
        model = self.arguments_model
        try:
            parsed = model.model_validate(dict(arguments))
        except ValidationError as exc:
            raise SchemaMismatch(
                f"bad arguments for {self.name}: {describe_validation(exc)}", tool=self.name
            ) from exc
        return {field: getattr(parsed, field) for field in model.model_fields}

    async def __call__(self, arguments: Mapping[str, Any]) -> Any:
        """Validate ``arguments`` and run the function with them."""
        return await self.fn(**self.validate(arguments))


@overload
def tool(fn: Callable[..., Awaitable[Any]], /) -> Tool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None, side_effects: bool = False
) -> Callable[[Callable[..., Awaitable[Any]]], Tool]: ...


def tool(
    fn: Callable[..., Awaitable[Any]] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    side_effects: bool = False,
) -> Tool | Callable[[Callable[..., Awaitable[Any]]], Tool]:
    """Make an async function a ``Tool``: ``@tool`` or ``@tool(side_effects=True)``."""

    def wrap(f: Callable[..., Awaitable[Any]]) -> Tool:
        return Tool(f, name=name, description=description, side_effects=side_effects)

    return wrap(fn) if fn is not None else wrap
