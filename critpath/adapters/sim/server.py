"""A simulated fleet behind the OpenAI-compatible HTTP API: ``critpath sim-server``.

``create_app(fleet)`` is a Starlette app:

- ``POST /v1/chat/completions`` and ``POST /v1/completions``: OpenAI request bodies
  (parsed and validated by ``wire``), answered whole or streamed as SSE the way vLLM
  does. ``priority`` (vLLM's extension; lower first) goes to the model's slot
  scheduler; fields the API does not define, such as ``question_id``, reach the model
  in ``ModelRequest.extra_body``. Of a model's replicas, the one with the fewest
  outstanding requests answers.
- ``GET /v1/models``; ``GET /health``; ``GET /metrics``: Prometheus text with vLLM's
  names (``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``vllm:kv_cache_usage_perc`` = running / slots, per ``model_name`` and summed over
  its replicas; ``vllm:prefix_cache_queries_total`` and ``vllm:prefix_cache_hits_total``
  in tokens, when the replicas have prefix caches: ``--prefix-cache-blocks``) and
  request counters.

When things go wrong (``endpoints`` has the details):

- Response headers go out with the first token, so a simulated server error (which
  the model raises before its first token) is an HTTP 500 with an OpenAI-style body.
  The time to the headers is therefore the time to first token, not the time queued.
- A simulated connection reset drops the connection in the middle of the body: the
  client sees an incomplete (chunked) response, a connection error, not a status.
- When the client goes away — queued, before the first token, between two tokens —
  the model's stream is cancelled at once: its place in the queue or its slot is
  freed and the model counts the request as aborted, as vLLM aborts a request whose
  client disconnected.

Hardening (``SimServer``): the app is wrapped in ``critpath.serve.guard.Guard`` (the
``Host`` header must be a loopback name or the bound host — DNS rebinding is
refused —, and POSTs must be ``application/json``); request JSON nested deeper than
64 levels is a 400; a prompt plus ``max_tokens`` past the model's context window
(``context=ContextLimits(...)``, 32768 tokens by default) is a 400 with vLLM's
message; uvicorn limits concurrent connections (``limit_concurrency``: a 503 beyond)
and closes idle keep-alive connections after ``timeout_keep_alive`` seconds; request
headers are bounded by h11 (16 KiB) and bodies by 8 MiB. uvicorn has no timeout for
a client that trickles its headers: the connection limit bounds what such clients
can hold.

``SimServer`` runs the app under uvicorn in the running event loop (port 0: a free
port; ``server.port`` says which) and ``serve`` runs one until interrupted. Only
loopback hosts are served unless ``allow_remote=True``.

Starlette and uvicorn are the ``serve`` extra (``pip install 'critpath[serve]'``); they
are imported when an app is built, so ``import critpath`` never needs them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from critpath.adapters.sim.endpoints import CompletionEndpoint, FleetService, SimulatedReset
from critpath.adapters.sim.fleet import Fleet
from critpath.adapters.sim.limits import ContextLimits
from critpath.adapters.sim.wire import error_body
from critpath.errors import ConfigError
from critpath.serve.guard import LOOPBACK_HOSTS, Guard
from critpath.serve.net import bind_socket, check_host

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette

__all__ = ["SimServer", "build_fleet", "check_host", "create_app", "parse_faults", "serve"]

_SERVE_HINT = "the simulated server needs starlette and uvicorn: pip install 'critpath[serve]'"
_FAULTS = {"straggler": "straggler_p", "error": "error_p", "reset": "reset_p", "stall": "stall_p"}


# ---- options ------------------------------------------------------------------------


def parse_faults(spec: str) -> dict[str, float]:
    """``"straggler=0.05,error=0.01,reset=0.01,stall=0.01"`` as latency-profile fields
    (``straggler_p``, ``error_p``, ``reset_p``, ``stall_p``); ``ConfigError`` if invalid.

    A request has at most one fault, so ``error + reset + stall`` must not exceed 1.

    >>> parse_faults("error=0.01, straggler=0.05")
    {'error_p': 0.01, 'straggler_p': 0.05}
    """
    out: dict[str, float] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in _FAULTS:
            raise ConfigError(
                f"bad fault {item.strip()!r}: use NAME=PROBABILITY with NAME one of "
                + ", ".join(_FAULTS)
            )
        try:
            p = float(value)
        except ValueError:
            raise ConfigError(f"bad fault {item.strip()!r}: {value!r} is not a number") from None
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"bad fault {item.strip()!r}: a probability is in [0, 1]")
        out[_FAULTS[key]] = p
    if sum(out.get(k, 0.0) for k in ("error_p", "reset_p", "stall_p")) > 1.0:
        raise ConfigError("error + reset + stall must not exceed 1 (one fault per request)")
    return out


def build_fleet(
    *,
    sizes: Sequence[str] = ("small", "medium", "large"),
    data: str | Path | None = None,
    models: Sequence[str] | None = None,
    replicas: int = 1,
    seed: int = 0,
    time_scale: float = 1.0,
    faults: dict[str, float] | None = None,
    max_num_seqs: int | None = None,
    prefix_cache_blocks: int | None = None,
    profile: str | Path | None = None,
) -> Fleet:
    """The fleet ``critpath sim-server`` serves: synthetic models named by ``sizes``, or
    with ``data`` the recorded ``models`` (all of them by default), or with ``profile``
    the model a server-profile file measured (``critpath profile --out``; see
    ``measured``), with ``faults`` (from ``parse_faults``) and ``max_num_seqs`` applied
    to every replica, and with ``prefix_cache_blocks`` a prefix cache of that many
    blocks on each replica."""
    if profile is not None:
        from critpath.adapters.sim.measured import measured_fleet

        if data is not None or models:
            raise ConfigError("a measured profile serves its own model: give it without data")
        fleet = measured_fleet(profile, replicas=replicas, seed=seed, time_scale=time_scale)
    elif data is not None:
        from critpath.strategies.data import recorded_dir  # the recorded format's lookup

        fleet = Fleet.recorded(
            recorded_dir(data),
            models or None,
            seed=seed,
            time_scale=time_scale,
            replicas=replicas,
        )
    elif models:
        raise ConfigError(
            "models name recorded models: give data= (--data); "
            "synthetic models are named by their sizes (--fleet)"
        )
    else:
        fleet = Fleet.synthetic(sizes, seed=seed, time_scale=time_scale, replicas=replicas)
    changes: dict[str, float | int] = dict(faults or {})
    if max_num_seqs is not None:
        changes["max_num_seqs"] = max_num_seqs
    fleet = fleet.with_profile(**changes) if changes else fleet
    return fleet.with_prefix_caching(prefix_cache_blocks) if prefix_cache_blocks else fleet


# ---- the app ------------------------------------------------------------------------


class _QuietResets(logging.Filter):
    """Keep uvicorn from logging a simulated reset as an application error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedReset)


_QUIET_RESETS = _QuietResets()


def create_app(fleet: Fleet) -> Starlette:
    """The Starlette app that serves ``fleet`` (see the module docstring)."""
    return _build_app(FleetService(fleet))


def _build_app(service: FleetService) -> Starlette:
    try:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.requests import Request
        from starlette.responses import JSONResponse, PlainTextResponse, Response
        from starlette.routing import Route
    except ImportError as exc:
        raise ConfigError(_SERVE_HINT) from exc

    uvicorn_log = logging.getLogger("uvicorn.error")
    if _QUIET_RESETS not in uvicorn_log.filters:
        uvicorn_log.addFilter(_QUIET_RESETS)

    async def models(request: Request) -> Response:
        return JSONResponse(service.models())

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(service.metrics(), media_type="text/plain; version=0.0.4")

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "Internal Server Error"
        headers = exc.headers if isinstance(exc, HTTPException) else None
        return JSONResponse(error_body(status, detail), status_code=status, headers=headers)

    routes = [
        Route("/v1/chat/completions", CompletionEndpoint(service, chat=True), methods=["POST"]),
        Route("/v1/completions", CompletionEndpoint(service, chat=False), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


# ---- running it ---------------------------------------------------------------------


class SimServer:
    """``create_app(fleet)`` under uvicorn on ``host:port``, in the running event loop.

    ::

        async with SimServer(fleet, port=0) as server:   # port 0: any free port
            llm = OpenAICompatible(server.base_url, "small")

    Shutting down — ``stop()``, leaving the block, or SIGINT / SIGTERM — is graceful:
    answers in progress get ``shutdown_timeout`` seconds to finish, then their
    generations are cancelled and their connections dropped.
    """

    def __init__(
        self,
        fleet: Fleet,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
        log_level: str = "warning",
        access_log: bool = False,
        shutdown_timeout: float = 2.0,
        context: ContextLimits | None = None,
        limit_concurrency: int = 512,
        timeout_keep_alive: int = 5,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        check_host(host, allow_remote)
        if limit_concurrency < 1 or not timeout_keep_alive > 0:
            raise ConfigError("limit_concurrency must be >= 1 and timeout_keep_alive > 0")
        if not 0 <= port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {port}")
        self.fleet = fleet
        self.host = host
        self.port = port
        self.log_level = log_level
        self.access_log = access_log
        self.shutdown_timeout = shutdown_timeout
        self.context = context
        self.limit_concurrency = limit_concurrency
        self.timeout_keep_alive = timeout_keep_alive
        self.allowed_hosts = frozenset(LOOPBACK_HOSTS | {host.lower()} | set(allowed_hosts))
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT``; the port is the bound one once started."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://HOST:PORT/v1``."""
        return self.url + "/v1"

    async def start(self) -> None:
        """Bind, start serving, and return once the server accepts connections."""
        if self._task is not None:
            raise ConfigError("this SimServer was already started")
        try:
            import uvicorn
        except ImportError as exc:
            raise ConfigError(_SERVE_HINT) from exc
        service = FleetService(self.fleet, self.context)
        app = Guard(_build_app(service), allowed_hosts=self.allowed_hosts)
        sock = bind_socket(self.host, self.port)
        ready = asyncio.Event()
        grace = self.shutdown_timeout

        class _Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                ready.set()

            async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
                # uvicorn waits for every connection to close; after the grace period,
                # drop the answers still running so that theirs do.
                timer = asyncio.get_running_loop().call_later(grace, service.drop_all)
                try:
                    await super().shutdown(sockets=sockets)
                finally:
                    timer.cancel()

        config = uvicorn.Config(
            app,
            lifespan="off",
            ws="none",
            log_config=None,
            log_level=self.log_level,
            access_log=self.access_log,
            timeout_graceful_shutdown=math.ceil(grace) + 1,  # a backstop: cancels the rest
            limit_concurrency=self.limit_concurrency,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        server = _Server(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        waiter = asyncio.create_task(ready.wait())
        try:
            await asyncio.wait((waiter, self._task), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not ready.is_set():
            sock.close()
            await self._task  # raises why it stopped
            raise ConfigError(f"the server on {self.host}:{self.port} stopped while starting")
        self.port = int(server.servers[0].sockets[0].getsockname()[1])

    async def wait(self) -> None:
        """Until the server stops (``stop()``, or SIGINT / SIGTERM, which uvicorn handles)."""
        if self._task is None:
            raise ConfigError("this SimServer was not started")
        await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Stop serving and wait until the server has shut down."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"SimServer({self.url!r}, models={self.fleet.names()!r})"


async def serve(
    fleet: Fleet,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    allow_remote: bool = False,
    on_ready: Callable[[SimServer], object] | None = None,
    log_level: str = "warning",
    access_log: bool = False,
) -> None:
    """Serve ``fleet`` until interrupted (SIGINT / SIGTERM) or cancelled.

    ``on_ready(server)`` is called once the server listens (``server.url`` holds the
    bound port when ``port`` is 0).
    """
    async with SimServer(
        fleet, host, port, allow_remote=allow_remote, log_level=log_level, access_log=access_log
    ) as server:
        if on_ready is not None:
            on_ready(server)
        await server.wait()
