"""critpath on Ray Serve: ASGI apps, graphs and simulated model replicas as deployments.

Ray Serve runs each deployment as replicas (Ray actors) behind one HTTP proxy, routes
every request to a replica with room (``max_ongoing_requests``), and scales the number
of replicas with the load (``autoscaling``). critpath uses it as it is:

- ``asgi_deployment(build, ...)``: any ASGI app (the example chat service, a
  Starlette app embedding critpath) built *inside* each replica by ``build`` (a
  ``"module:function"`` string or an importable function), so nothing unpicklable
  crosses processes. ``ReplicaHealth`` wraps an app so that ``GET /healthz`` names
  the replica that answered (and every response carries ``x-critpath-replica``).
- ``graph_app(build_graph)``: a critpath ``Graph`` as an ASGI app (``POST /run``
  with the inputs as JSON, answering the output and the run's critical path), to
  deploy the same way.
- ``sim_model_deployment(...)``: simulated model replicas as a deployment serving the
  OpenAI-compatible API of ``critpath sim-server``; critpath reaches them through
  ``OpenAICompatible`` as it reaches vLLM, so priority (in the body), deadlines
  (client timeouts) and cancellation (a closed stream: Ray Serve cancels the replica's
  request, the simulated server aborts the generation) still reach the model server.
  On GPUs, Ray Serve LLM (``ray.serve.llm``) deploys vLLM the same way and is reached
  the same way (docs/DEPLOYMENT.md).
- ``start_ray()`` / ``start_http()`` / ``run_app()``: join a running Ray cluster, or
  start a local one; serve HTTP on 127.0.0.1 unless told otherwise.

Ray is the ``ray`` extra (``pip install 'critpath[ray]'``); it is imported when a
function here is called, never by ``import critpath``. Replicas default to
``num_cpus=0`` (critpath apps wait on I/O; bound their load by
``max_ongoing_requests``, not by CPU reservations).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from critpath.adapters.sim.server import check_host
from critpath.errors import ConfigError

__all__ = [
    "REPLICA_HEADER",
    "ReplicaHealth",
    "asgi_deployment",
    "graph_app",
    "replica_name",
    "run_app",
    "shutdown",
    "sim_model_deployment",
    "start_http",
    "start_ray",
]

_HINT = "Ray Serve deployments need ray: pip install 'critpath[ray]'"
REPLICA_HEADER = "x-critpath-replica"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _ray() -> Any:
    try:
        import ray
        from ray import serve  # noqa: F401
    except ImportError as exc:
        raise ConfigError(_HINT) from exc
    return ray


# ---- the replica's identity ---------------------------------------------------------


def replica_name() -> str:
    """The Ray Serve replica running this code (``"<app>#<deployment>#<id>"``), or
    ``"local-<pid>"`` outside Ray Serve."""
    try:
        from ray import serve

        ctx = serve.get_replica_context()
    except Exception:  # not inside a replica (or no Ray at all)
        return f"local-{os.getpid()}"
    rid = ctx.replica_id
    return f"{rid.deployment_id.app_name}#{rid.deployment_id.name}#{rid.unique_id}"


class ReplicaHealth:
    """Middleware: ``GET /healthz`` answers the wrapped app's JSON object plus
    ``"replica"``; every HTTP response carries the ``x-critpath-replica`` header."""

    def __init__(self, app: ASGIApp, *, path: str = "/healthz") -> None:
        self.app = app
        self.path = path
        self._name: str | None = None

    @property
    def name(self) -> str:
        if self._name is None:
            self._name = replica_name()
        return self._name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (REPLICA_HEADER.encode(), self.name.encode())
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):  # mounted under a route prefix
            path = path[len(root) :]
        if path != self.path or scope.get("method") != "GET":

            async def tagged(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), header]
                await send(message)

            await self.app(scope, receive, tagged)
            return
        start: Message = {}
        body = bytearray()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        await self.app(scope, receive, capture)
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = None
        status = int(start.get("status", 200))
        payload = {**data, "replica": self.name} if isinstance(data, dict) else None
        out = json.dumps(payload).encode() if payload is not None else bytes(body)
        headers = [(k, v) for k, v in start.get("headers", [])
                   if k.lower() not in (b"content-length",)]  # fmt: skip
        headers += [(b"content-length", str(len(out)).encode()), header]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})


# ---- a graph as an app --------------------------------------------------------------


def graph_app(build_graph: Callable[[], Any], *, deadline: float | None = None) -> ASGIApp:
    """A critpath ``Graph`` (from ``build_graph()``) as an ASGI app: ``POST /run`` with
    the inputs as a JSON object answers ``{"output", "critical_path", "makespan_s"}``;
    a run that fails answers 500 with the error. Needs starlette (``serve`` extra)."""
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route
    except ImportError as exc:
        raise ConfigError("graph_app needs starlette: pip install 'critpath[serve]'") from exc
    from critpath.errors import CritpathError

    graph = build_graph()

    async def run(request: Request) -> Response:
        try:
            inputs = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        if not isinstance(inputs, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        try:
            result = await graph.run(inputs, deadline=deadline)
        except CritpathError as exc:
            status = 400 if isinstance(exc, ConfigError) else 500
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=status)
        report = result.report
        return JSONResponse({"output": result.output, "critical_path": list(report.critical_path),
                             "makespan_s": report.makespan})  # fmt: skip

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "graph": graph.name})

    return Starlette(routes=[Route("/run", run, methods=["POST"]), Route("/healthz", healthz)])


# ---- deployments --------------------------------------------------------------------


def _resolve(build: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(build):
        return build
    module, sep, attr = build.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"build must be 'module:function', got {build!r}")
    import importlib

    fn = getattr(importlib.import_module(module), attr, None)
    if not callable(fn):
        raise ConfigError(f"{build!r} is not a callable")
    return fn  # type: ignore[no-any-return]


def _options(
    name: str,
    replicas: int | tuple[int, int],
    max_ongoing_requests: int,
    num_cpus: float,
    target_ongoing_requests: float | None,
    env: Mapping[str, str] | None,
) -> dict[str, Any]:
    if max_ongoing_requests < 1:
        raise ConfigError("max_ongoing_requests must be >= 1")
    opts: dict[str, Any] = {
        "name": name,
        "max_ongoing_requests": max_ongoing_requests,
        "ray_actor_options": {"num_cpus": num_cpus, "runtime_env": _runtime_env(env)},
    }
    if isinstance(replicas, tuple):
        lo, hi = replicas
        if not 0 <= lo <= hi or hi < 1:
            raise ConfigError(f"autoscaling needs 0 <= min <= max, max >= 1; got {replicas}")
        target = target_ongoing_requests or max(1.0, max_ongoing_requests * 0.7)
        opts["autoscaling_config"] = {"min_replicas": lo, "max_replicas": hi,
                                      "target_ongoing_requests": target}  # fmt: skip
    else:
        if replicas < 1:
            raise ConfigError(f"replicas must be >= 1, got {replicas}")
        opts["num_replicas"] = replicas
    return opts


def _runtime_env(env: Mapping[str, str] | None) -> dict[str, Any]:
    """Replicas import what the driver imports (its ``sys.path`` goes with them) and
    see ``env``."""
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    return {"env_vars": {**(env or {}), "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}


def asgi_deployment(
    build: str | Callable[..., ASGIApp],
    *,
    name: str = "app",
    replicas: int | tuple[int, int] = 1,
    max_ongoing_requests: int = 16,
    num_cpus: float = 0.0,
    target_ongoing_requests: float | None = None,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    health: bool = True,
) -> Any:
    """A bound Ray Serve application serving the ASGI app ``build(*args, **kwargs)``,
    built in each replica (wrapped in ``ReplicaHealth`` unless ``health=False``).

    ``replicas``: a number, or ``(min, max)`` to autoscale on ongoing requests per
    replica (``target_ongoing_requests``, default 70% of ``max_ongoing_requests``).
    ``env``: environment variables of the replicas (e.g. the app's configuration).
    """
    ray = _ray()
    serve = ray.serve
    if isinstance(build, str):
        _resolve(build)  # fail here, not in a replica
    opts = _options(name, replicas, max_ongoing_requests, num_cpus, target_ongoing_requests, env)
    call_args, call_kwargs, wrap = tuple(args), dict(kwargs or {}), health

    class AsgiReplica:
        def __init__(self) -> None:
            pass

        def __serve_build_asgi_app__(self) -> ASGIApp:
            app = _resolve(build)(*call_args, **call_kwargs)
            return ReplicaHealth(app) if wrap else app

    AsgiReplica.__name__ = AsgiReplica.__qualname__ = f"AsgiReplica_{name}"
    deployment = serve.deployment(**opts)(serve.ingress()(AsgiReplica))
    return deployment.bind()


def _sim_app(sizes: Sequence[str], time_scale: float, max_num_seqs: int | None,
             seed: int) -> ASGIApp:  # fmt: skip
    from critpath.adapters.sim.server import build_fleet, create_app

    fleet = build_fleet(sizes=sizes, time_scale=time_scale, max_num_seqs=max_num_seqs, seed=seed)
    return create_app(fleet)


def sim_model_deployment(
    *,
    name: str = "sim",
    sizes: Sequence[str] = ("small", "medium", "large"),
    replicas: int | tuple[int, int] = 1,
    time_scale: float = 1.0,
    max_num_seqs: int | None = None,
    max_ongoing_requests: int = 64,
    seed: int = 0,
) -> Any:
    """Simulated model replicas (the ``critpath sim-server`` API: ``/v1/...``,
    ``/metrics``) as a Ray Serve application; reach it with ``OpenAICompatible(url +
    "/v1", size)`` where ``url`` is its route prefix on the Serve proxy."""
    return asgi_deployment(
        _sim_app, name=name, replicas=replicas, max_ongoing_requests=max_ongoing_requests,
        args=(tuple(sizes), time_scale, max_num_seqs, seed),
    )  # fmt: skip


# ---- running ------------------------------------------------------------------------


def start_ray(*, address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address`` (``RAY_ADDRESS``, or one running on this
    machine), or start a local one (its node on 127.0.0.1, no dashboard). Returns
    ``True`` when it started one (``shutdown()`` stops it)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        ray.init(address=address or "auto", logging_level="ERROR", log_to_driver=False)
        return False
    except ConnectionError:
        if address:
            raise ConfigError(f"no Ray cluster at {address!r}") from None
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="ERROR", log_to_driver=False)  # fmt: skip
    return True


def start_http(host: str = "127.0.0.1", port: int = 8000, *, allow_remote: bool = False) -> str:
    """Start Ray Serve's HTTP proxy on ``host:port`` (loopback unless ``allow_remote``);
    returns its URL."""
    check_host(host, allow_remote)
    serve = _ray().serve
    serve.start(http_options={"host": host, "port": port}, detached=False)
    return f"http://{host}:{port}"


def run_app(app: Any, *, name: str, route_prefix: str = "/") -> None:
    """Deploy a bound application and return once its replicas are serving."""
    serve = _ray().serve
    serve.run(app, name=name, route_prefix=route_prefix, blocking=False)


def shutdown(*, stop_ray: bool) -> None:
    """Stop every Serve application, or, with ``stop_ray``, the local Ray this process
    started (which stops its applications with it)."""
    ray = _ray()
    if not ray.is_initialized():
        return
    if stop_ray:
        ray.shutdown()
    else:
        ray.serve.shutdown()
