"""``WrapperModel``, the base of every model made of models, and the silent loggers.

Every policy and strategy (pool, hedge, metering, seeded samples, vote, cascade,
refine) is a ``WrapperModel``: one name, the models it wraps, its leaves, and a
``stream`` of its own; the base passes a request through unchanged by default.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

import pytest
from scripted import Scripted

from critpath.adapters import Chunk, Model, ModelRequest, Pool, complete, make_request
from critpath.adapters.hedge import Hedge
from critpath.adapters.logs import ROOT, get_logger
from critpath.adapters.wrapper import WrapperModel
from critpath.cascades import Cascade, Decider, Refine, Seeded, Tier, Vote
from critpath.errors import ConfigError
from critpath.strategies.evaluate import Metered

REQ = make_request(messages="hi", max_tokens=8, seed=3)


def test_every_policy_and_strategy_is_a_wrapper_model() -> None:
    a, b = Scripted("a", open_gate=True), Scripted("b", open_gate=True)
    wrappers: list[WrapperModel] = [
        Pool([a, b]),
        Hedge([a, b]),
        Metered(a),
        Seeded(a, 1),
        Vote([a, b]),
        Cascade([Tier(a), Tier(b)]),
        Refine(a, b),
    ]
    for w in wrappers:
        assert isinstance(w, Model)
        assert [m.name for m in w.leaves()] in (["a", "b"], ["a"])
    assert isinstance(wrappers[4], Decider)
    assert isinstance(wrappers[5], Decider)
    assert not isinstance(wrappers[6], Decider)


def test_names_leaves_and_configuration() -> None:
    a, b = Scripted("a"), Scripted("b")
    assert WrapperModel(a).name == "a"
    assert WrapperModel([a, b], name="both").name == "both"
    assert repr(WrapperModel([a, b], name="both")) == "WrapperModel('both', wrapping=[a, b])"
    nested = Cascade([Tier(Vote([Metered(a), Seeded(b, 0)])), Tier(Refine(a, b))])
    assert [m.name for m in nested.leaves()] == ["a", "b", "a", "b"]
    assert nested.name == "cascade(vote(a,b#seed0)>refine(a->b))"
    with pytest.raises(ConfigError, match="needs at least one model"):
        WrapperModel([])


async def test_the_default_stream_passes_the_request_through_unchanged() -> None:
    inner = Scripted("inner", open_gate=True)
    assert (await complete(WrapperModel(inner), REQ)).text == "Hello hedged world."
    assert inner.calls[0].request is REQ

    class Reseed(WrapperModel):  # a wrapper writes only its own logic
        def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
            return self.wrapped[0].stream(request.model_copy(update={"seed": 9}))

    await complete(Reseed(inner), REQ)
    assert inner.calls[1].request.seed == 9
    await complete(Seeded(inner, 4), REQ)
    assert inner.calls[2].request.seed == 4


def test_critpath_loggers_are_silent_by_default() -> None:
    root = logging.getLogger(ROOT)
    assert any(isinstance(h, logging.NullHandler) for h in root.handlers)
    assert get_logger("critpath.adapters.hedge") is logging.getLogger("critpath.adapters.hedge")
    with pytest.raises(ValueError, match=r"critpath\.<module>"):
        get_logger("somewhere.else")
