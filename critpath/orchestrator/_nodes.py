"""A run's per-step state (the runtime's bookkeeping, shared by its parts)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from critpath.orchestrator.streams import ItemTracker

if TYPE_CHECKING:
    from critpath.orchestrator.graph import StepSpec
    from critpath.orchestrator.report import StepRecord

__all__ = ["ACTIVE", "DONE", "SKIPPED", "WAITING", "Node"]

WAITING, ACTIVE, DONE, SKIPPED = 0, 1, 2, 3


class Node:
    __slots__ = (
        "blevel", "consumers", "excluded", "items", "left", "pending", "producer", "records",
        "results", "spec", "spec_state", "spec_task", "spec_value", "state", "succs",
        "tracker", "value",
    )  # fmt: skip

    def __init__(self, spec: StepSpec, pending: int, blevel: float) -> None:
        self.spec = spec
        self.pending = pending
        self.blevel = blevel
        self.state = WAITING
        self.excluded = False
        self.value: Any = None
        self.records: list[StepRecord] = []
        self.results: list[Any] = []
        self.left = 0
        self.succs: list[Node] = []
        # streams: a producer's items and consumers; a consumer's producer and tracker
        self.items: list[Any] = []
        self.consumers: list[Node] = []
        self.producer: Node | None = None
        self.tracker: ItemTracker | None = None
        # speculation of a branch: None, "running", "finished", "failed", "committed"
        self.spec_state: str | None = None
        self.spec_task: asyncio.Task[None] | None = None
        self.spec_value: Any = None
