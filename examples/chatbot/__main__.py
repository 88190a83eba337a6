"""``python -m examples.chatbot [--host 127.0.0.1] [--port 8080] [--ray --replicas 2]``:
serve the chat app (with ``--ray``: on Ray Serve, see ``examples.chatbot.ray_app``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from critpath.errors import ConfigError
from critpath.serve.net import check_host


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.chatbot")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback host")
    parser.add_argument("--ray", action="store_true", help="serve on Ray Serve")
    parser.add_argument("--replicas", default="1", help="with --ray: N, or MIN-MAX to autoscale")
    parser.add_argument("--max-ongoing", type=int, default=8, help="with --ray: per replica")
    args = parser.parse_args(argv)
    try:
        check_host(args.host, args.allow_remote)
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {args.port}")
        if args.ray:
            from examples.chatbot.ray_app import parse_replicas, serve_forever

            replicas = parse_replicas(args.replicas)
        else:
            import uvicorn

            from examples.chatbot.app import create_app

            app = create_app()
    except (ConfigError, ImportError, ValueError) as exc:  # ImportError: no serve extra;
        # ValueError: a CHATBOT_* variable that is not a number
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    if args.ray:
        serve_forever(replicas, host=args.host, port=args.port,
                      max_ongoing=args.max_ongoing, allow_remote=args.allow_remote)  # fmt: skip
        return 0
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
