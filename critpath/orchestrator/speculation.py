"""Speculation: start work before it is known to be needed; commit it or cancel it.

**Speculative branches.** A router (``Graph.route``) may have a **predictor**: a cheap
guess of its decision available before it finishes — a function of the router's own
inputs (sync, or async such as a fast model), or ``"learned"``: the frequencies of the
router's past choices. The runtime starts the predicted branch (the top ``k``) at the
router's start, in parallel with it. When the router decides, a correct guess is
**committed** (its work counts, its value is used) and a wrong one is **cancelled** at
once (its task cancelled, its model streams closed so the server aborts them); the
right branch then starts as usual.

Side effects are safe: only branches declared ``speculative=True`` (pure) or
``speculative=Speculative(commit=..., undo=...)`` (side effects staged, then committed
or undone) are ever started early; an unmarked branch waits for the router. A branch
that reads the router's value cannot be started before it.

``Speculation`` is the router's policy: ``top_k`` branches, a minimum predicted
probability, an optional ``allow()`` check (e.g. "not while the endpoint is loaded")
and a ``SpeculationBudget``: the waste (seconds of cancelled speculative work) may not
exceed ``max_waste`` of the work done, across every run that shares the budget.

Every run's report counts the speculations started, committed and cancelled, their
**waste** (seconds and model tokens of cancelled work) and the latency **saved**
(how much earlier committed branches finished than had they waited for the router).

**Speculative tool calls.** ``Speculator`` does the same inside a step: start a tool
as soon as a partial model output names it completely (e.g. a tool call whose JSON
arguments parsed), then ``commit`` the calls the final output confirms; the rest are
cancelled when the block ends.

The decisions (``normalise_prediction``, ``learned_prediction``, the budget) are pure.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from critpath._tasks import cancel_and_wait
from critpath.errors import ConfigError, ScopeClosedError

__all__ = [
    "Prediction",
    "Predictor",
    "Speculation",
    "SpeculationBudget",
    "SpeculationStats",
    "Speculative",
    "Speculator",
    "call_hook",
    "learned_prediction",
    "normalise_prediction",
]

Prediction = str | Sequence[str] | Mapping[str, float] | None
"""What a predictor returns: a branch, several (equally likely), or probabilities."""

Predictor = Callable[..., Prediction | Awaitable[Prediction]] | Literal["learned"]


@dataclass(frozen=True, slots=True)
class Speculative:
    """A branch with side effects that may still run early: ``commit(value)`` is called
    when its speculation is committed (apply what it staged), ``undo(value)`` when it
    is cancelled (``value`` is ``None`` if it had not finished). Sync or async."""

    commit: Callable[[Any], Any] | None = None
    undo: Callable[[Any], Any] | None = None


def normalise_prediction(value: Prediction, branches: Sequence[str]) -> list[tuple[str, float]]:
    """``(branch, probability)`` pairs, most likely first, unknown branches dropped.

    >>> normalise_prediction("b", ["a", "b"])
    [('b', 1.0)]
    >>> normalise_prediction({"a": 0.2, "b": 0.7, "zz": 0.1}, ["a", "b"])
    [('b', 0.7), ('a', 0.2)]
    >>> normalise_prediction(["a", "b"], ["a", "b"])
    [('a', 0.5), ('b', 0.5)]
    """
    if value is None:
        return []
    if isinstance(value, str):
        pairs = [(value, 1.0)]
    elif isinstance(value, Mapping):
        pairs = [(str(k), float(v)) for k, v in value.items()]
    else:
        names = [str(v) for v in value]
        pairs = [(n, 1.0 / len(names)) for n in names] if names else []
    known = set(branches)
    ranked = sorted(((b, p) for b, p in pairs if b in known and p > 0), key=lambda bp: -bp[1])
    return list(dict(ranked).items())


def learned_prediction(counts: Mapping[str, int], *, min_runs: int = 5) -> dict[str, float]:
    """Route frequencies as probabilities (empty until ``min_runs`` decisions were seen).

    >>> learned_prediction({"a": 8, "b": 2})
    {'a': 0.8, 'b': 0.2}
    """
    total = sum(counts.values())
    if total < min_runs:
        return {}
    return {b: n / total for b, n in counts.items() if n}


class SpeculationBudget:
    """Waste allowed as a fraction of work, shared by the runs that use it.

    Credit starts at ``burst_s`` seconds and grows by ``max_waste`` x every second of
    useful work recorded (``record_work``); every second of cancelled speculation
    (``record_waste``) spends it. A speculation may start while its expected waste
    (the probability it is wrong x its predicted duration) fits in the credit.

    >>> b = SpeculationBudget(max_waste=0.25, burst_s=1.0)
    >>> b.allows(expected_waste=0.5), b.record_waste(2.0), b.allows(expected_waste=0.1)
    (True, None, False)
    >>> b.record_work(8.0); b.allows(expected_waste=0.5)
    True
    """

    def __init__(self, max_waste: float = 0.25, *, burst_s: float = 5.0) -> None:
        if not 0.0 <= max_waste <= 1.0:
            raise ConfigError(f"max_waste must be in [0, 1], got {max_waste!r}")
        if burst_s < 0:
            raise ConfigError("burst_s must be >= 0")
        self.max_waste = max_waste
        self.credit = burst_s
        self.work = 0.0
        self.waste = 0.0
        self.refused = 0

    def allows(self, expected_waste: float) -> bool:
        ok = self.credit > 0 and expected_waste <= self.credit
        if not ok:
            self.refused += 1
        return ok

    def record_work(self, seconds: float) -> None:
        self.work += seconds
        self.credit += self.max_waste * seconds

    def record_waste(self, seconds: float) -> None:
        self.waste += seconds
        self.credit -= seconds

    @property
    def waste_fraction(self) -> float:
        """Waste over all work done (useful and wasted)."""
        total = self.work + self.waste
        return self.waste / total if total > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Speculation:
    """A router's speculation policy (see the module docstring)."""

    top_k: int = 1
    min_probability: float = 0.0
    budget: SpeculationBudget | None = field(default_factory=SpeculationBudget)
    allow: Callable[[], bool] | None = None

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError("Speculation.top_k must be >= 1")
        if not 0.0 <= self.min_probability <= 1.0:
            raise ConfigError("Speculation.min_probability must be in [0, 1]")


@dataclass(slots=True)
class SpeculationStats:
    """Counts and costs of speculation (one run's report, or a ``Speculator``'s)."""

    started: int = 0
    committed: int = 0
    cancelled: int = 0
    refused: int = 0
    waste_s: float = 0.0
    waste_tokens: int = 0
    saved_s: float = 0.0
    useful_s: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "started": self.started,
            "committed": self.committed,
            "cancelled": self.cancelled,
            "refused": self.refused,
            "waste_s": round(self.waste_s, 6),
            "waste_tokens": self.waste_tokens,
            "saved_s": round(self.saved_s, 6),
        }


async def call_hook(hook: Callable[[Any], Any], value: Any) -> None:
    """Call a commit/undo hook, awaiting it if it is async."""
    out = hook(value)
    if inspect.isawaitable(out):
        await out


# ---- speculative tool calls ------------------------------------------------------------


class Speculator:
    """Start calls before they are certain; keep the ones confirmed, cancel the rest.

    ::

        async with Speculator() as spec:
            async for chunk in model.stream(request):
                text += chunk.text
                for call in complete_calls(text):          # your parser
                    spec.start(call.key, lambda c=call: run_tool(c))
            results = [await spec.commit(c.key, lambda c=c: run_tool(c)) for c in final(text)]

    ``start(key, factory)`` runs ``factory()`` in a task unless ``key`` was started
    already; ``commit(key, factory)`` returns its result (starting it now if it was
    never started); leaving the block cancels every call not committed, waits for
    them, and counts them as waste. ``stats`` says what happened. Like a nursery, it
    owns its calls: ``start`` or ``commit`` outside the block raises
    ``ScopeClosedError`` instead of leaving an orphan task.
    """

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[Any]] = {}
        self._started_at: dict[Hashable, float] = {}
        self._committed: set[Hashable] = set()
        self._open = False
        self._closed = False
        self.stats = SpeculationStats()

    async def __aenter__(self) -> Speculator:
        if self._open or self._closed:
            raise ScopeClosedError("a Speculator can be entered once")
        self._open = True
        return self

    def _check_open(self) -> None:
        if not self._open:
            raise ScopeClosedError(
                "Speculator used outside its `async with` block: the call would have no owner"
            )

    async def __aexit__(self, *exc: object) -> None:
        self._open = False
        self._closed = True
        loop = asyncio.get_running_loop()
        losers = [t for k, t in self._tasks.items() if k not in self._committed]
        now = loop.time()
        for key in self._tasks:
            if key not in self._committed:
                self.stats.cancelled += 1
                self.stats.waste_s += now - self._started_at[key]
        await cancel_and_wait(losers)

    def start(self, key: Hashable, factory: Callable[[], Awaitable[Any]]) -> bool:
        """Start ``key`` speculatively; ``False`` if it was already started."""
        self._check_open()
        if key in self._tasks:
            return False
        self._tasks[key] = asyncio.ensure_future(factory())
        self._started_at[key] = asyncio.get_running_loop().time()
        self.stats.started += 1
        return True

    async def commit(self, key: Hashable, factory: Callable[[], Awaitable[Any]]) -> Any:
        """The result of ``key``: its speculative call if started, else a call now."""
        self._check_open()
        loop = asyncio.get_running_loop()
        if key in self._tasks:
            if key not in self._committed:
                self.stats.committed += 1
                self.stats.saved_s += loop.time() - self._started_at[key]
        else:
            self._tasks[key] = asyncio.ensure_future(factory())
            self._started_at[key] = loop.time()
        self._committed.add(key)
        return await self._tasks[key]

    def counts(self) -> Counter[str]:
        return Counter("committed" if k in self._committed else "pending" for k in self._tasks)
