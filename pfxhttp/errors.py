"""The one exception tree of pfxhttp.

Every exception pfxhttp raises on purpose derives from :class:`PfxhttpError`::

    PfxhttpError
    ├── ConfigError                 the YAML file is wrong: carries file:line:column and the dotted key path
    │   └── ConfigErrors            several ConfigError at once (``pfxhttp check`` prints them all)
    ├── ProtocolError               a Postfix client sent bytes that break the wire protocol (Remote)
    │   ├── NetstringError          bad netstring framing, length over the cap
    │   ├── SocketmapError          a netstring whose payload is not ``NAME SP KEY``
    │   ├── PolicyError             a policy attribute block over a cap or malformed
    │   └── TcpTableError           a tcp_table(5) request line malformed, not ``get`` or over the cap
    ├── ReplyError                  we were about to send a reply Postfix must never see (Local)
    ├── UnaddressableKey            the key makes a URL path segment empty, '.' or '..': it names no resource
    ├── UnsafeFileError             a file another local user could read or swap (the token store): not used
    └── BackendError                the HTTP backend or the path to it failed; ``reason`` is short and fixed
        ├── BackendTimeout          the one total deadline of a backend request expired
        ├── BackendTransportError   connect, TLS, reset, closed early
        ├── BackendProtocolError    the peer did not speak valid HTTP/1.1
        ├── BackendBodyTooLarge     the response body exceeded the cap
        ├── BackendBusy             the worker pool and its wait queue are full (back-pressure)
        ├── PayloadError            the rendered request payload is not valid JSON
        └── TokenError              no bearer token: the token endpoint failed, refused or is backing off

Remote errors (``ProtocolError``) close the offending connection only. ``UnaddressableKey`` is no failure: the
lookup answers "not found" without asking the backend. ``BackendError`` turns into a
TEMP/TIMEOUT socketmap reply or the policy error action. ``reason`` is what may reach Postfix: it never holds
URLs, secrets or exception text; the detail goes to the log via ``str(exc)`` or ``exc.__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class PfxhttpError(Exception):
    """Base class of every error pfxhttp raises on purpose."""


@dataclass(frozen=True)
class Location:
    """Where in a YAML file something stands (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class ConfigError(PfxhttpError):
    """One problem in the configuration, with its location and dotted key path."""

    def __init__(
        self,
        message: str,
        *,
        location: Location | None = None,
        path: str = "",
        suggestion: str | None = None,
    ) -> None:
        self.message = message
        self.location = location
        self.path = path
        self.suggestion = suggestion
        super().__init__(self.render())

    def render(self) -> str:
        """``file:line:col: at key a.b.c: message (did you mean 'x'?)``."""
        parts: list[str] = []
        if self.location is not None:
            parts.append(f"{self.location}:")
        if self.path:
            parts.append(f"at key {self.path}:")
        parts.append(self.message)
        text = " ".join(parts)
        if self.suggestion:
            text += f" (did you mean {self.suggestion!r}?)"
        return text


class ConfigErrors(ConfigError):
    """Several configuration problems found in one pass; ``errors`` keeps them in file order."""

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors: Sequence[ConfigError] = tuple(errors)
        first = self.errors[0] if self.errors else None
        super().__init__(
            "\n".join(e.render() for e in self.errors) or "invalid configuration",
            location=first.location if first else None,
            path=first.path if first else "",
        )

    def render(self) -> str:
        return self.message


class ProtocolError(PfxhttpError):
    """The Postfix client broke the wire protocol; the connection must be closed."""


class NetstringError(ProtocolError):
    """Malformed netstring framing or a length over the cap."""


class SocketmapError(ProtocolError):
    """A socketmap request payload that is not ``NAME SP KEY``."""


class PolicyError(ProtocolError):
    """A policy attribute block that is malformed or exceeds a cap."""


class TcpTableError(ProtocolError):
    """A tcp_table(5) request line that is malformed, not ``get``, or longer than the cap."""


class UnsafeFileError(PfxhttpError):
    """A file, or the directory holding it, that another local user could have planted, linked or could
    replace; it is not used (the token store then keeps tokens in memory)."""


class ReplyError(PfxhttpError):
    """A reply that must never be sent (too long, empty action, CR/LF/NUL inside)."""


class UnaddressableKey(PfxhttpError):
    """A lookup's templated ``target`` came out with a path segment that is empty, ``.`` or ``..``.

    Servers resolve dot segments and merge slashes before routing, so that URL would ask for ANOTHER resource;
    no key of this shape can name one. Not a backend fault: the lookup answers not found (NOTFOUND / DUNNO).
    """


class BackendError(PfxhttpError):
    """The backend or the way to it failed.

    ``reason`` is short, fixed text that may be shown to Postfix; the constructor message is the detail for
    the log only.
    """

    reason = "backend error"

    def __init__(self, detail: str = "", *, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(detail or self.reason)


class BackendTimeout(BackendError):
    reason = "backend timeout"


class BackendTransportError(BackendError):
    reason = "backend unreachable"


class BackendProtocolError(BackendError):
    reason = "invalid HTTP response"


class BackendBodyTooLarge(BackendError):
    reason = "response too large"


class BackendBusy(BackendError):
    """Too many backend requests in flight and waiting: answered at once instead of queueing without bound."""

    reason = "server busy"


class PayloadError(BackendError):
    reason = "invalid request payload"


class TokenError(BackendError):
    """No usable bearer token for a backend (jwt_auth, backend_oidc_auth): the token endpoint is unreachable,
    slow, refused the credentials, answered something unusable, or failed recently (back-off). The lookup
    answers TEMP / the policy error action, never NOTFOUND."""

    reason = "backend token unavailable"
