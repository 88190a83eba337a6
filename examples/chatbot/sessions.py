"""The chat service's conversations: a bounded history per session, kept in memory.

A client names its conversation with a session id of its own choosing (the page draws
a random one); each answered turn (the user's message and the final answer) is added
to that session's history, and the next turn is sent to the models as the whole
history followed by the new message — so the prompt's prefix grows turn by turn, the
workload that prefix-aware routing (``Pool(strategy="prefix")``) serves.

Nothing grows without bound:

- **count**: at most ``max_sessions`` sessions; a new one evicts the least recently
  used;
- **length**: a history keeps at most ``max_turns`` turns and ``max_chars`` characters
  (messages and answers together); the oldest turns are dropped to fit;
- **age**: a session not used for ``ttl`` seconds is forgotten.

A turn enters the history when its answer is final (``Session.add``); a turn that is
stopped, cut off or failed leaves the history as it was. Two turns of one session may
run at once (e.g. a new question right after Stop): each sees the history as it was
when it began, and each is added when it ends.

The store is in memory, one per process: behind several processes (Ray Serve
replicas, ``python -m examples.chatbot --ray``) a session's turns must reach the same
process (session affinity) to see their history; a shared store is not built.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from critpath.adapters import Message

__all__ = ["SESSION_ID", "Session", "SessionStore", "Turn"]

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
"""What a session id looks like: 8 to 64 letters, digits, ``_`` or ``-``."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One answered turn: the user's ``message`` and the final ``answer``."""

    message: str
    answer: str

    @property
    def chars(self) -> int:
        return len(self.message) + len(self.answer)


class Session:
    """One conversation's history (``turns``, oldest first), bounded by its store's
    ``max_turns`` and ``max_chars``."""

    def __init__(self, session_id: str, *, max_turns: int, max_chars: int, now: float) -> None:
        self.id = session_id
        self.turns: deque[Turn] = deque()
        self.used = now
        self._max_turns = max_turns
        self._max_chars = max_chars
        self._chars = 0

    @property
    def chars(self) -> int:
        """Characters in the history (messages and answers)."""
        return self._chars

    def messages(self, message: str) -> tuple[Message, ...]:
        """The history as chat messages, then ``message`` (the new turn's question)."""
        out: list[Message] = []
        for turn in self.turns:
            out.append(Message(role="user", content=turn.message))
            out.append(Message(role="assistant", content=turn.answer))
        out.append(Message(role="user", content=message))
        return tuple(out)

    def add(self, message: str, answer: str) -> None:
        """Add an answered turn, dropping the oldest turns beyond the bounds (a turn
        longer than ``max_chars`` on its own is not kept)."""
        turn = Turn(message, answer)
        self.turns.append(turn)
        self._chars += turn.chars
        while self.turns and (len(self.turns) > self._max_turns or self._chars > self._max_chars):
            self._chars -= self.turns.popleft().chars


class SessionStore:
    """Sessions by id, in memory, bounded in count, length and age (see the module
    doc). ``clock``: seconds, monotonic (``time.monotonic`` by default)."""

    def __init__(
        self,
        *,
        max_sessions: int = 1000,
        max_turns: int = 20,
        max_chars: int = 16_000,
        ttl: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_sessions < 1 or max_turns < 1 or max_chars < 1:
            raise ValueError("max_sessions, max_turns and max_chars must be >= 1")
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
        self.max_sessions = max_sessions
        self.max_turns = max_turns
        self.max_chars = max_chars
        self.ttl = ttl
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def get(self, session_id: str) -> Session:
        """The session ``session_id`` (a new, empty one if unknown or expired), marked
        as used now. ``ValueError`` if the id is not a ``SESSION_ID``."""
        if not SESSION_ID.fullmatch(session_id):
            raise ValueError("the session id must be 8 to 64 letters, digits, '_' or '-'")
        now = self._clock()
        self.expire(now)
        session = self._sessions.pop(session_id, None)
        if session is None:
            session = Session(session_id, max_turns=self.max_turns, max_chars=self.max_chars,
                              now=now)  # fmt: skip
            while len(self._sessions) >= self.max_sessions:
                self._sessions.popitem(last=False)
        session.used = now
        self._sessions[session_id] = session
        return session

    def expire(self, now: float | None = None) -> int:
        """Forget the sessions unused for ``ttl`` seconds; how many were forgotten."""
        cutoff = (self._clock() if now is None else now) - self.ttl
        gone = 0
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.used > cutoff:
                break
            self._sessions.popitem(last=False)
            gone += 1
        return gone
