"""Running critpath apps beyond one process: Ray Serve deployments and state shared
across processes through Redis (limits, learned latency estimates).

Every module imports its third-party package (ray, redis) only when used, so
``import critpath.serve`` needs neither.
"""

__all__: list[str] = []
