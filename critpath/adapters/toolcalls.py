"""Streamed tool calls assembled, each announced the moment its arguments are complete.

A model streams a message's tool calls as ``ToolCallDelta``s: the first piece of each
call carries its ``index``, ``id`` and ``name``, later pieces fragments of its JSON
arguments. ``ToolCallAssembler`` joins them and, fed one chunk at a time, returns each
call as soon as its arguments form a complete JSON object — while the model still
streams the rest of the message, and before the next call of the same message begins
(LLMCompiler-style: a tool can start then). A call whose arguments are not a JSON object
comes back as a ``BrokenCall`` carrying a typed ``InvalidJSON``, so one bad call does
not hide the good ones.

``ArgumentsScanner`` is the incremental part: it follows JSON strings, escapes and
nesting and says when the top-level object closes. Pure code, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from critpath.adapters.tools import ToolCall, ToolCallDelta
from critpath.errors import InvalidJSON, InvalidOutput

__all__ = ["ArgumentsScanner", "BrokenCall", "ClosedCall", "ToolCallAssembler"]


class ArgumentsScanner:
    """Follows a JSON object as its text arrives; ``closed`` once the object is complete.

    >>> s = ArgumentsScanner()
    >>> s.feed('{"q": "a}b", "n": [1, {')
    False
    >>> s.feed('}]}')
    True
    """

    __slots__ = ("_depth", "_escape", "_in_string", "_started", "closed", "invalid")

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._started = False
        self.closed = False
        self.invalid = False
        """Text that cannot begin a JSON object arrived (the call is broken)."""

    def feed(self, text: str) -> bool:
        """Scan ``text``; ``True`` once the top-level object has closed."""
        if self.closed or self.invalid:
            return self.closed
        for ch in text:
            if not self._started:
                if ch.isspace():
                    continue
                if ch != "{":
                    self.invalid = True
                    return False
                self._started = True
                self._depth = 1
                continue
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self.closed = True
                    return True
        return False


@dataclass(frozen=True, slots=True)
class BrokenCall:
    """A tool call whose arguments are not a JSON object: ``error`` says why."""

    index: int
    id: str
    name: str
    raw: str
    error: InvalidOutput


ClosedCall = ToolCall | BrokenCall
"""What the assembler hands out for each call: the call, or why it is broken."""


@dataclass(slots=True)
class _Pending:
    index: int
    id: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)
    scanner: ArgumentsScanner = field(default_factory=ArgumentsScanner)
    done: bool = False


class ToolCallAssembler:
    """Joins ``ToolCallDelta``s into calls; see the module docstring.

    ``feed(deltas)`` returns the calls completed by these pieces (arguments closed, or
    the message moved on to a later call); ``finish()`` closes the rest at the end of
    the message; ``calls()`` is every call of the message in ``index`` order.
    """

    def __init__(self, *, model: str | None = None) -> None:
        self.model = model
        self._pending: dict[int, _Pending] = {}
        self._closed: dict[int, ClosedCall] = {}

    @property
    def started(self) -> int:
        """Calls begun so far."""
        return len(self._pending)

    def feed(self, deltas: Iterable[ToolCallDelta]) -> list[ClosedCall]:
        out: list[ClosedCall] = []
        for d in deltas:
            p = self._pending.get(d.index)
            if p is None:
                # A new call: every earlier one still open is complete now.
                for q in sorted(self._pending.values(), key=lambda q: q.index):
                    if not q.done and q.index < d.index:
                        out.append(self._close(q))
                p = self._pending[d.index] = _Pending(d.index)
            if d.id:
                p.id = d.id
            if d.name and not p.name:
                p.name = d.name
            if d.arguments and not p.done:
                p.parts.append(d.arguments)
                if p.scanner.feed(d.arguments):
                    out.append(self._close(p))
        return out

    def finish(self) -> list[ClosedCall]:
        """Close every call still open (the message has ended)."""
        return [
            self._close(p)
            for p in sorted(self._pending.values(), key=lambda p: p.index)
            if not p.done
        ]

    def calls(self) -> list[ClosedCall]:
        return [self._closed[i] for i in sorted(self._closed)]

    def _close(self, p: _Pending) -> ClosedCall:
        p.done = True
        raw = "".join(p.parts)
        call_id = p.id or f"call_{p.index}"
        closed: ClosedCall
        try:
            args = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            closed = self._broken(p, call_id, raw, f"not valid JSON ({exc})")
        else:
            if isinstance(args, dict):
                closed = ToolCall(call_id, p.name, args)
            else:
                closed = self._broken(p, call_id, raw, "not a JSON object")
        self._closed[p.index] = closed
        return closed

    def _broken(self, p: _Pending, call_id: str, raw: str, why: str) -> BrokenCall:
        error = InvalidJSON(
            f"the arguments of tool call {p.name or p.index} are {why}: "
            "send the arguments as one JSON object",
            output=raw,
            model=self.model,
            tool=p.name or None,
            tool_call_id=call_id,
        )
        return BrokenCall(p.index, call_id, p.name, raw, error)
