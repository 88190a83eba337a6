"""The benchmarks ``critpath bench`` runs, by name: an explicit registry.

A benchmark module defines ``add_arguments(parser)``, ``async def run(args) -> dict``
and ``render(result) -> str``; ``VIRTUAL_TIME = True`` runs it on a virtual-time event
loop (a pure simulation). Only the names below can be loaded, each from its module in
this package: nothing is looked up on disk, so no path, relative or absolute, and no
other ``benchmarks`` package on ``sys.path`` is ever run.

>>> "runtime" in names() and names() == sorted(names())
True
>>> load("../runtime")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
critpath.errors.ConfigError: unknown benchmark '../runtime'; available: adapter, ...
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any

from critpath.errors import ConfigError

__all__ = ["BENCHMARKS", "Benchmark", "load", "names"]

BENCHMARKS: Mapping[str, str] = MappingProxyType({
    "adapter": "critpath.bench.adapter",
    "adaptive": "critpath.bench.adaptive",
    "agent": "critpath.bench.agent",
    "cache": "critpath.bench.cache",
    "cascade": "critpath.bench.cascade",
    "faults": "critpath.bench.faults",
    "hedge": "critpath.bench.hedge",
    "priority": "critpath.bench.priority",
    "runtime": "critpath.bench.runtime",
    "scale": "critpath.bench.scale",
    "speculation": "critpath.bench.speculation",
})  # fmt: skip
"""Benchmark name -> the module (in this package) that implements it."""

Result = dict[str, Any]


def names() -> list[str]:
    """The available benchmarks, sorted."""
    return sorted(BENCHMARKS)


@dataclass(frozen=True, slots=True)
class Benchmark:
    """One benchmark: its arguments, its run, how it prints, and its clock."""

    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, Result]]
    render: Callable[[Result], str]
    virtual_time: bool

    def execute(self, args: argparse.Namespace) -> Result:
        """Run it to the end: on virtual time for a simulation, else on a real loop."""
        if self.virtual_time:
            from critpath.adapters.sim.clock import run_virtual

            return run_virtual(self.run(args))
        return asyncio.run(self.run(args))


def load(name: str) -> Benchmark:
    """The benchmark registered as ``name``; ``ConfigError`` (naming the available ones)
    for any other name."""
    module_name = BENCHMARKS.get(name)
    if module_name is None:
        raise ConfigError(f"unknown benchmark {name!r}; available: {', '.join(names())}")
    return _from_module(name, importlib.import_module(module_name))


def _from_module(name: str, module: ModuleType) -> Benchmark:
    parts: list[Any] = [getattr(module, a, None) for a in ("add_arguments", "run", "render")]
    if not all(callable(p) for p in parts):
        raise ConfigError(f"benchmark {name!r} lacks add_arguments, run or render")
    add_arguments, run, render = parts
    return Benchmark(name, add_arguments, run, render,
                     bool(getattr(module, "VIRTUAL_TIME", False)))  # fmt: skip
