"""``python -m examples.chatbot [--host 127.0.0.1] [--port 8080] [--ray --replicas 2]``:
serve the chat app (with ``--ray``: on Ray Serve, see ``examples.chatbot.ray_app``).

Under uvicorn with bounds on what clients can hold: ``--max-connections`` (beyond it
uvicorn answers 503), ``--keep-alive`` seconds before an idle connection is closed,
and a graceful drain: on SIGTERM (or SIGINT) the service stops accepting connections,
lets the answers in flight finish for up to ``--drain`` seconds, then cancels the rest
— which closes their model streams, so the model server aborts those generations —
and exits. uvicorn bounds request headers (h11, 16 KiB) but has no timeout for a
client that trickles them: the connection limit bounds what such clients can hold.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from critpath.errors import ConfigError
from critpath.serve.net import check_host


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.chatbot")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback host")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="connections served at once; beyond: 503 (default 256)",
    )
    parser.add_argument(
        "--keep-alive",
        type=int,
        default=5,
        help="seconds before an idle keep-alive connection is closed (default 5)",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=10.0,
        help="seconds answers in flight get to finish on shutdown (default 10)",
    )
    parser.add_argument("--ray", action="store_true", help="serve on Ray Serve")
    parser.add_argument("--replicas", default="1", help="with --ray: N, or MIN-MAX to autoscale")
    parser.add_argument("--max-ongoing", type=int, default=8, help="with --ray: per replica")
    args = parser.parse_args(argv)
    try:
        check_host(args.host, args.allow_remote)
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {args.port}")
        if args.max_connections < 1 or args.keep_alive < 1 or args.drain < 0:
            raise ConfigError("--max-connections and --keep-alive must be >= 1, --drain >= 0")
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
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        limit_concurrency=args.max_connections,
        timeout_keep_alive=args.keep_alive,
        timeout_graceful_shutdown=math.ceil(args.drain),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
