"""A run's per-step state, and the narrow interface the runtime's parts share.

``Node`` is one step of one run: how many dependencies it still waits for, its
state, its value and the records of its units (one, or one per item of a map or
each step). ``RunCore`` is what the runtime's collaborators — the speculation manager
(``_speculating``) and the stream feeder (``_streaming``) — may ask of the run: the
clock, events, starting units, completing or failing steps. They own their own
state; the run owns the nodes and the tasks.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from critpath.orchestrator.states import NodeState

if TYPE_CHECKING:
    import asyncio

    from critpath.estimates import Estimates
    from critpath.orchestrator.events import RunEvent
    from critpath.orchestrator.graph import StepSpec
    from critpath.orchestrator.report import StepRecord

__all__ = ["Node", "RunCore"]

_WAITING = NodeState.WAITING  # bound once: read for every node of every run


class Node:
    """One step of a run."""

    __slots__ = (
        "blevel", "excluded", "left", "name", "pending", "records", "results", "state",
        "step", "succs", "value",
    )  # fmt: skip

    def __init__(self, step: StepSpec, pending: int, blevel: float) -> None:
        self.step = step
        self.name = step.name
        self.pending = pending
        """Dependencies not resolved yet."""
        self.blevel = blevel
        """Predicted longest path from the start of this step to the end of the run."""
        self.state = _WAITING
        self.excluded = False
        """Its router chose another branch."""
        self.value: Any = None
        self.records: list[StepRecord] = []
        self.results: list[Any] = []
        """A map step's results by item, filled as items finish."""
        self.left = 0
        """A map step's items not finished yet."""
        self.succs: list[Node] = []

    def __repr__(self) -> str:
        return f"Node({self.step.name!r}, {self.state.name}, pending={self.pending})"


class RunCore(Protocol):
    """What the runtime's collaborators may ask of their run."""

    @property
    def nodes(self) -> Mapping[str, Node]: ...

    @property
    def estimates(self) -> Estimates: ...

    @property
    def ended(self) -> bool:
        """The run has its outcome: start nothing new."""
        ...

    def now(self) -> float:
        """Seconds since the run started."""
        ...

    def emit(self, event: RunEvent) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A helper task owned by the run (cancelled and awaited with its steps)."""
        ...

    def predicted(self, step: str) -> float:
        """The predicted duration of ``step`` (seconds)."""
        ...

    def must_skip(self, node: Node) -> bool: ...

    def on_ready(self, node: Node, by: str | None) -> None:
        """Every dependency of ``node`` resolved (the last one being the record ``by``)."""
        ...

    def queue_unit(
        self,
        node: Node,
        item: int | None,
        value: Any,
        by: str | None,
        *,
        speculative: bool = False,
    ) -> StepRecord:
        """Queue one unit of ``node`` (the step, or its item ``item`` holding ``value``),
        made ready by the end of the record named ``by``."""
        ...

    def complete(self, node: Node, value: Any, by: str | None) -> None:
        """``node`` finished with ``value`` (its last unit being the record ``by``)."""
        ...

    def fail_unit(self, rec: StepRecord, exc: BaseException) -> None:
        """A unit failed: the run fails (the step has no fallback)."""
        ...

    def fail_node(self, node: Node, exc: BaseException) -> None:
        """The step failed outside any unit (its stream's bookkeeping raised)."""
        ...

    def fail_hook(self, step: str, exc: BaseException) -> None:
        """A commit/undo hook raised: the run fails, even if it had ended ok."""
        ...
