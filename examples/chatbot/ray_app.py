"""The chat service on Ray Serve: ``python -m examples.chatbot --ray --replicas 2``.

Joins the Ray cluster named by ``RAY_ADDRESS`` (or one running on this machine), or
starts a local one; deploys the chat app (``create_app``, built inside each replica,
configured by the ``CHATBOT_*`` variables of this process's environment) as
``--replicas`` Ray Serve replicas behind Ray Serve's proxy on ``--host:--port``
(127.0.0.1 unless ``--allow-remote``); ``GET /healthz`` names the replica that
answered. Stops cleanly on SIGTERM / SIGINT: the applications are deleted and a Ray
it started is shut down.

``--replicas MIN-MAX`` autoscales between MIN and MAX replicas on ongoing requests.
``--max-ongoing N`` bounds each replica's concurrent requests (its capacity: the
embedded simulated models sleep rather than compute, so capacity is concurrency).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from critpath.serve.ray_serve import asgi_deployment, run_app, shutdown, start_http, start_ray

__all__ = ["build", "deploy", "parse_replicas", "serve_forever"]


def build() -> Any:
    """The chat app, built inside a replica (configuration from its environment)."""
    from examples.chatbot.app import create_app

    return create_app()


def parse_replicas(text: str) -> int | tuple[int, int]:
    """``"2"`` -> 2 replicas; ``"1-4"`` -> autoscaling between 1 and 4."""
    lo, sep, hi = text.partition("-")
    try:
        return (int(lo), int(hi)) if sep else int(lo)
    except ValueError:
        raise ValueError(f"--replicas: a number or MIN-MAX, got {text!r}") from None


def deploy(replicas: int | tuple[int, int], *, host: str = "127.0.0.1", port: int = 8000,
           max_ongoing: int = 8, allow_remote: bool = False) -> tuple[str, bool]:  # fmt: skip
    """Start (or join) Ray and deploy the chat app; returns its URL and whether this
    call started Ray."""
    started = start_ray()
    try:
        url = start_http(host, port, allow_remote=allow_remote)
        env = {k: v for k, v in os.environ.items() if k.startswith("CHATBOT_")}
        app = asgi_deployment("examples.chatbot.ray_app:build", name="chat", env=env,
                              replicas=replicas, max_ongoing_requests=max_ongoing)  # fmt: skip
        run_app(app, name="chat", route_prefix="/")
    except BaseException:
        shutdown(stop_ray=started)
        raise
    return url, started


def serve_forever(replicas: int | tuple[int, int], *, host: str, port: int, max_ongoing: int,
                  allow_remote: bool) -> None:  # fmt: skip
    """Deploy, print the URL, wait for SIGTERM or SIGINT, then stop everything."""
    stop = threading.Event()
    url, started = deploy(replicas, host=host, port=port, max_ongoing=max_ongoing,
                          allow_remote=allow_remote)  # fmt: skip
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own
        signal.signal(sig, lambda *_: stop.set())
    print(f"chat service on Ray Serve at {url} ({replicas} replicas)", flush=True)
    try:
        stop.wait()
    finally:
        shutdown(stop_ray=started)
        print("stopped", flush=True)
