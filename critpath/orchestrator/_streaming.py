"""The runtime's stream feeder: a ``stream`` step's items go to its ``each`` consumers
as they come (``critpath.orchestrator.streams`` has the bookkeeping of one consumer).

``StreamFeeder`` owns the streams of one run: the items each producer yielded so far,
its consumers, and one ``ItemTracker`` per consumer. The run tells it when a producer
runs (``produce``), when a consumer may start (``arm``), when a producer ended
(``stream_ended``) and when an item was processed (``item_done``); the feeder queues
the items that became ready and completes a consumer once its stream is exhausted.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from critpath.orchestrator._nodes import Node, RunCore
from critpath.orchestrator.events import StepItem
from critpath.orchestrator.report import StepRecord
from critpath.orchestrator.states import NodeState, StepKind, StepStatus
from critpath.orchestrator.streams import ItemTracker

__all__ = ["StreamFeeder"]


class StreamFeeder:
    """The streams of one run (see the module docstring)."""

    __slots__ = ("_consumers", "_core", "_items", "_producer", "_producer_rec", "_trackers")

    def __init__(self, core: RunCore, nodes: Mapping[str, Node]) -> None:
        self._core = core
        self._items: dict[str, list[Any]] = {}
        self._consumers: dict[str, list[Node]] = {}
        self._producer: dict[str, Node] = {}
        self._producer_rec: dict[str, StepRecord] = {}
        self._trackers: dict[str, ItemTracker] = {}
        for node in nodes.values():  # an each step consumes its stream item by item
            if node.step.kind == StepKind.EACH:
                assert node.step.over is not None
                producer = nodes[node.step.over]
                producer.succs.remove(node)
                node.pending -= 1
                self._consumers.setdefault(producer.name, []).append(node)
                self._producer[node.name] = producer

    # ---- what the run asks ------------------------------------------------------------

    def consumers_of(self, producer: Node) -> list[Node]:
        return self._consumers.get(producer.name, [])

    def waits_for_producer(self, node: Node) -> bool:
        """A consumer whose stream has not started: it is armed when it does."""
        producer = self._producer.get(node.name)
        return producer is not None and producer.state == NodeState.WAITING

    def tracker_of(self, step: str) -> ItemTracker | None:
        """The bookkeeping of an ``each`` step's items (``None`` before it armed)."""
        return self._trackers.get(step)

    def needed_by(self, node: Node, item: int) -> dict[Hashable, Any]:
        tracker = self._trackers.get(node.name)
        return tracker.needed_by(item) if tracker is not None else {}

    async def produce(self, node: Node, rec: StepRecord, kwargs: dict[str, Any]) -> list[Any]:
        """Run a stream step: hand each item to its consumers as it comes."""
        items = self._items.setdefault(node.name, [])
        self._producer_rec[node.name] = rec
        core = self._core
        consumers = self.consumers_of(node)
        for c in consumers:  # consumers whose other inputs are ready arm now
            if c.state == NodeState.WAITING and c.pending == 0:
                core.on_ready(c, None)
        agen = node.step.fn(**kwargs)
        try:
            async for item in agen:
                items.append(item)
                core.emit(StepItem(rec.name, core.now(), len(items) - 1, item))
                for c in consumers:
                    if c.name in self._trackers and c.state == NodeState.ACTIVE:
                        self._offer(c, item)
        finally:
            await agen.aclose()
        return list(items)

    def arm(self, node: Node) -> None:
        """An ``each`` step may start: take the items its stream produced so far."""
        step = node.step
        self._trackers[node.name] = ItemTracker(key=step.key, needs=step.needs)
        producer = self._producer[node.name]
        for item in list(self._items.get(producer.name, ())):
            if self._core.ended or node.state != NodeState.ACTIVE:
                return
            self._offer(node, item)
        if producer.state == NodeState.DONE:
            self._close(node)

    def stream_ended(self, producer: Node) -> None:
        """A producer finished: its armed consumers learn that no item will come."""
        for c in self.consumers_of(producer):
            if c.name in self._trackers:
                self._close(c)

    def item_done(self, node: Node, rec: StepRecord, value: Any) -> None:
        """An item of ``node`` was processed (``rec`` is its unit)."""
        tracker = self._trackers[node.name]
        assert rec.item is not None
        try:
            ready = tracker.done(rec.item, value)
            tracker.check()
        except Exception as exc:
            self._core.fail_node(node, exc)
            return
        for i in ready:
            self._core.queue_unit(node, i, tracker.items[i], rec.name)
        if tracker.finished:
            self._core.complete(node, tracker.ordered_results(), rec.name)

    # ---- internals --------------------------------------------------------------------

    def _offer(self, node: Node, item: Any) -> None:
        tracker = self._trackers[node.name]
        try:
            ready = tracker.add(item)
        except Exception as exc:  # a duplicate key, a key function that raised...
            self._core.fail_node(node, exc)
            return
        by = self._producer_by(node)
        for i in ready:
            self._core.queue_unit(node, i, tracker.items[i], by)

    def _producer_by(self, node: Node) -> str | None:
        """The record of ``node``'s producer: an item is released by its arrival."""
        rec = self._producer_rec.get(self._producer[node.name].name)
        return rec.name if rec is not None else None

    def _close(self, node: Node) -> None:
        tracker = self._trackers[node.name]
        try:
            tracker.close()
        except Exception as exc:
            self._core.fail_node(node, exc)
            return
        if tracker.finished and node.state == NodeState.ACTIVE:
            by = self._producer_by(node)
            if not tracker.items:
                now = self._core.now()
                node.records.append(StepRecord(node.name, node.name, None, StepKind.EACH,
                                               status=StepStatus.OK, start=now, end=now,
                                               ready=now,
                                               released_by=by))  # fmt: skip
            self._core.complete(node, tracker.ordered_results(), by)
