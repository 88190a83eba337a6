"""``Redactor``: keeps an adapter's own secrets out of every text that leaves it.

A server may echo the credentials it was sent (``Incorrect API key provided: Bearer
sk-...``), and a base URL may carry them (``http://user:key@host/v1``, ``?api-key=``).
The HTTP adapter builds one ``Redactor`` from what it sends — the API key, secret-
looking headers (``Authorization``, ``*key*``, ``*token*``, ``*secret*``, ``Cookie``),
the URL's user info and secret-looking query values — and passes every exception it
raises through it (message, the chained causes, notes), and shows only the redacted
URL (``redacted_url``) in its ``repr``, log lines and span attributes. Exceptions are
rewritten before they leave the adapter, so whatever reports them later (a run's
``StepFailedError``, a saved report, a span status, an application's reply) never
holds the secret.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

import httpx

__all__ = ["MASK", "Redactor", "redacted_url"]

MASK = "***"
_MIN_SECRET = 3  # shorter values would mask ordinary text
_SECRET_WORDS = ("key", "token", "secret", "auth", "cookie", "password", "signature", "sig")


def _secret_name(name: str) -> bool:
    low = name.lower()
    return any(w in low for w in _SECRET_WORDS)


def redacted_url(url: str) -> tuple[str, list[str]]:
    """``url`` without its user info and with secret-looking query values masked,
    and the secrets removed (to redact them elsewhere)."""
    parsed = httpx.URL(url)
    found: list[str] = []
    if parsed.userinfo:
        info = parsed.userinfo.decode("latin-1")
        found.append(info)
        _, _, encoded = info.partition(":")
        found.extend(p for p in (parsed.password, encoded) if p)
    params = []
    for name, value in parsed.params.multi_items():
        if _secret_name(name) and value:
            found.append(value)
            params.append((name, MASK))
        else:
            params.append((name, value))
    clean = parsed.copy_with(username=None, password=None)
    if params:
        clean = clean.copy_with(params=params)
    return str(clean), found


class Redactor:
    """Masks the given secrets in text and in exceptions (in place)."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        unique = {s for s in secrets if s and len(s) >= _MIN_SECRET}
        # The longest first, so a secret that contains another is masked whole.
        self._secrets = tuple(sorted(unique, key=len, reverse=True))

    @classmethod
    def for_request(
        cls, url: str, headers: Mapping[str, str], extra: Iterable[str] = ()
    ) -> Redactor:
        """The secrets of a request: in ``url`` and secret-looking ``headers``."""
        _, found = redacted_url(url)
        for name, value in headers.items():
            if _secret_name(name) and value:
                found.append(value)
                scheme, _, credential = value.partition(" ")
                if credential and scheme.isalpha():
                    found.append(credential.strip())
        found.extend(extra)
        return cls(found)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"

    def text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def exception(self, exc: BaseException) -> BaseException:
        """Mask the secrets in ``exc``'s arguments and notes, and in those of the
        exceptions chained to it (``__cause__`` / ``__context__``); returns ``exc``."""
        if not self._secrets:
            return exc
        seen: set[int] = set()
        todo: list[BaseException] = [exc]
        while todo and len(seen) < 16:
            e = todo.pop()
            if id(e) in seen:
                continue
            seen.add(id(e))
            with contextlib.suppress(AttributeError, TypeError):  # one refusing new args
                e.args = tuple(self._value(a) for a in e.args)
            notes = getattr(e, "__notes__", None)
            if isinstance(notes, list):
                notes[:] = [self.text(n) if isinstance(n, str) else n for n in notes]
            todo.extend(c for c in (e.__cause__, e.__context__) if c is not None)
        return exc

    def _value(self, value: object) -> object:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.text(value.decode("latin-1")).encode("latin-1")
        return value
