"""Where critpath servers may listen: loopback checks and a bound listening socket.

Shared by every server critpath starts (``critpath sim-server``, ``AppServer``, the
example chat service) and by the load tester, which only sends to loopback:

>>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("10.0.0.1")
(True, True, False)
"""

from __future__ import annotations

import ipaddress
import socket

from critpath.errors import ConfigError

__all__ = ["bind_socket", "check_host", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, ``[v6]``, or a name) resolves to loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_host(host: str, allow_remote: bool = False) -> None:
    """Refuse (``ConfigError``) a host that is not a loopback address, unless allowed."""
    if allow_remote or is_loopback(host):
        return
    raise ConfigError(
        f"refusing to serve on {host!r}: not a loopback address; critpath serves on "
        "127.0.0.1 / ::1 / localhost unless remote access is allowed (--allow-remote)"
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free port), not yet listening;
    ``ConfigError`` when the address cannot be bound (e.g. the port is taken)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be in 0..65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot serve on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve on {host}:{port}: {exc}") from exc
    return sock
