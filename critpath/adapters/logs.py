"""critpath's loggers: ``logging.getLogger("critpath.<module>")``, silent by default.

Like httpx, critpath logs through the standard ``logging`` module and prints nothing
unless the application configures logging: the ``critpath`` logger carries a
``NullHandler`` (installed when this module is imported; every module that logs
imports it). Turn a part on with e.g.
``logging.getLogger("critpath.adapters").setLevel(logging.DEBUG)`` and a handler.

What is logged, by logger:

- ``critpath.adapters.openai_http``: INFO a retry (model, request id, attempt, the
  error that caused it, seconds waited) and giving up after retries; DEBUG a stream
  closed before its end because its reader cancelled or closed it (the server sees
  the disconnect and aborts the request).
- ``critpath.adapters.hedge``: DEBUG a hedge fired (after how long, on which replica),
  refused by the budget, a failover, and which copy won.
- ``critpath.adapters.pool``: DEBUG the replica chosen for each request and load
  probes that failed.
- ``critpath.cascades.cascade``: DEBUG each escalation (tier, confidence, reason) and
  the tier that answered; ``critpath.cascades.vote``: DEBUG an early-quorum stop.

Never logged: API keys and request headers (the adapter keeps them out of every
message and of its ``repr``), prompts and answers.
"""

from __future__ import annotations

import logging

__all__ = ["ROOT", "get_logger"]

ROOT = "critpath"
"""The name of the logger every critpath logger descends from."""

_root = logging.getLogger(ROOT)
if not any(isinstance(h, logging.NullHandler) for h in _root.handlers):
    _root.addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """The logger of module ``name`` (pass ``__name__``: ``critpath.<module>``)."""
    if name != ROOT and not name.startswith(ROOT + "."):
        raise ValueError(f"critpath loggers are named critpath.<module>, got {name!r}")
    return logging.getLogger(name)
