"""Benchmarks that ship with critpath (``critpath bench NAME``).

Each module defines ``add_arguments(parser)``, ``async def run(args) -> dict`` and
``render(result) -> str``; ``VIRTUAL_TIME = True`` runs it on a virtual-time loop.
"""

__all__: list[str] = []
