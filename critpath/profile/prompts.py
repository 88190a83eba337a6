"""Prompts of a given length in the server's tokens, and of a given kind.

The profiler does not know the server's tokenizer: it asks. ``PromptMaker.calibrate``
sends two one-token requests with prompts of different word counts and reads the
prompt-token counts the server reports (``usage``), a line through which maps tokens
to words. Texts are words drawn from a fixed list by a seeded generator:

- ``random``: words in random order (nothing to predict from the prompt);
- ``repetitive``: one short phrase repeated (an n-gram drafter can predict it);
- ``shared_prefix``: the same words every time for the same ``group``, so a server
  with prefix caching can reuse their KV cache.

Every text except a shared prefix opens with words of its own, so no two requests
share a cached prefix by accident; a ``nonce`` (the profiler draws a fresh one per
run) keeps a second run from hitting the cache the first one filled.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from critpath.profile.plan import TextKind

__all__ = ["PromptMaker", "TokenScale"]

_WORDS = (
    "able", "acid", "aged", "also", "area", "army", "away", "baby", "back", "ball", "band",
    "bank", "base", "bath", "bear", "beat", "bell", "belt", "best", "bird", "blow", "blue",
    "boat", "body", "bomb", "bond", "bone", "book", "boom", "born", "boss", "both", "bowl",
    "bulk", "burn", "bush", "busy", "call", "calm", "came", "camp", "card", "care", "case",
    "cash", "cast", "cell", "chat", "chip", "city", "club", "coal", "coat", "code", "cold",
    "come", "cook", "cool", "cope", "copy", "core", "cost", "crew", "crop", "dark", "data",
    "date", "dawn", "days", "dead", "deal", "dean", "dear", "debt", "deep", "deny", "desk",
    "dial", "diet", "disc", "disk", "does", "done", "door", "dose", "down", "draw", "drew",
    "drop", "drug", "dual", "duke", "dust", "duty", "each", "earn", "ease", "east", "easy",
    "edge", "else", "even", "ever", "evil", "exit", "face", "fact", "fail", "fair", "fall",
    "farm", "fast", "fate", "fear", "feed", "feel", "feet", "fell", "felt", "file", "fill",
    "film", "find", "fine", "fire", "firm", "fish", "five", "flat", "flow", "food", "foot",
    "ford", "form", "fort", "four", "free", "from", "fuel", "full", "fund", "gain", "game",
    "gate", "gave", "gear", "gene", "gift", "girl", "give", "glad", "goal", "goes", "gold",
    "golf", "gone", "good", "gray", "grew", "grey", "grow", "gulf", "hair", "half", "hall",
    "hand", "hang", "hard", "harm", "hate", "have", "head", "hear", "heat", "held", "hell",
    "help", "here", "hero", "high", "hill", "hire", "hold", "hole", "holy", "home", "hope",
    "host", "hour", "huge", "hung", "hunt",
)  # fmt: skip
_PHRASE = ("the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "and")


@dataclass(frozen=True, slots=True)
class TokenScale:
    """``tokens ~ intercept + per_word * words`` for this server's tokenizer."""

    intercept: float = 1.0
    per_word: float = 1.0

    def words_for(self, tokens: int) -> int:
        return max(1, round((tokens - self.intercept) / max(self.per_word, 1e-6)))


class PromptMaker:
    """Texts of about ``tokens`` server tokens (see the module docstring)."""

    def __init__(self, seed: int = 0, scale: TokenScale | None = None, nonce: str = "") -> None:
        self._key = f"{seed}-{nonce}"
        self._rng = random.Random(self._key)
        self.scale = scale or TokenScale()

    @staticmethod
    def calibration_words() -> tuple[int, int]:
        """The word counts of the two calibration prompts."""
        return 8, 64

    def random_words(self, n: int) -> str:
        return " ".join(self._rng.choice(_WORDS) for _ in range(n))

    def text(self, tokens: int, kind: TextKind = TextKind.RANDOM) -> str:
        """A fresh text of about ``tokens`` tokens, opening with words of its own."""
        words = self.scale.words_for(tokens)
        if kind is TextKind.REPETITIVE:
            head = min(words, 6)
            body = [_PHRASE[i % len(_PHRASE)] for i in range(words - head)]
            return " ".join([self.random_words(head), *body]).strip()
        return self.random_words(words)

    def shared_prefix(self, group: int, tokens: int) -> str:
        """The same text for the same ``group`` (and seed): a prefix to share."""
        rng = random.Random(f"{self._key}-prefix-{group}")
        return " ".join(rng.choice(_WORDS) for _ in range(self.scale.words_for(tokens)))
