"""``python -m examples.chatbot [--host 127.0.0.1] [--port 8080]``: serve the chat app."""

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
    args = parser.parse_args()
    check_host(args.host, args.allow_remote)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
