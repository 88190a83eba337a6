"""A replica's prefix cache (vLLM's automatic prefix caching), simulated.

A server keeps the KV cache of the prompts it has seen in fixed-size blocks, each
identified by a hash of its tokens *and of every token before it*, so a block is
reused only when the whole prefix up to it matches. A new request whose leading
blocks are cached skips their prefill: its time to first token shrinks by their
tokens' share of the prefill cost. Blocks are evicted least recently used once
``capacity_blocks`` are held.

The simulation counts tokens as the simulated model does (four characters a token)
and renders a chat request as its messages in order (role and content), so a
conversation's next turn — the same messages plus the answer and a new question —
starts with the previous turn's blocks. After an answer, its own blocks are cached
too (``insert_answer``), as vLLM keeps the blocks of generated tokens.

``queries`` and ``hits`` count prompt tokens looked up and found, as vLLM's
``vllm:prefix_cache_queries_total`` and ``vllm:prefix_cache_hits_total`` do.

>>> cache = PrefixCache(capacity_blocks=100, block_tokens=4)
>>> cache.lookup("x" * 64)          # 16 tokens, nothing cached yet
0
>>> cache.lookup("x" * 64 + "y" * 8)  # the first 16 tokens are now cached
16
>>> cache.queries, cache.hits
(34, 16)
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from critpath.adapters.protocol import ModelRequest
from critpath.errors import ConfigError

__all__ = ["CHARS_PER_TOKEN", "PrefixCache", "answer_text", "prompt_text"]

CHARS_PER_TOKEN = 4
"""The simulated tokenizer: a token is four characters."""


def prompt_text(request: ModelRequest) -> str:
    """The prompt as the simulated server sees it: the messages rendered in order, or
    the completion prompt."""
    if request.messages is None:
        return request.prompt or ""
    return "".join(f"<|{m.role}|>{m.content}" for m in request.messages)


def answer_text(text: str) -> str:
    """How an answer appears in the next turn's prompt (an assistant message)."""
    return f"<|assistant|>{text}"


class PrefixCache:
    """Cached prompt blocks of one replica, LRU; see the module docstring."""

    def __init__(self, capacity_blocks: int, *, block_tokens: int = 16) -> None:
        if capacity_blocks < 1:
            raise ConfigError("PrefixCache: capacity_blocks must be >= 1")
        if block_tokens < 1:
            raise ConfigError("PrefixCache: block_tokens must be >= 1")
        self.capacity_blocks = capacity_blocks
        self.block_tokens = block_tokens
        self._blocks: OrderedDict[bytes, None] = OrderedDict()
        self.queries = 0
        self.hits = 0
        self.evictions = 0

    def empty_copy(self) -> PrefixCache:
        """A cache of the same shape, holding nothing."""
        return PrefixCache(self.capacity_blocks, block_tokens=self.block_tokens)

    def __len__(self) -> int:
        return len(self._blocks)

    def __repr__(self) -> str:
        return (
            f"PrefixCache(blocks={len(self._blocks)}/{self.capacity_blocks}, "
            f"block_tokens={self.block_tokens})"
        )

    def _hashes(self, text: str) -> list[bytes]:
        """The chained hashes of the full blocks of ``text``."""
        size = self.block_tokens * CHARS_PER_TOKEN
        out: list[bytes] = []
        h = b""
        for start in range(0, len(text) - size + 1, size):
            h = hashlib.blake2b(h + text[start : start + size].encode("utf-8", "replace"),
                                digest_size=16).digest()  # fmt: skip
            out.append(h)
        return out

    def lookup(self, text: str, tokens: int | None = None) -> int:
        """Tokens of ``text``'s prompt found cached (its leading full blocks); counts the
        query (``tokens``: the prompt's length, if the caller counts it otherwise), then
        caches every full block of ``text`` (as prefill would)."""
        if tokens is None:
            tokens = max(1, len(text) // CHARS_PER_TOKEN)
        hashes = self._hashes(text)
        matched = 0
        for h in hashes:
            if h not in self._blocks:
                break
            matched += 1
        cached = min(tokens, matched * self.block_tokens)
        self.queries += tokens
        self.hits += cached
        self._insert(hashes)
        return cached

    def insert(self, text: str) -> None:
        """Cache the full blocks of ``text`` (e.g. a prompt and the answer that followed)."""
        self._insert(self._hashes(text))

    def _insert(self, hashes: list[bytes]) -> None:
        for h in hashes:
            if h in self._blocks:
                self._blocks.move_to_end(h)
            else:
                self._blocks[h] = None
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)
            self.evictions += 1

    @property
    def hit_rate(self) -> float:
        """Hits / queries, in tokens (0 before any query)."""
        return self.hits / self.queries if self.queries else 0.0
