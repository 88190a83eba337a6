"""Serve any ASGI app under uvicorn on loopback, inside the running event loop.

For examples, tests and load tests (``critpath loadtest`` against a service)::

    async with AppServer(app) as server:     # port 0: any free port
        httpx.get(server.url + "/healthz")

Needs the ``serve`` extra (uvicorn). Binds loopback only unless ``allow_remote``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from critpath.errors import ConfigError
from critpath.serve.net import bind_socket, check_host

__all__ = ["AppServer"]


class AppServer:
    """``app`` served on ``host:port`` until ``stop()`` or the end of the block."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, *, allow_remote: bool = False,
        lifespan: Literal["auto", "on", "off"] = "on",
    ) -> None:  # fmt: skip
        check_host(host, allow_remote)
        self.app = app
        self.host = host
        self.port = port
        self.lifespan = lifespan
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        try:
            import uvicorn
        except ImportError as exc:
            raise ConfigError("serving needs uvicorn: pip install 'critpath[serve]'") from exc
        sock = bind_socket(self.host, self.port)
        try:
            await self._serve(uvicorn, sock)
        except BaseException:
            sock.close()
            raise

    async def _serve(self, uvicorn: Any, sock: Any) -> None:
        config = uvicorn.Config(self.app, lifespan=self.lifespan, ws="none", log_config=None,
                                log_level="warning", access_log=False,
                                timeout_graceful_shutdown=2)  # fmt: skip
        self._server = server = uvicorn.Server(config)

        async def serve() -> None:
            try:
                await server.serve(sockets=[sock])
            except SystemExit as exc:  # uvicorn exits when the app's startup fails
                raise ConfigError(f"the app failed to start (uvicorn exit {exc.code})") from None

        self._task = task = asyncio.create_task(serve())
        try:
            while not server.started:
                if task.done():
                    await task
                    raise ConfigError(f"the server on {self.host}:{self.port} stopped starting")
                await asyncio.sleep(0.005)
        except BaseException:
            if not task.done():
                server.should_exit = True
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._task = None
            raise
        self.port = int(server.servers[0].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task

    async def __aenter__(self) -> AppServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
