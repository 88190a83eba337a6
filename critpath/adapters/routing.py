"""Prefix-cache-aware routing: send a request where its prompt prefix is likely cached.

A server keeps the KV cache of the prompts it served, so a request whose prefix (the
system prompt, the conversation so far) was served by one replica is cheapest there:
its prefill is mostly skipped. ``PrefixRouter`` is the decision, apart from I/O:

1. The prompt is cut into blocks (``block_chars`` characters) and each block is
   identified by a hash chained over everything before it, so a block matches only
   when the whole prefix up to it does (as vLLM's prefix cache does).
2. The router remembers which replicas it sent each block to (an LRU table of at most
   ``max_blocks`` blocks: an approximation of the servers' caches, which evict too).
   The replicas holding the longest prefix of the request are its candidates; when no
   replica holds anything, every replica is.
3. Among the candidates one is chosen by consistent (rendezvous) hashing of the first
   block beyond the match: the same prefix goes to the same replica, different
   continuations of a shared prefix (conversations under one system prompt) spread
   over the replicas, and adding a replica moves only its share.
4. Bounded load (Mirrokni et al., consistent hashing with bounded loads): a replica
   may take a request only while its load, with it, is at most ``load_factor`` times
   the mean load with it (rounded up). When the chosen replica is
   over that bound, the least-loaded replica takes the request instead (preferring the
   longer match among equals), so a popular prefix cannot make a hot spot; that
   replica then holds the prefix too and shares later requests for it.

``Pool(strategy="prefix")`` uses it, reading each replica's load as the pool sees it.

>>> router = PrefixRouter(2, block_chars=4)
>>> first = router.choose(router.blocks_of("abcdefgh"), [0.0, 0.0])
>>> router.record(router.blocks_of("abcdefgh"), first)
>>> router.choose(router.blocks_of("abcdefghijkl"), [0.0, 0.0]) == first
True
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Collection, Sequence

from critpath.adapters.protocol import ModelRequest
from critpath.errors import ConfigError

__all__ = ["PrefixRouter", "prompt_of"]


def prompt_of(request: ModelRequest) -> str:
    """The text a request's prefix is made of: its messages in order (role and content)
    or its prompt."""
    if request.messages is None:
        return request.prompt or ""
    return "".join(f"<|{m.role}|>{m.content}" for m in request.messages)


def _score(block: bytes, replica: int) -> int:
    digest = hashlib.blake2b(block + replica.to_bytes(4, "little"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class PrefixRouter:
    """The routing decision for ``replicas`` replicas; see the module docstring."""

    def __init__(
        self,
        replicas: int,
        *,
        block_chars: int = 256,
        load_factor: float = 1.25,
        max_blocks: int = 200_000,
    ) -> None:
        if replicas < 1:
            raise ConfigError("PrefixRouter: replicas must be >= 1")
        if block_chars < 1:
            raise ConfigError("PrefixRouter: block_chars must be >= 1")
        if not load_factor >= 1.0:
            raise ConfigError("PrefixRouter: load_factor must be >= 1 (math.inf: unbounded)")
        if max_blocks < 1:
            raise ConfigError("PrefixRouter: max_blocks must be >= 1")
        self.replicas = replicas
        self.block_chars = block_chars
        self.load_factor = load_factor
        self.max_blocks = max_blocks
        self._holders: OrderedDict[bytes, int] = OrderedDict()  # block -> bitmask of replicas
        self.routed = 0
        self.spilled = 0
        """Requests sent away from their chosen replica because it was over the bound."""

    def blocks_of(self, text: str) -> list[bytes]:
        """The chained hashes of ``text``'s blocks (a last, partial block included)."""
        out: list[bytes] = []
        h = b""
        for start in range(0, len(text), self.block_chars):
            chunk = text[start : start + self.block_chars].encode("utf-8", "replace")
            h = hashlib.blake2b(h + chunk, digest_size=16).digest()
            out.append(h)
        return out or [hashlib.blake2b(b"", digest_size=16).digest()]

    def matched(self, blocks: Sequence[bytes], replica: int) -> int:
        """How many leading ``blocks`` the router believes ``replica`` holds."""
        bit = 1 << replica
        n = 0
        for b in blocks:
            if not self._holders.get(b, 0) & bit:
                break
            n += 1
        return n

    def choose(
        self, blocks: Sequence[bytes], loads: Sequence[float], exclude: Collection[int] = ()
    ) -> int:
        """The replica for a request of ``blocks``, given each replica's ``loads``."""
        allowed = [i for i in range(self.replicas) if i not in exclude] or list(
            range(self.replicas)
        )
        depth = {i: self.matched(blocks, i) for i in allowed}
        best = max(depth.values())
        candidates = [i for i in allowed if depth[i] == best]
        key = blocks[min(best, len(blocks) - 1)]
        owner = max(candidates, key=lambda i: _score(key, i))
        total = sum(max(0.0, loads[i]) for i in allowed)
        self.routed += 1
        if math.isinf(self.load_factor):
            return owner
        bound = math.ceil(self.load_factor * (total + 1) / len(allowed))
        if loads[owner] + 1 <= bound:
            return owner
        self.spilled += 1
        return min(allowed, key=lambda i: (loads[i], -depth[i], -_score(key, i)))

    def record(self, blocks: Sequence[bytes], replica: int) -> None:
        """``replica`` was sent ``blocks``: it holds them now (as far as we know)."""
        bit = 1 << replica
        for b in blocks:
            self._holders[b] = self._holders.get(b, 0) | bit
            self._holders.move_to_end(b)
        while len(self._holders) > self.max_blocks:
            self._holders.popitem(last=False)
