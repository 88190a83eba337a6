"""A real ``redis-server`` on 127.0.0.1 for tests: started on a free port, stopped after.

``RedisServer`` starts Debian's ``redis-server`` (no persistence: ``--save ''
--appendonly no``) on an ephemeral loopback port, waits until it answers ``PING``, and
stops it (terminate, then kill) on exit. ``redis_or_skip()`` says why Redis tests
cannot run (no ``redis-server`` binary or no redis-py) and skips, unless
``CRITPATH_REQUIRE_REDIS=1``, where it fails instead (as ``.ci/run`` sets).

Kept independent of conftest.py so that other test modules can share it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from types import TracebackType

import pytest

__all__ = ["RedisServer", "redis_fixture", "redis_or_skip"]


def redis_or_skip() -> str:
    """The path of ``redis-server``; skips (or fails when required) without it or redis-py."""
    binary = shutil.which("redis-server")
    problem = None
    if binary is None:
        problem = "no redis-server on PATH (apt-get install redis-server)"
    else:
        try:
            import redis  # noqa: F401
        except ImportError:
            problem = "redis-py is not installed (pip install 'critpath[redis]')"
    if problem is not None:
        if os.environ.get("CRITPATH_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis required but unavailable: {problem}")
        pytest.skip(problem)
    assert binary is not None
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``with RedisServer() as server: server.url``; see the module docstring."""

    def __init__(self, binary: str = "redis-server", *, startup_timeout: float = 10.0) -> None:
        self.binary = binary
        self.port = _free_port()
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        self._dir = tempfile.TemporaryDirectory(prefix="critpath-redis-")
        self._proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", self._dir.name, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                self.__exit__(None, None, None)
                raise RuntimeError(f"redis-server exited: {err}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.__exit__(None, None, None)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def redis_fixture() -> Iterator[RedisServer]:
    """The body of a ``redis`` pytest fixture: a running server, or a skip (a failure
    when ``CRITPATH_REQUIRE_REDIS=1``)."""
    binary = redis_or_skip()
    with RedisServer(binary) as server:
        yield server
