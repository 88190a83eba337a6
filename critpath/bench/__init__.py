"""The benchmarks that ship with critpath (on this branch: ``scale``; main has the rest).

When merging, keep main's version of this file and register ``scale`` in its registry.
"""

__all__: list[str] = []
