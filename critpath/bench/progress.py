"""A dependency-free progress bar on stderr (only when stderr is a terminal, or forced).

>>> bar = Progress(10, "demo", enabled=False)
>>> bar.advance(3); bar.done
3
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``total`` units of work; ``advance(n)`` redraws at most ~10 times a second."""

    def __init__(
        self,
        total: int,
        label: str = "",
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        width: int = 30,
    ) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self.done = 0
        self._drawn = 0.0
        self._start = time.monotonic()

    def advance(self, n: int = 1, label: str | None = None) -> None:
        self.done = min(self.total, self.done + n)
        if label is not None:
            self.label = label
        now = time.monotonic()
        if self.enabled and (now - self._drawn > 0.1 or self.done == self.total):
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        end = "\n" if self.done == self.total else ""
        took = now - self._start
        self.stream.write(
            f"\r[{bar}] {self.done}/{self.total} {self.label[:40]:<40} {took:5.1f}s{end}"
        )
        self.stream.flush()

    def close(self) -> None:
        """Finish the line (if drawn and not complete)."""
        if self.enabled and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()
