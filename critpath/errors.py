"""The exceptions critpath raises: one root, a small tree, retryability by type.

::

    CritpathError
    ├── GraphError                   an invalid graph, raised before anything runs
    │   ├── DuplicateStepError
    │   ├── UnknownDependencyError
    │   ├── CycleError               names the cycle
    │   └── InvalidStepError         a step function critpath cannot call
    ├── RunError                     a run that did not produce its outputs
    │   ├── MissingInputError        run inputs the graph declares but were not given
    │   ├── StepFailedError          a step raised; names the step, chains the cause
    │   ├── RouteError               a router chose a branch it does not have
    │   ├── DeadlineExceeded         the run's deadline passed (carries partial outputs)
    │   ├── RunCancelled             the run was cancelled by its owner
    │   └── StepStuckError           a step ignored its cancellation past the grace period
    ├── ScopeClosedError             work started in a scope that has ended (a Speculator)
    ├── CacheStoreError              a cache store could not be read or written (a miss)
    ├── ConfigError                  a bad option (negative limit, unknown resource...)
    ├── Overloaded                R  shed by admission control (``retry_after``: when to retry)
    └── ModelError                   a model call failed (raised by critpath.adapters)
        ├── InvalidRequestError      rejected before it was sent (pydantic validation)
        ├── ModelConnectionError  R  connect failed, or the connection was lost mid-stream
        ├── ModelTimeout             (also a TimeoutError)
        │   ├── ConnectTimeout    R
        │   ├── FirstTokenTimeout R  no token within the time-to-first-token watchdog
        │   ├── IdleTimeout       R  the gap between two tokens was too long
        │   └── TotalTimeout         the call's own budget or deadline ran out
        ├── RateLimited           R  HTTP 429 (``retry_after`` when the server said)
        ├── ServerError           R  HTTP 5xx
        ├── BadRequest               HTTP 4xx
        │   ├── AuthenticationError  401 / 403
        │   ├── ModelNotFound        404
        │   └── ContextLengthExceeded
        ├── MalformedResponse        a body or SSE line that is not what the API promises
        │   └── IncompleteStream  R  the stream ended without its terminator
        ├── InvalidOutput         R  the model's answer breaks its contract (fed back to it)
        │   ├── InvalidJSON       R  not JSON where a schema or tool arguments needed it
        │   ├── SchemaMismatch    R  JSON that does not validate against the schema
        │   └── UnknownTool       R  a tool call naming no tool of the request
        ├── VoteFailedError          every voter failed (critpath.cascades.vote)
        ├── CascadeFailedError       every tier failed (critpath.cascades.cascade)
        └── LoadShedError            refused: no model predicted to answer in time
                                     (critpath.adapters.adaptive)

``R``: retryable (a subclass of ``RetryableError``).

Every ``RunError`` carries the run's ``report`` (``None`` when the run failed before
it started), so a failed run still names its critical path.

Retryability: ``is_retryable(exc)`` decides by type: errors after which the same
request may succeed subclass ``RetryableError``. An ``InvalidOutput`` is retried by
asking again with its ``feedback`` (the validation error, in words for the model)
appended to the conversation (``critpath.adapters.structured.complete_valid``, the
agent loop), within the deadline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from critpath.orchestrator.report import RunReport

__all__ = [
    "AuthenticationError",
    "BadRequest",
    "CacheStoreError",
    "ConfigError",
    "ConnectTimeout",
    "ContextLengthExceeded",
    "CritpathError",
    "CycleError",
    "DeadlineExceeded",
    "DuplicateStepError",
    "FirstTokenTimeout",
    "GraphError",
    "IdleTimeout",
    "IncompleteStream",
    "InvalidJSON",
    "InvalidOutput",
    "InvalidRequestError",
    "InvalidStepError",
    "LoadShedError",
    "MalformedResponse",
    "MissingInputError",
    "Overloaded",
    "ModelConnectionError",
    "ModelError",
    "ModelNotFound",
    "ModelTimeout",
    "RateLimited",
    "RetryableError",
    "RouteError",
    "RunCancelled",
    "RunError",
    "SchemaMismatch",
    "ScopeClosedError",
    "ServerError",
    "StepFailedError",
    "StepStuckError",
    "TotalTimeout",
    "UnknownDependencyError",
    "UnknownTool",
    "is_retryable",
]


class CritpathError(Exception):
    """Root of every exception critpath raises on purpose."""


class RetryableError(CritpathError):
    """Marker base: an error after which the same request may succeed."""


class ConfigError(CritpathError, ValueError):
    """An invalid option, caught before anything runs."""


class Overloaded(RetryableError):
    """A request shed by admission control (``critpath.serve.admission``): its predicted
    latency would miss its SLO, or the queue is full. ``retry_after``: seconds after
    which the service expects to have room (an HTTP 503's ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after: float, predicted: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.predicted = predicted


class GraphError(CritpathError):
    """An invalid graph, raised at build time (``Graph.validate``), never mid-run."""


class DuplicateStepError(GraphError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a step or input named {name!r} already exists in this graph")
        self.name = name


class UnknownDependencyError(GraphError):
    def __init__(
        self, step: str, dependency: str, known: Sequence[str] = (), *, hint: str = ""
    ) -> None:
        names = f"; known steps and inputs: {', '.join(sorted(known))}" if known else ""
        super().__init__(
            f"step {step!r} depends on unknown step or input {dependency!r}{names}{hint}"
        )
        self.step = step
        self.dependency = dependency


class CycleError(GraphError):
    def __init__(self, cycle: Sequence[str]) -> None:
        super().__init__("dependency cycle: " + " -> ".join(cycle))
        self.cycle = list(cycle)


class InvalidStepError(GraphError):
    """A step whose function or options critpath cannot use."""


class RunError(CritpathError):
    """A run that ended without its outputs."""

    report: RunReport | None

    def __init__(self, message: str, *, report: RunReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class MissingInputError(RunError):
    def __init__(self, missing: Sequence[str]) -> None:
        super().__init__(f"missing run inputs: {', '.join(missing)}")
        self.missing = list(missing)


class StepFailedError(RunError):
    """A step raised (after its retries) and had no fallback; ``__cause__`` is the error."""

    def __init__(self, step: str, error: BaseException, *, report: RunReport | None = None) -> None:
        super().__init__(f"step {step!r} failed: {type(error).__name__}: {error}", report=report)
        self.step = step
        self.error = error


class RouteError(RunError):
    def __init__(self, step: str, chosen: object, branches: Sequence[str]) -> None:
        super().__init__(
            f"router {step!r} chose {chosen!r}, which is not one of its branches {list(branches)}"
        )
        self.step = step
        self.chosen = chosen


class DeadlineExceeded(RunError, TimeoutError):
    """The run's deadline passed before its outputs were ready.

    ``partial_outputs`` holds what was ready: finished steps' values and the partial
    results that unfinished steps had offered with ``StepContext.set_partial``.
    """

    def __init__(
        self,
        deadline_s: float,
        *,
        partial_outputs: Mapping[str, Any] | None = None,
        report: RunReport | None = None,
    ) -> None:
        super().__init__(f"run deadline of {deadline_s:.3f}s exceeded", report=report)
        self.deadline_s = deadline_s
        self.partial_outputs = dict(partial_outputs or {})


class RunCancelled(RunError):
    """The run was cancelled by its owner (``Run.cancel``)."""


class StepStuckError(RunError):
    """A step did not end within the grace period after it was cancelled (it swallowed
    its ``CancelledError``, or its clean-up blocks). The run stops waiting for it: the
    step is reported as ``stuck``, logged, and this error names it."""

    def __init__(self, step: str, grace_s: float, *, report: RunReport | None = None) -> None:
        super().__init__(
            f"step {step!r} ignored its cancellation for more than {grace_s:.3f}s", report=report
        )
        self.step = step
        self.grace_s = grace_s


class ScopeClosedError(CritpathError, RuntimeError):
    """Work was started in a scope that has already ended (e.g. ``Speculator.start``
    after its ``async with`` block): it would have no owner."""


class CacheStoreError(CritpathError):
    """A cache store (``critpath.caching``) could not be read or written; its own
    exception (sqlite3's, redis-py's, an ``OSError``) is the cause. Caches treat it as a
    miss and log it: a failing store never fails the request."""


class ModelError(CritpathError):
    """A model call failed. ``model`` names the endpoint; ``status`` is the HTTP status."""

    def __init__(self, message: str, *, model: str | None = None, status: int | None = None):
        super().__init__(message if model is None else f"{model}: {message}")
        self.model = model
        self.status = status


class InvalidRequestError(ModelError, ValueError):
    """A request rejected before it was sent."""


class ModelConnectionError(ModelError, RetryableError):
    """Could not connect, or the connection was lost before the answer was complete."""


class ModelTimeout(ModelError, TimeoutError):
    """A model call took too long (see the subclasses for which clock ran out)."""


class ConnectTimeout(ModelTimeout, RetryableError):
    pass


class FirstTokenTimeout(ModelTimeout, RetryableError):
    """No token arrived within the time-to-first-token watchdog."""


class IdleTimeout(ModelTimeout, RetryableError):
    """The gap between two tokens exceeded the idle timeout (a stalled stream)."""


class TotalTimeout(ModelTimeout):
    """The call's total budget, or the deadline in force, ran out."""


class RateLimited(ModelError, RetryableError):
    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, model=model, status=status)
        self.retry_after = retry_after


class ServerError(ModelError, RetryableError):
    """The server failed (HTTP 5xx)."""


class BadRequest(ModelError):
    """The server refused the request (HTTP 4xx); sending it again will not help."""


class AuthenticationError(BadRequest):
    pass


class ModelNotFound(BadRequest):
    pass


class ContextLengthExceeded(BadRequest):
    """The prompt plus ``max_tokens`` does not fit the model's context window."""


class MalformedResponse(ModelError):
    """The server's answer does not follow the API (bad JSON, bad SSE, missing fields)."""


class IncompleteStream(MalformedResponse, RetryableError):
    """The stream ended without its terminator (``data: [DONE]``) or a finish reason."""


class LoadShedError(ModelError):
    """Refused by ``critpath.adapters.Adaptive`` (``OnMiss.SHED``): no candidate model
    was predicted to answer within the time left. ``predicted`` and ``budget`` in
    seconds. (``Overloaded`` is the service's own shedding, before any model.)"""

    def __init__(self, name: str, predicted: float | None, budget: float) -> None:
        pred = "unknown" if predicted is None else f"{predicted * 1000:.0f} ms"
        super().__init__(
            f"shed, predicted {pred} > budget {budget * 1000:.0f} ms", model=name
        )
        self.predicted = predicted
        self.budget = budget


class InvalidOutput(ModelError, RetryableError):
    """The model's answer does not keep the request's contract: a ``response_format``
    answer or a tool call's arguments that are not valid JSON or do not validate, or a
    tool call naming no tool of the request.

    ``output``: what the model produced (the text, or the call's arguments);
    ``feedback``: the problem in words for the model, to ask it again;
    ``tool``/``tool_call_id``: the tool call at fault, if it is one.
    """

    def __init__(
        self,
        message: str,
        *,
        output: str = "",
        model: str | None = None,
        tool: str | None = None,
        tool_call_id: str | None = None,
    ) -> None:
        super().__init__(message, model=model)
        self.output = output
        self.feedback = message
        self.tool = tool
        self.tool_call_id = tool_call_id


class InvalidJSON(InvalidOutput):
    """Not JSON (or not a JSON object) where a schema or tool arguments needed it."""


class SchemaMismatch(InvalidOutput):
    """Valid JSON that does not validate against the schema (or the tool's arguments)."""


class UnknownTool(InvalidOutput):
    """A tool call naming a function that the request did not offer."""


def is_retryable(exc: BaseException) -> bool:
    """Whether retrying the same call may succeed, decided by the exception's type."""
    return isinstance(exc, RetryableError)
