"""The benchmarks that ship with critpath (``critpath bench NAME``).

Each benchmark module defines ``add_arguments(parser)``, ``async def run(args) ->
dict`` and ``render(result) -> str``; ``VIRTUAL_TIME = True`` runs it on a
virtual-time event loop. Figures, commands and dates are in ``docs/BENCHMARKS.md``.

- ``adaptive``: choosing the model by predicted latency under load (``Adaptive``)
  against the strong model alone and with admission control.
"""

__all__: list[str] = []
