"""A throwaway ``redis-server`` on 127.0.0.1 for tests of state shared across processes.

``RedisServer()`` starts Debian's ``redis-server`` on a free loopback port with no
persistence (``--save '' --appendonly no``) and stops it on ``stop()``. Tests that need
one use ``redis_url`` (from ``redis_fixture``): skipped when ``redis-server`` or redis-py
is missing, unless ``CRITPATH_REQUIRE_REDIS=1``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

__all__ = ["RedisServer", "redis_fixture"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="critpath-redis-")
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir.name, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        self._dir.cleanup()


def redis_fixture() -> Iterator[RedisServer]:
    """The body of a ``redis`` fixture: a server, or a skip (a failure when required)."""
    required = os.environ.get("CRITPATH_REQUIRE_REDIS") == "1"
    try:
        import redis  # noqa: F401
    except ImportError:
        if required:
            raise
        pytest.skip("redis-py is not installed (pip install 'critpath[redis]')")
    if shutil.which("redis-server") is None:
        if required:
            pytest.fail("CRITPATH_REQUIRE_REDIS=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()
