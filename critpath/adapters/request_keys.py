"""Canonical request keys: which requests are the same question, for caches and coalescing.

The key of a request is the digest of what determines its answer: the model's name, the
messages (role, content, name, tool calls and tool results) or the prompt,
``max_tokens``, the sampling fields that are set (temperature, top_p, seed, stop),
logprobs, the tools, tool choice and ``response_format`` (as the wire sends them), and
``extra_body`` (server-specific sampling such as ``top_k``). Never the
``request_id``, ``priority`` or ``timeout``: they change how a request is served, not
what it answers.

A request is *deterministic* when its temperature is 0 or it carries a seed: only then
may two identical requests share one answer, unless the user says otherwise.

>>> from critpath.adapters.protocol import make_request
>>> a = make_request(messages="hi", temperature=0, request_id="a", priority=1)
>>> b = make_request(messages="hi", temperature=0, request_id="b", timeout=3.0)
>>> request_key("m", a) == request_key("m", b)
True
>>> request_key("m", a) == request_key("other", a)
False
>>> is_deterministic(make_request(messages="hi")), is_deterministic(a)
(False, True)
"""

from __future__ import annotations

from typing import Any

from critpath.adapters.openai_tools import message_json, request_fields
from critpath.adapters.protocol import ModelRequest
from critpath.caching.keys import digest

__all__ = ["KEY_VERSION", "is_deterministic", "request_key", "request_key_fields"]

KEY_VERSION = "critpath.request.v2"
"""Namespace of request keys; changes when the key's content does."""


def request_key_fields(model: str, request: ModelRequest) -> dict[str, Any]:
    """What the key is made of, as plain JSON-able data."""
    fields: dict[str, Any] = {"model": model, "max_tokens": request.max_tokens}
    if request.messages is not None:
        fields["messages"] = [message_json(m) for m in request.messages]
    else:
        fields["prompt"] = request.prompt
    fields["sampling"] = request.sampling()
    if request.logprobs:
        fields["logprobs"] = request.top_logprobs or 0
    fields.update(request_fields(request))  # tools, tool choice, response format
    if request.extra_body:
        fields["extra_body"] = request.extra_body
    return fields


def request_key(model: str, request: ModelRequest, *, namespace: str = "") -> str:
    """The request's canonical key (hex SHA-256); ``namespace`` separates caches."""
    return digest(request_key_fields(model, request), namespace=f"{KEY_VERSION}:{namespace}")


def is_deterministic(request: ModelRequest) -> bool:
    """Temperature 0 or a seed: the same request gets the same answer."""
    return request.temperature == 0 or request.seed is not None
