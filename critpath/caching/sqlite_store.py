"""``SQLiteStore``: an embedded, persistent store, shared by the processes of one machine.

One SQLite file (``path``); every process (and every store object) opens its own
connection, and SQLite's locking keeps them consistent: the file is in WAL mode (readers
never wait for the writer) with a busy timeout, so concurrent processes queue rather
than fail. Entries expire at a wall-clock time (``time.time()``, comparable across
processes) and the least recently used are evicted past ``max_entries``.

Why ``sqlite3`` in a thread and not ``aiosqlite``: ``aiosqlite`` is exactly this — one
connection driven by one dedicated thread — behind another dependency. Here the store
owns a single-thread executor and its connection is only ever touched by that thread
(sqlite3 connections must not be shared between threads), so the event loop never
blocks on disk, and nothing is added to the dependencies. ``aclose()`` closes the
connection and stops the thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from critpath.errors import CacheStoreError, ConfigError

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS critpath_cache (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires REAL,
    used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS critpath_cache_used ON critpath_cache (used);
"""


class SQLiteStore:
    """A store in the SQLite file ``path``; see the module docstring.

    ``max_entries``: past it the least recently used entries are deleted (checked on
    every ``set``); ``busy_timeout``: seconds a write waits for another process's lock
    before the operation fails (a ``CacheStoreError``: a miss for the cache).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_entries: int = 100_000,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise ConfigError("SQLiteStore: max_entries must be >= 1")
        self.path = Path(path)
        self.max_entries = max_entries
        self._busy_ms = int(busy_timeout * 1000)
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only by the executor's thread
        self._closed = False

    @property
    def kind(self) -> str:
        return "sqlite"

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, max_entries={self.max_entries})"

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise CacheStoreError(f"{self!r} is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="critpath-sqlite")

        def call() -> T:
            if self._conn is None:
                self._conn = self._connect()
            return fn(self._conn)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except (sqlite3.Error, OSError) as exc:
            raise CacheStoreError(f"{self!r}: {type(exc).__name__}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_ms / 1000, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        return conn

    async def get(self, key: str) -> bytes | None:
        now = self._clock()

        def get(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT value, expires FROM critpath_cache WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            value, expires = row
            if expires is not None and expires <= now:
                conn.execute("DELETE FROM critpath_cache WHERE key = ? AND expires <= ?",
                             (key, now))  # fmt: skip
                return None
            conn.execute("UPDATE critpath_cache SET used = ? WHERE key = ?", (now, key))
            return bytes(value)

        return await self._run(get)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        if ttl is not None and not ttl > 0:
            raise ConfigError("ttl must be > 0 seconds (or None)")
        now = self._clock()
        expires = None if ttl is None else now + ttl
        limit = self.max_entries

        def put(conn: sqlite3.Connection) -> None:
            with conn:  # one transaction
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT OR REPLACE INTO critpath_cache (key, value, expires, used) "
                    "VALUES (?, ?, ?, ?)",
                    (key, value, expires, now),
                )
                conn.execute("DELETE FROM critpath_cache WHERE expires <= ?", (now,))
                (count,) = conn.execute("SELECT COUNT(*) FROM critpath_cache").fetchone()
                if count > limit:
                    conn.execute(
                        "DELETE FROM critpath_cache WHERE key IN (SELECT key FROM "
                        "critpath_cache ORDER BY used LIMIT ?)",
                        (count - limit,),
                    )

        await self._run(put)

    async def count(self) -> int:
        """Entries in the file now (expired ones not yet purged included)."""

        def count(conn: sqlite3.Connection) -> int:
            (n,) = conn.execute("SELECT COUNT(*) FROM critpath_cache").fetchone()
            return int(n)

        return await self._run(count)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        executor = self._executor
        if executor is None:
            return

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await asyncio.get_running_loop().run_in_executor(executor, close)
        finally:
            executor.shutdown(wait=False)
