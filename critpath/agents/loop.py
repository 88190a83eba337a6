"""The agent loop: model -> tool calls -> model ... until an answer, a turn limit or
the deadline, with every tool started the moment its call's arguments are complete.

``Agent(model, tools).run(task)`` streams each model turn; the call assembler
(``critpath.adapters.toolcalls``) announces each tool call as soon as its JSON
arguments close, and — with ``ToolStart.STREAMED``, the default — the tool starts
right then, while the model still streams the rest of its message (LLMCompiler-style).
Several tools run concurrently; their results go back to the model in call order.
``ToolStart.AFTER_MESSAGE`` starts a message's tools together once it has ended;
``ToolStart.SEQUENTIAL`` runs them one at a time and asks for one call per message
(ReAct). A tool marked ``side_effects`` never starts before its message has ended
intact (streamed starts are speculative: a stream that fails cancels them).

A bad argument, an unknown tool or arguments that are not JSON go back to the model
as that call's tool result (an error message), as does an exception the tool raises;
an answer that breaks the ``response_format`` goes back with the validation error.

Every model turn and tool call is a sub-step (``critpath.orchestrator.substeps``): in
a graph step they appear in the run's report, timeline and trace, and the critical
path runs through them. A turn's model call is split where each call's arguments
closed (``t1.model``, ``t1.model+1``...), and tool ``k`` of turn ``t``
(``t1.search#0``) depends on the part that closed its arguments, so the sub-steps'
critical path is the true one whichever ``ToolStart`` ran them.

The deadline in force (a ``critpath.deadline`` scope, or the run's) reaches the loop:
before a turn, if the time left is less than a turn takes (learned from the turns
served, a high quantile), the loop stops; a turn the deadline interrupts is
abandoned. Either way it returns its best partial answer, ``status == PARTIAL``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from critpath.adapters.protocol import Message, Model, ModelRequest, make_request
from critpath.adapters.toolcalls import BrokenCall, ClosedCall, ToolCallAssembler
from critpath.adapters.tools import ResponseFormat, ToolCall, ToolChoice
from critpath.agents.tool import Tool
from critpath.deadlines import deadline_before_scope
from critpath.errors import ConfigError, InvalidOutput
from critpath.estimates import LatencyEstimate
from critpath.orchestrator.context import current_step
from critpath.orchestrator.states import StepStatus
from critpath.orchestrator.substeps import SubStepKind, SubStepRecord, SubSteps

__all__ = ["Agent", "AgentResult", "AgentStatus", "StopReason", "ToolRun", "ToolStart"]

_SCOPE_MARGIN_S = 0.003  # end a turn this much before the deadline scope fires


class ToolStart(StrEnum):
    """When the tools of a model's message start."""

    STREAMED = "streamed"
    """Each as soon as its call's arguments are complete, while the message streams."""
    AFTER_MESSAGE = "after_message"
    """All of a message's calls together, once the message has ended."""
    SEQUENTIAL = "sequential"
    """One call per message, one tool at a time (ReAct)."""


class AgentStatus(StrEnum):
    OK = "ok"
    """The model answered."""
    PARTIAL = "partial"
    """Stopped before an answer (turn limit or deadline): ``output`` is the best so far."""


class StopReason(StrEnum):
    ANSWER = "answer"
    TURN_LIMIT = "turn_limit"
    DEADLINE = "deadline"


@dataclass(frozen=True, slots=True)
class ToolRun:
    """One tool call of the loop: what it returned (``result``) or why not (``error``)."""

    turn: int
    call: ToolCall
    result: str | None
    error: str | None
    substep: str
    speculative: bool

    def message(self) -> Message:
        content = self.result if self.error is None else f"error: {self.error}"
        return Message(role="tool", tool_call_id=self.call.id, content=content or "")


@dataclass(slots=True)
class AgentResult:
    """What a run of the loop produced.

    ``output``: the answer (the ``response_format`` model's instance when one was
    asked for, else the text), or on ``PARTIAL`` the best partial answer (the last text
    the model wrote, else the tool results so far); ``messages``: the conversation;
    ``substeps``: the turns and tool calls, timed (``substeps.analysis()`` is their
    critical path).
    """

    status: AgentStatus
    stop: StopReason
    output: Any
    text: str
    turns: int
    messages: tuple[Message, ...]
    tool_runs: list[ToolRun]
    substeps: SubSteps
    invalid_answers: int = 0


@dataclass(slots=True)
class _Turn:
    text: str = ""
    finish: str | None = None
    calls: list[ClosedCall] = field(default_factory=list)
    runs: list[ToolRun] = field(default_factory=list)
    last_part: str = ""


class Agent:
    """A model and its tools in a loop; see the module docstring.

    ``tools``: ``Tool``s or plain async functions; ``system``: a system message;
    ``max_turns``: model turns at most; ``response_format``: the answer's type (a
    pydantic model class or a JSON schema); ``tool_choice``: ``ToolChoice`` for every
    turn (default: the model decides); ``request``: further ``ModelRequest`` fields
    (``max_tokens``, sampling, ``extra_body``); ``name``: prefixes nothing, names the
    loop in logs.
    """

    def __init__(
        self,
        model: Model,
        tools: Sequence[Tool | Any],
        *,
        system: str | None = None,
        max_turns: int = 8,
        tool_start: ToolStart = ToolStart.STREAMED,
        response_format: type[BaseModel] | Mapping[str, Any] | None = None,
        tool_choice: ToolChoice | None = None,
        request: Mapping[str, Any] | None = None,
        name: str = "agent",
    ) -> None:
        if max_turns < 1:
            raise ConfigError("max_turns must be >= 1")
        self.model = model
        self.tools = {t.name: t for t in (t if isinstance(t, Tool) else Tool(t) for t in tools)}
        if len(self.tools) != len(tools):
            raise ConfigError("tool names must be unique")
        self.system = system
        self.max_turns = max_turns
        self.tool_start = ToolStart(tool_start)
        self.response_format = (
            None if response_format is None else ResponseFormat.of(response_format)
        )
        self.tool_choice = tool_choice
        self.request_fields = dict(request or {})
        self.name = name
        self.turn_time = LatencyEstimate()
        """How long one turn (model and tools) takes, learned from the turns served."""

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, model={self.model.name!r}, tools={list(self.tools)})"

    # ---- the loop ---------------------------------------------------------------------

    async def run(self, task: str | Sequence[Message]) -> AgentResult:
        """Run the loop on ``task`` (a user message, or a conversation)."""
        ctx = current_step()
        subs = ctx.substeps if ctx is not None else SubSteps.standalone()
        messages: list[Message] = []
        if self.system is not None:
            messages.append(Message(role="system", content=self.system))
        if isinstance(task, str):
            messages.append(Message(role="user", content=task))
        else:
            messages.extend(task)
        prefix = f"t{len(subs)}." if len(subs) else ""  # a second run in one step
        runs: list[ToolRun] = []
        after: list[str] = []
        best = ""
        invalid = 0
        loop = asyncio.get_running_loop()
        for turn in range(1, self.max_turns + 1):
            if not self._time_for_a_turn():
                return self._partial(StopReason.DEADLINE, best, turn - 1, messages, runs, subs,
                                     invalid)  # fmt: skip
            request = self._request(messages)
            t0 = loop.time()
            label = f"{prefix}t{turn}"
            try:
                async with asyncio.timeout_at(deadline_before_scope(_SCOPE_MARGIN_S)):
                    done = await self._turn(label, turn, request, subs, after)
            except TimeoutError:
                if deadline_before_scope(_SCOPE_MARGIN_S) is None:
                    raise
                subs.close_open()
                return self._partial(StopReason.DEADLINE, best, turn - 1, messages, runs, subs,
                                     invalid)  # fmt: skip
            self.turn_time.observe(loop.time() - t0)
            best = done.text or best
            runs.extend(done.runs)
            after = [done.last_part, *(r.substep for r in done.runs)]
            if done.calls:
                messages.append(
                    Message(
                        role="assistant",
                        content=done.text,
                        tool_calls=tuple(_as_call(c) for c in done.calls),
                    )
                )
                messages.extend(r.message() for r in done.runs)  # fmt: skip
                continue
            messages.append(Message(role="assistant", content=done.text))
            if self.response_format is None:
                return AgentResult(AgentStatus.OK, StopReason.ANSWER, done.text, done.text, turn,
                                   tuple(messages), runs, subs, invalid)  # fmt: skip
            try:
                parsed = self.response_format.parse(done.text, model_name=self.model.name)
            except InvalidOutput as exc:
                invalid += 1
                messages.append(Message(role="user", content=f"That answer was invalid: "
                                        f"{exc.feedback}. Answer again, correctly."))  # fmt: skip
                continue
            return AgentResult(AgentStatus.OK, StopReason.ANSWER, parsed, done.text, turn,
                               tuple(messages), runs, subs, invalid)  # fmt: skip
        return self._partial(StopReason.TURN_LIMIT, best, self.max_turns, messages, runs, subs,
                             invalid)  # fmt: skip

    def _time_for_a_turn(self) -> bool:
        when = deadline_before_scope(_SCOPE_MARGIN_S)
        if when is None:
            return True
        left = when - asyncio.get_running_loop().time()
        if left <= 0:
            return False
        est = self.turn_time
        if not est.count:
            return True
        need = est.quantile(0.9) if est.count >= 5 else est.ewma
        return left >= need

    def _partial(
        self,
        stop: StopReason,
        best: str,
        turns: int,
        messages: list[Message],
        runs: list[ToolRun],
        subs: SubSteps,
        invalid: int,
    ) -> AgentResult:
        output = best
        if not output and runs:
            output = "; ".join(
                f"{r.call.name}: {r.result if r.error is None else 'error: ' + r.error}"
                for r in runs
            )
        return AgentResult(AgentStatus.PARTIAL, stop, output, best, turns, tuple(messages), runs,
                           subs, invalid)  # fmt: skip

    def _request(self, messages: list[Message]) -> ModelRequest:
        fields: dict[str, Any] = {"max_tokens": 512, **self.request_fields}
        fields["messages"] = tuple(messages)
        if self.tools:
            fields["tools"] = [t.spec for t in self.tools.values()]
            fields["parallel_tool_calls"] = self.tool_start is not ToolStart.SEQUENTIAL
            if self.tool_choice is not None:
                fields["tool_choice"] = self.tool_choice
        if self.response_format is not None:
            fields["response_format"] = self.response_format
        return make_request(**fields)

    # ---- one turn ---------------------------------------------------------------------

    async def _turn(
        self, label: str, turn: int, request: ModelRequest, subs: SubSteps, after: list[str]
    ) -> _Turn:
        out = _Turn()
        asm = ToolCallAssembler(model=self.model.name)
        part: SubStepRecord | None = subs.begin(f"{label}.model", SubStepKind.MODEL, after=after)
        parts = 0
        texts: list[str] = []
        tasks: dict[int, asyncio.Task[ToolRun]] = {}
        held: list[tuple[int, ClosedCall, str]] = []  # start once the message has ended
        streamed = self.tool_start is ToolStart.STREAMED

        def start(k: int, call: ClosedCall, by: str, speculative: bool) -> None:
            coro = self._run_tool(label, turn, k, call, by, subs, speculative)
            tasks[k] = asyncio.create_task(coro, name=f"critpath-tool-{label}-{k}")

        def closed(call: ClosedCall, by: str, during_stream: bool) -> None:
            k = len(out.calls)
            out.calls.append(call)
            tool = self.tools.get(call.name) if isinstance(call, ToolCall) else None
            if during_stream and streamed and tool is not None and not tool.side_effects:
                start(k, call, by, True)
            else:
                held.append((k, call, by))

        # The model's part after a call closed begins with the next piece of the message
        # (not at once: the closing piece may also be the message's last).
        closed_part = ""
        closed_at = 0.0
        try:
            try:
                async with aclosing(self.model.stream(request)) as stream:
                    async for chunk in stream:
                        texts.append(chunk.text)
                        out.finish = chunk.finish_reason or out.finish
                        if part is None and (chunk.text or chunk.tool_calls):
                            parts += 1
                            part = subs.begin(f"{label}.model+{parts}", SubStepKind.MODEL,
                                              after=[closed_part], at=closed_at)  # fmt: skip
                        for call in asm.feed(chunk.tool_calls):
                            if part is None:  # two calls closed by one piece
                                parts += 1
                                part = subs.begin(f"{label}.model+{parts}", SubStepKind.MODEL,
                                                  after=[closed_part])  # fmt: skip
                            subs.end(part)
                            closed(call, part.name, True)
                            closed_part, closed_at, part = part.name, subs.now(), None
            except asyncio.CancelledError:
                if part is not None:
                    subs.end(part, StepStatus.CANCELLED)
                raise
            except BaseException as exc:
                if part is not None:
                    subs.end(part, StepStatus.FAILED, f"{type(exc).__name__}: {exc}")
                raise
            if part is not None:
                subs.end(part)
                closed_part = part.name
            for call in asm.finish():
                closed(call, closed_part, False)
            out.last_part = closed_part
            for k, call, by in held:
                start(k, call, by, False)
                if self.tool_start is ToolStart.SEQUENTIAL:
                    await asyncio.wait([tasks[k]])
            out.runs = [await tasks[k] for k in range(len(out.calls))]
        except BaseException:
            # The message failed, or the loop was cancelled: no tool outlives its turn.
            for task in tasks.values():
                task.cancel()
            if tasks:
                await asyncio.wait(tasks.values())
            raise
        out.text = "".join(texts)
        return out

    async def _run_tool(
        self,
        label: str,
        turn: int,
        k: int,
        call: ClosedCall,
        after: str,
        subs: SubSteps,
        speculative: bool,
    ) -> ToolRun:
        name = f"{label}.{call.name or 'call'}#{k}"
        rec = subs.begin(name, SubStepKind.TOOL, after=[after], speculative=speculative)
        as_call = _as_call(call)

        def failed(error: str) -> ToolRun:
            subs.end(rec, StepStatus.FAILED, error)
            return ToolRun(turn, as_call, None, error, name, speculative)

        if isinstance(call, BrokenCall):
            return failed(call.error.feedback)
        tool = self.tools.get(call.name)
        if tool is None:
            return failed(f"there is no tool {call.name!r}; the tools are: {', '.join(self.tools)}")
        try:
            value = await tool(call.arguments)
        except InvalidOutput as exc:
            return failed(exc.feedback)
        except asyncio.CancelledError:
            subs.end(rec, StepStatus.CANCELLED)
            raise
        except Exception as exc:  # the tool failed: the model is told, the loop goes on
            return failed(f"{type(exc).__name__}: {exc}")
        subs.end(rec)
        return ToolRun(turn, as_call, _render(value), None, name, speculative)


def _as_call(call: ClosedCall) -> ToolCall:
    return call if isinstance(call, ToolCall) else ToolCall(call.id, call.name, {})


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)
