"""``critpath bench adaptive``: the benchmark lives in ``critpath.bench.adaptive``."""

from critpath.bench.adaptive import VIRTUAL_TIME, add_arguments, render, run

__all__ = ["VIRTUAL_TIME", "add_arguments", "render", "run"]
