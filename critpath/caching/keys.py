"""Canonical keys: the same content always gives the same key, whatever its order.

``digest(value)`` is the SHA-256 of ``value`` written as canonical JSON (keys sorted,
no spaces, tuples as lists), prefixed by a namespace. Values that JSON cannot write
(objects, sets...) raise ``ConfigError``: a key that silently depended on ``repr``
could make two different inputs collide, or equal inputs miss.

>>> digest({"b": 1, "a": (1, 2)}) == digest({"a": [1, 2], "b": 1})
True
>>> digest({"a": 1}) == digest({"a": 1}, namespace="v2")
False
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from critpath.errors import ConfigError

__all__ = ["canonical_json", "digest"]


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON (sorted keys, compact); ``ConfigError`` if it cannot be."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot make a cache key of {type(value).__name__}: {exc}") from exc


def digest(value: Any, *, namespace: str = "") -> str:
    """The hex SHA-256 of ``namespace`` and ``value``'s canonical JSON."""
    h = hashlib.sha256(namespace.encode())
    h.update(b"\0")
    h.update(canonical_json(value).encode("utf-8", "surrogatepass"))
    return h.hexdigest()
