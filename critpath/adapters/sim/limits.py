"""What ``critpath sim-server`` refuses before a model sees it: prompts past a model's
context window (a 400 with vLLM's message, per model), like vLLM's
``--max-model-len``. Prompt tokens are counted as the simulated models count them
(about four characters a token).
"""

from __future__ import annotations

from collections.abc import Mapping

from critpath.adapters.protocol import ModelRequest
from critpath.adapters.sim.wire import APIError
from critpath.errors import ConfigError

__all__ = ["DEFAULT_MAX_MODEL_LEN", "ContextLimits", "prompt_tokens"]

DEFAULT_MAX_MODEL_LEN = 32768


def prompt_tokens(request: ModelRequest) -> int:
    """The simulated tokenizer's count of ``request``'s prompt."""
    if request.messages is not None:
        chars = sum(len(m.content) for m in request.messages)
    else:
        chars = len(request.prompt or "")
    return max(1, chars // 4)


class ContextLimits:
    """Each model's context window (``default`` for models not named in ``per_model``)."""

    def __init__(
        self, default: int = DEFAULT_MAX_MODEL_LEN, per_model: Mapping[str, int] | None = None
    ) -> None:
        self.default = default
        self.per_model = dict(per_model or {})
        if any(v < 1 for v in (default, *self.per_model.values())):
            raise ConfigError("a context length must be >= 1 token")

    def of(self, model: str) -> int:
        return self.per_model.get(model, self.default)

    def check(self, model: str, request: ModelRequest, *, completion: bool = True) -> None:
        """``APIError(400)`` (vLLM's wording) when the prompt plus ``max_tokens`` does not
        fit (``completion=False``: the client set no ``max_tokens``; the prompt alone must
        leave room for one token, as vLLM then fills the rest of the window)."""
        limit = self.of(model)
        prompt = prompt_tokens(request)
        total = prompt + (request.max_tokens if completion else 1)
        if total > limit:
            raise APIError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {total} tokens ({prompt} in the messages, {total - prompt} "
                "in the completion). Please reduce the length of the messages or completion.",
                param="messages" if request.is_chat else "prompt",
            )
