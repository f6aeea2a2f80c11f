"""HTTP/1.1 messages of the backend client: the target URL, the request head built once at load, the response.

Pure data and validation; the connection that sends and parses them is ``http11``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pfxhttp.backend.contentcoding import gzip_body

_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110 section 5.6.2: field names and methods are tokens.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOST = re.compile(r"[A-Za-z0-9._-]+")
# Fields that frame the message or manage the connection (RFC 9112 sections 6, 9.6), and the content codings
# (RFC 9110 sections 8.4, 12.5.3): pfxhttp sets them, since only it knows what it sends and can decode.
_MANAGED_FIELDS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te"}
    | {"content-encoding", "accept-encoding"}
)
# HEAD responses carry framing headers without a body; pfxhttp has nothing to map from them.
_UNSUPPORTED_METHODS = frozenset({"HEAD", "CONNECT"})


@dataclass(frozen=True, slots=True)
class Target:
    """An http(s) URL split once at load into what the connection pool and the request line need."""

    scheme: str  # "http" | "https"
    host: str  # as in the URL; IPv6 without brackets
    port: int
    path: str  # the request-target (origin-form, RFC 9112 section 3.2.1), query included
    _origin: tuple[str, str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_origin", (self.scheme, self.host, self.port))

    @property
    def origin(self) -> tuple[str, str, int]:
        """The pool key: (scheme, host, port)."""
        return self._origin

    @property
    def authority(self) -> str:
        """The Host field value (RFC 9110 section 7.2): brackets for IPv6, port only if not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if _DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> Target:
        """Parse ``url``; ValueError with a short message if it is not a usable http(s) URL."""
        if not url.isascii() or not url.isprintable() or " " in url:
            raise ValueError("URL must be ASCII without spaces or control characters (percent-encode them)")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"unsupported URL scheme {parts.scheme!r} (use http or https)")
        netloc = parts.netloc
        if not netloc:
            raise ValueError("URL has no host")
        if "@" in netloc:
            raise ValueError("user info in the URL is not allowed (use http_auth_basic)")
        if netloc.startswith("["):
            end = netloc.find("]")
            host, rest = netloc[1:end], netloc[end + 1 :]
            if end < 0 or (rest and not rest.startswith(":")):
                raise ValueError("malformed IPv6 address in URL")
            if "%" in host:
                raise ValueError("IPv6 zone identifiers are not supported in URLs")
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"invalid IPv6 address {host!r} in URL") from None
            port_text = rest[1:]
        else:
            host, _, port_text = netloc.partition(":")
            if not _HOST.fullmatch(host):
                raise ValueError(f"invalid host {host!r} in URL")
        if not port_text:
            port = _DEFAULT_PORTS[scheme]
        elif port_text.isdigit() and 0 < int(port_text) < 65536:
            port = int(port_text)
        else:
            raise ValueError(f"invalid port {port_text!r} in URL (1-65535)")
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        return cls(scheme, host, port, path)  # the fragment is never sent (RFC 9110 section 4.2.4)


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request head built once per entry at load; only Content-Length and the body vary per lookup.

    With ``gzip_request`` a non-empty body is sent gzip-coded with ``Content-Encoding: gzip``; an empty one
    is sent as it is and without that field, since there is no content to code (RFC 9110 section 8.4).
    ``accept_gzip`` records that ``head`` carries ``Accept-Encoding: gzip``.
    """

    target: Target
    head: bytes  # request line and fields, each ending in CRLF; no Content-*, no blank line
    gzip_request: bool = False
    accept_gzip: bool = False
    # Derived once so that the hot path only joins bytes.
    cl_fields: bytes = field(init=False, repr=False, compare=False)  # Content-Encoding too when gzip_request
    empty_fields: bytes = field(init=False, repr=False, compare=False)  # what ends the head of an empty body
    length_when_empty: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        coding = b"Content-Encoding: gzip\r\n" if self.gzip_request else b""
        object.__setattr__(self, "cl_fields", coding + b"Content-Length: ")
        # RFC 9110 section 8.6: a user agent SHOULD send Content-Length 0 for a method that anticipates
        # content (POST, PUT, ...) even when it is empty, and none for one that does not (GET, ...).
        method = self.head.partition(b" ")[0]
        with_length = method not in (b"GET", b"DELETE", b"OPTIONS", b"TRACE")
        object.__setattr__(self, "length_when_empty", with_length)
        object.__setattr__(self, "empty_fields", b"Content-Length: 0\r\n\r\n" if with_length else b"\r\n")

    def wire(self, body: bytes | None, authorization: str | None = None) -> bytes:
        """The exact bytes to send for ``body``: head, Content-Length when due, blank line, body.

        With ``gzip_request`` the body is compressed here, before its length is taken. ``authorization`` (a
        bearer token's field value, checked to be printable ASCII where it was obtained) goes into an
        Authorization field; the entry's configuration cannot hold another one (the loader refuses that).
        """
        head = self.head
        if authorization is not None:
            head = b"%sAuthorization: %s\r\n" % (head, authorization.encode("ascii"))
        if not body:
            return head + self.empty_fields
        if self.gzip_request:
            body = gzip_body(body)
        return b"".join((head, self.cl_fields, b"%d\r\n\r\n" % len(body), body))


def _check_value(what: str, value: str) -> None:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"{what} must not contain CR, LF or NUL")


def prepare_request(
    method: str,
    target: Target,
    headers: Sequence[tuple[str, str]],
    *,
    user_agent: str,
    gzip_request: bool = False,
    accept_gzip: bool = False,
) -> PreparedRequest:
    """Build the request head once; ValueError for a bad method, header name or value.

    A custom ``User-Agent`` replaces the default one; fields that frame the message (Host, Content-Length,
    Transfer-Encoding, Connection, ...) or name content codings (Content-Encoding, Accept-Encoding) are
    pfxhttp's to set and are refused. ``gzip_request`` gzips non-empty request bodies; ``accept_gzip`` sends
    ``Accept-Encoding: gzip``. A gzip-coded response is inflated either way (a server may code it unasked).
    """
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"invalid HTTP method {method!r}")
    if method.upper() in _UNSUPPORTED_METHODS:
        raise ValueError(f"HTTP method {method} is not supported")
    _check_value("User-Agent", user_agent)
    lines = [f"{method} {target.path} HTTP/1.1", f"Host: {target.authority}"]
    if all(name.lower() != "user-agent" for name, _ in headers):
        lines.append(f"User-Agent: {user_agent}")
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if name.lower() in _MANAGED_FIELDS:
            raise ValueError(f"header {name!r} is set by pfxhttp and cannot be configured")
        _check_value(f"header {name!r}", value)
        lines.append(f"{name}: {value}")
    if accept_gzip:
        lines.append("Accept-Encoding: gzip")
    lines.append("Connection: keep-alive")
    # Field values are opaque octets to HTTP (RFC 9110 section 5.5); UTF-8 is what configuration files hold.
    head = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    return PreparedRequest(target, head, gzip_request=gzip_request, accept_gzip=accept_gzip)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete final response."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]  # names lower-cased, in arrival order
    body: bytes
