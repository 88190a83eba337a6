"""What importing a part of critpath loads: clients of a real server never load the
simulator (its server, its wire format) nor the ``serve`` extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("critpath.adapters.sim", "critpath.adapters.sim.server", "critpath.adapters.sim.wire",
         "starlette", "uvicorn")  # fmt: skip


@pytest.mark.parametrize(
    "module", ["critpath", "critpath.adapters", "critpath.adapters.openai_http"]
)
def test_importing_does_not_load_the_simulator(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"loaded = sorted(set({HEAVY!r}) & set(sys.modules))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_simulator_is_there_on_first_use() -> None:
    import critpath.adapters as adapters
    from critpath.adapters.sim import Fleet, SimulatedModel

    assert adapters.Fleet is Fleet
    assert adapters.SimulatedModel is SimulatedModel
    with pytest.raises(AttributeError):
        _ = adapters.NoSuchThing  # type: ignore[attr-defined]
