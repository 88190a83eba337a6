"""The benchmarks that ship with critpath (``critpath bench NAME``), and their helpers.

Timing claims live here, not in tests: each benchmark compares side by side in one
run and reports ratios; figures, commands and dates are in ``docs/BENCHMARKS.md``.

- ``registry``: ``BENCHMARKS`` (name -> module) and ``load(name)``, the only way a
  benchmark is found: by name in the package, never by a path on disk.
- ``runtime``, ``adapter``, ``hedge``, ``priority``, ``speculation``, ``cascade``,
  ``adaptive``, ``agent``, ``cache``, ``faults``, ``scale``: the benchmarks (each:
  ``add_arguments``, ``async run(args) -> dict``, ``render``).
- ``peers``: other frameworks measured beside critpath (LangGraph, the ``openai``
  client), reported as skipped when not installed.
- ``plots`` (SVG charts) and ``progress`` (a progress bar), shared with ``critpath
  loadtest`` and ``critpath demo``.
"""

from critpath.bench.registry import BENCHMARKS, Benchmark, load, names

__all__ = ["BENCHMARKS", "Benchmark", "load", "names"]
