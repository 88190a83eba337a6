"""``WrapperModel``: the base of every model made of other models.

A policy (``Pool``, ``Hedge``, metering) or a strategy (``Vote``, ``Cascade``,
``Refine``) is a ``Model`` over other models, so they compose like middleware
(pydantic-ai's ``WrapperModel``, Starlette's middleware). What they share lives here
once: the ``wrapped`` models, the ``name`` (given, else the first wrapped model's),
``leaves()`` and a ``repr``. A wrapper writes only its own logic: ``stream`` as an
async generator (``async def stream(self, request): ... yield chunk``). The default
``stream`` passes the request through to the one wrapped model unchanged.

A wrapper keeps nothing per request on itself: everything a call produces (its
answer, a cascade's escalations, a vote's ballots) is returned by that call, so
concurrent calls on one object never see each other's results. Aggregate counters
(``statistics()``, learned latencies) are the exception: they describe the object.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Sequence

from critpath.adapters.protocol import Chunk, Model, ModelRequest
from critpath.errors import ConfigError

__all__ = ["WrapperModel"]


class WrapperModel:
    """A ``Model`` over ``wrapped`` models (one or several); see the module docstring."""

    def __init__(self, wrapped: Model | Sequence[Model], *, name: str | None = None) -> None:
        models = tuple(wrapped) if isinstance(wrapped, Sequence) else (wrapped,)
        if not models:
            raise ConfigError(f"a {type(self).__name__} needs at least one model")
        self.wrapped: tuple[Model, ...] = models
        self._name = name or models[0].name

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        inner = ", ".join(m.name for m in self.wrapped)
        return f"{type(self).__name__}({self._name!r}, wrapping=[{inner}])"

    def leaves(self) -> Iterator[Model]:
        """The models at the bottom of this wrapper (wrappers inside it unwrapped), in order."""
        for model in self.wrapped:
            if isinstance(model, WrapperModel):
                yield from model.leaves()
            else:
                yield model

    def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        """Pass ``request`` to the wrapped model (the first, if several) unchanged."""
        return self.wrapped[0].stream(request)
