"""Running critpath apps over HTTP: where servers may listen, and ASGI apps under uvicorn.

- ``net``: ``check_host`` (loopback unless allowed), ``bind_socket``, ``is_loopback``;
  used by ``critpath sim-server``, ``AppServer`` and the load tester.
- ``asgi``: ``AppServer``, any ASGI app under uvicorn on loopback, inside the running
  event loop (the ``serve`` extra; uvicorn is imported only when a server starts).
"""

from critpath.serve.asgi import AppServer
from critpath.serve.net import bind_socket, check_host, is_loopback

__all__ = ["AppServer", "bind_socket", "check_host", "is_loopback"]
