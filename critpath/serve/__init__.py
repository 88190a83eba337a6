"""Running critpath apps: over HTTP on one machine, on Ray Serve, and with state
shared across processes through Redis.

- ``net``: ``check_host`` (loopback unless allowed), ``bind_socket``, ``is_loopback``;
  used by ``critpath sim-server``, ``AppServer`` and the load tester.
- ``asgi``: ``AppServer``, any ASGI app under uvicorn on loopback, inside the running
  event loop (the ``serve`` extra; uvicorn is imported only when a server starts).
- ``redis_limiter``: ``SharedLimiter``, concurrency slots shared by every process;
  ``redis_estimates``: ``SharedEstimates``, learned latencies shared by the fleet
  (the ``redis`` extra).
- ``ray_serve``: ASGI apps, graphs and simulated model replicas as Ray Serve
  deployments (the ``ray`` extra).

Every module imports its third-party package (uvicorn, ray, redis) only when used, so
``import critpath.serve`` needs none of them.
"""

from critpath.serve.asgi import AppServer
from critpath.serve.net import bind_socket, check_host, is_loopback

__all__ = ["AppServer", "bind_socket", "check_host", "is_loopback"]
