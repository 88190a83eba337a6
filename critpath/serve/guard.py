"""``Guard``: the ASGI middleware that keeps a local service safe from a web page.

Binding to loopback is not enough: a page open in the user's browser can POST to
``http://127.0.0.1:PORT`` blind, and with DNS rebinding (a hostile name resolving to
127.0.0.1) read the replies and spend the service's configured API key. ``Guard``
(a Starlette-style wrapper around any ASGI app) refuses, with an OpenAI-style JSON
error:

- a ``Host`` header not in ``allowed_hosts`` (default: the loopback names; the port
  is ignored) — ``400``; this defeats DNS rebinding;
- a ``POST`` without ``Content-Type: application/json`` — ``415``; a page cannot send
  that cross-origin without a CORS preflight, which nothing here answers;
- with ``token`` set, a request to a path outside ``public_paths`` without
  ``Authorization: Bearer <token>`` — ``401`` (compared in constant time).

Every response gets ``X-Content-Type-Options: nosniff`` and ``X-Frame-Options: DENY``;
HTML responses also get ``csp`` as ``Content-Security-Policy``.

``loads_json(raw, max_depth)`` parses a request body and refuses JSON nested deeper
than ``max_depth`` (``JSONBodyError``, a 400 for the caller), never a
``RecursionError`` and a 500.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = [
    "DEFAULT_CSP",
    "LOOPBACK_HOSTS",
    "MAX_JSON_DEPTH",
    "Guard",
    "JSONBodyError",
    "loads_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
DEFAULT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
MAX_JSON_DEPTH = 64


class JSONBodyError(ValueError):
    """A request body that is not JSON, or JSON nested too deeply."""


def loads_json(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse ``raw``; ``JSONBodyError`` for invalid JSON or nesting past ``max_depth``.

    The depth is checked on the text before parsing (brackets outside strings), so a
    hostile body never reaches the recursive parser.
    """
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    if _depth(text) > max_depth:
        raise JSONBodyError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise JSONBodyError(f"invalid JSON: {exc}") from None


def _depth(text: str) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _error(status: int, message: str, kind: str) -> bytes:
    body = {"error": {"object": "error", "message": message, "type": kind, "code": status}}
    return json.dumps(body).encode()


class Guard:
    """Wrap ``app``; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
        require_json: bool = True,
        token: str | None = None,
        public_paths: Iterable[str] = ("/", "/healthz", "/health"),
        csp: str = DEFAULT_CSP,
    ) -> None:
        self.app = app
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.require_json = require_json
        self._token = token.encode() if token else None
        self.public_paths = frozenset(public_paths)
        self.csp = csp.encode("latin-1")

    def __repr__(self) -> str:  # never the token
        return f"Guard(hosts={sorted(self.allowed_hosts)}, token={'set' if self._token else None})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _respond(send, *refusal)
            return
        csp = self.csp

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY")]
                existing = list(message.get("headers", ()))
                ctype = next((v for k, v in existing if k.lower() == b"content-type"), b"")
                if ctype.startswith(b"text/html"):
                    extra.append((b"content-security-policy", csp))
                message["headers"] = existing + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, bytes] | None:
        host = _hostname(headers.get(b"host", b"").decode("latin-1"))
        if host not in self.allowed_hosts:
            return 400, _error(400, "invalid Host header", "BadRequestError")
        if self.require_json and scope.get("method") == "POST":
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if ctype != b"application/json":
                return 415, _error(
                    415, "the request body must be application/json", "BadRequestError"
                )
        if self._token is not None and scope.get("path") not in self.public_paths:
            auth = headers.get(b"authorization", b"")
            scheme, _, given = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._token):
                return 401, _error(401, "a valid bearer token is required", "AuthenticationError")
        return None


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8080
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
        ],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})
