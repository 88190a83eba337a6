"""``python -m examples.chatbot [--host 127.0.0.1] [--port 8080] [--ray --replicas 2]``:
serve the chat app (with ``--ray``: on Ray Serve, see ``examples.chatbot.ray_app``)."""

from __future__ import annotations

import argparse

import uvicorn

from critpath.adapters.sim.server import check_host
from examples.chatbot.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.chatbot")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback host")
    parser.add_argument("--ray", action="store_true", help="serve on Ray Serve")
    parser.add_argument("--replicas", default="1", help="with --ray: N, or MIN-MAX to autoscale")
    parser.add_argument("--max-ongoing", type=int, default=8, help="with --ray: per replica")
    args = parser.parse_args()
    check_host(args.host, args.allow_remote)
    if args.ray:
        from examples.chatbot.ray_app import parse_replicas, serve_forever

        serve_forever(parse_replicas(args.replicas), host=args.host, port=args.port,
                      max_ongoing=args.max_ongoing, allow_remote=args.allow_remote)  # fmt: skip
        return
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
