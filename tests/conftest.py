"""Shared fixtures: ``fault_server``, a misbehaving OpenAI-compatible server on loopback."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# The tests run with --import-mode=importlib, which puts no test folder on sys.path:
# make the helper module next to this file importable as ``fault_server``.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_server import FaultServer


@pytest.fixture
async def fault_server() -> AsyncIterator[FaultServer]:
    async with FaultServer() as server:
        yield server
        assert not server.errors, f"the fault server itself failed: {server.errors!r}"
