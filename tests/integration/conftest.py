"""Integration tests against a real vLLM: an OpenAI-compatible server, and the engine.

The server tests need ``CRITPATH_VLLM_URL`` (e.g. ``http://127.0.0.1:8011/v1``) and
``CRITPATH_VLLM_MODEL``; the engine tests need ``CRITPATH_VLLM_MODEL_PATH`` and vLLM
importable. ``.ci/run`` builds a tiny model, starts the server and sets them, with
``CRITPATH_REQUIRE_VLLM=1`` (and ``CRITPATH_REQUIRE_VLLM_ENGINE=1`` for the engine
run): there a missing server or engine is a failure, not a skip. Locally the tests
skip with a message saying what to set (``scripts/vllm_server.sh`` starts one).
"""

from __future__ import annotations

import os

import pytest


def _need(var: str, require_var: str, what: str) -> str:
    value = os.environ.get(var)
    if value:
        return value
    message = f"{what}: set {var} (see scripts/vllm_server.sh and DEVELOPERS.md)"
    if os.environ.get(require_var) == "1":
        pytest.fail(f"required but unavailable: {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def vllm_url() -> str:
    return _need("CRITPATH_VLLM_URL", "CRITPATH_REQUIRE_VLLM", "no vLLM server")


@pytest.fixture(scope="session")
def vllm_model() -> str:
    return _need("CRITPATH_VLLM_MODEL", "CRITPATH_REQUIRE_VLLM", "no vLLM model name")


@pytest.fixture(scope="session")
def vllm_model_path() -> str:
    return _need(
        "CRITPATH_VLLM_MODEL_PATH", "CRITPATH_REQUIRE_VLLM_ENGINE", "no model for the engine"
    )
