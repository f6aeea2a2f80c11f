"""HTTP/1.1 on one connection: the request head built once at load, and one request/response exchange.

The hot path is ``Http11Connection.exchange``: one ``send_all`` of bytes prepared at load time, then
``receive_some`` into an httptools (llhttp) parser that lives as long as the connection. Response framing
follows RFC 9112 section 6.3: 1xx interim responses are skipped, 204/304 have no body, Content-Length and
chunked bodies are read to their end, and a response with neither is read until the server closes. A
gzip-coded response body is inflated as it arrives (``contentcoding``); a body without Content-Encoding
takes no extra step.

Foreign exceptions become pfxhttp errors in exactly one table (``TRANSPORT_ERRORS``) so that the callers see
only the ``BackendError`` tree; the detail goes into the message, never into ``reason``.
"""

from __future__ import annotations

import ipaddress
import re
import select
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools
import trio

from pfxhttp.backend.contentcoding import GzipDecoder, gzip_body, response_is_gzip
from pfxhttp.errors import BackendBodyTooLarge, BackendError, BackendProtocolError, BackendTransportError

# The foreign exceptions that mean "the way to the peer broke": refused, reset, broken pipe, DNS, TLS (trio
# wraps ssl.SSLError in BrokenResourceError). ClosedResourceError and BusyResourceError are absent on purpose:
# they would be our own bug and must not be disguised as a network failure.
TRANSPORT_ERRORS = (OSError, trio.BrokenResourceError)

_READ_SIZE = 65536
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


def transport_error(what: str, exc: BaseException) -> BackendTransportError:
    """The one translation of a TRANSPORT_ERRORS member into a pfxhttp error (raise it ``from exc``)."""
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
    return BackendTransportError(f"{what}: {type(cause).__name__}: {cause}")


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
    cl_prefix: bytes = field(init=False, repr=False, compare=False)  # Content-Encoding too when gzip_request
    empty: bytes = field(init=False, repr=False, compare=False)  # the whole request for an empty body
    length_when_empty: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        coding = b"Content-Encoding: gzip\r\n" if self.gzip_request else b""
        object.__setattr__(self, "cl_prefix", self.head + coding + b"Content-Length: ")
        # RFC 9110 section 8.6: a user agent SHOULD send Content-Length 0 for a method that anticipates
        # content (POST, PUT, ...) even when it is empty, and none for one that does not (GET, ...).
        method = self.head.partition(b" ")[0]
        with_length = method not in (b"GET", b"DELETE", b"OPTIONS", b"TRACE")
        object.__setattr__(self, "length_when_empty", with_length)
        object.__setattr__(
            self, "empty", self.head + (b"Content-Length: 0\r\n\r\n" if with_length else b"\r\n")
        )

    def wire(self, body: bytes | None) -> bytes:
        """The exact bytes to send for ``body``: head, Content-Length when due, blank line, body.

        With ``gzip_request`` the body is compressed here, before its length is taken.
        """
        if not body:
            return self.empty
        if self.gzip_request:
            body = gzip_body(body)
        return b"".join((self.cl_prefix, b"%d\r\n\r\n" % len(body), body))


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

    def header(self, name: bytes) -> bytes | None:
        """The first value of field ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _ExtraBytes(Exception):
    """Raised inside a parser callback to stop at bytes that follow a complete response."""


class Http11Connection:
    """One open connection and the llhttp parser that reads it; used by one task at a time.

    ``got_bytes`` tells the pool whether the last exchange received any response byte (the keep-alive race
    retry of RFC 9112 section 9.3.1 is only safe before that), ``reusable`` whether the connection may go
    back to the pool.
    """

    __slots__ = (
        "_body",
        "_body_size",
        "_chunked",
        "_coding",
        "_content_length",
        "_decoder",
        "_extra",
        "_fields_size",
        "_head_size",
        "_headers",
        "_headers_done",
        "_max_body",
        "_max_header",
        "_parser",
        "_poller",
        "_proto_seen",
        "_response",
        "_sock",
        "_status",
        "_stream",
        "got_bytes",
        "idle_since",
        "reusable",
    )

    def __init__(
        self, stream: trio.abc.Stream, sock: trio.socket.SocketType, *, max_body: int, max_header: int
    ) -> None:
        self._stream = stream
        self._sock = sock  # the TCP socket under a TLS stream too: closed synchronously on discard
        self._poller = select.poll()  # made once: is_dead runs at every reuse of a pooled connection
        self._poller.register(sock.fileno(), select.POLLIN)
        self._parser = httptools.HttpResponseParser(self)
        self._max_body = max_body
        self._max_header = max_header
        self.idle_since = 0.0
        self.got_bytes = False
        self.reusable = False
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._fields_size = 0
        self._headers_done = False
        self._content_length: int | None = None
        self._chunked = False
        self._coding: bytes | None = None  # every Content-Encoding value, comma-joined
        self._decoder: GzipDecoder | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._response: HttpResponse | None = None
        self._extra = False
        self._proto_seen = 0  # bytes of "HTTP/" checked at the start of this response

    def close(self) -> None:
        """Discard the connection now (no TLS close_notify: https_compatible peers do not need one)."""
        self.reusable = False
        self._sock.close()

    def is_dead(self) -> bool:
        """True if an idle connection became readable: EOF, reset or bytes nobody asked for."""
        return bool(self._poller.poll(0))

    async def exchange(self, data: bytes) -> HttpResponse:
        """Send ``data`` (a whole request) and read the final response; sets ``reusable``."""
        self._reset()
        self.got_bytes = self.reusable = False
        send_error: BaseException | None = None
        try:
            await self._stream.send_all(data)
        except TRANSPORT_ERRORS as exc:
            # The server may have answered early and closed (say 413 before reading the body): a plain TCP
            # socket still holds that answer, so read it before giving up.
            send_error = exc
        receive = self._stream.receive_some
        response: HttpResponse | None = None
        while response is None:
            try:
                chunk = await receive(_READ_SIZE)
            except TRANSPORT_ERRORS as exc:
                raise transport_error(_transport_what(self.got_bytes), send_error or exc) from exc
            if not chunk:
                response = self._eof(send_error)
                break
            self.got_bytes = True
            response = self._feed(chunk)
        self.reusable = self.reusable and send_error is None and not self._extra
        return response

    def _feed(self, chunk: bytes | bytearray) -> HttpResponse | None:
        if self._proto_seen < _PROTO_LEN:
            self._check_protocol(chunk)
        if not self._headers_done:
            # Counted before parsing so that a header line without end cannot grow httptools' buffer.
            self._head_size += len(chunk)
        try:
            self._parser.feed_data(chunk)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, BackendError):
                raise cause from None
            if self._response is None:  # a callback failed on something llhttp let through
                raise BackendProtocolError(f"HTTP parser callback failed: {cause!r}") from exc
            self._extra = True
        except httptools.HttpParserUpgrade as exc:
            raise BackendProtocolError("unexpected protocol upgrade in response") from exc
        except httptools.HttpParserError as exc:
            if self._response is None:
                raise BackendProtocolError(f"invalid HTTP response: {exc}") from exc
            self._extra = True  # garbage after a complete response: answer it, never reuse the connection
        if not self._headers_done and self._head_size > self._max_header:
            raise BackendProtocolError(f"response header block over {self._max_header} bytes")
        return self._response

    def _check_protocol(self, chunk: bytes | bytearray) -> None:
        """The response must start with "HTTP/": llhttp also accepts RTSP/ and ICE/ status lines, and an
        "RTSP/1.0 404" must not become NOTFOUND (found by tests/test_faults.py)."""
        start = self._proto_seen
        take = bytes(chunk[: _PROTO_LEN - start])
        if _PROTO[start : start + len(take)] != take:
            raise BackendProtocolError("the response is not HTTP (status line does not start with HTTP/)")
        self._proto_seen = start + len(take)

    def _eof(self, send_error: BaseException | None) -> HttpResponse:
        if self._headers_done and self._content_length is None and not self._chunked:
            # RFC 9112 section 6.3 item 8: no length and not chunked: the body ends when the server closes.
            self.reusable = False
            return self._finish()
        what = _transport_what(self.got_bytes)
        if send_error is not None:
            raise transport_error(what, send_error) from send_error
        raise BackendTransportError(f"{what}: connection closed by the server")

    def _finish(self) -> HttpResponse:
        if self._decoder is not None:
            self._decoder.finish()
        response = self._response = HttpResponse(self._status, tuple(self._headers), b"".join(self._body))
        return response

    # --- llhttp callbacks (httptools looks them up once, when the parser is made) ---

    def on_message_begin(self) -> None:
        if self._response is not None:
            raise _ExtraBytes  # a second message behind ours on a connection we alone use: never reuse it
        self._headers = []
        self._fields_size = 0
        self._coding = None

    def on_status(self, status: bytes) -> None:
        if b"\x00" in status:  # llhttp lets a NUL through in the reason phrase; no HTTP server sends one
            raise BackendProtocolError("NUL byte in the status line")
        self._fields_size += len(status) + 15  # plus "HTTP/1.1 200 " and CRLF

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._headers.append((name, value))
        self._fields_size += len(name) + len(value) + 4
        if name == b"content-length":
            # llhttp has checked the digits and refused conflicting duplicates already.
            self._content_length = int(value)
        elif name == b"transfer-encoding":
            # RFC 9112 section 6.3: only a final "chunked" coding frames the body.
            self._chunked = value.rstrip().lower().endswith(b"chunked")
        elif name == b"content-encoding":
            # RFC 9110 section 5.3: repeated fields form one comma-separated list.
            self._coding = value if self._coding is None else self._coding + b"," + value

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if self._fields_size > self._max_header:
            raise BackendProtocolError(f"response header block over {self._max_header} bytes")
        if not 100 <= status <= 599:
            # llhttp accepts any three digits; a 0xx would be taken for an interim response whose body llhttp
            # still delivers, and that body would become the answer (found by tests/test_faults.py).
            raise BackendProtocolError(f"invalid status code {status}")
        if status < 200:
            if status == 101:
                raise BackendProtocolError("unexpected 101 Switching Protocols")
            self._content_length = None  # a 1xx response has no body; the final one follows
            self._chunked = False
            return
        self._headers_done = True
        self._status = status
        if status in (204, 304):
            self._content_length = 0  # RFC 9112 section 6.3 item 1: no body whatever the fields say
            return
        # Content-Length counts coded bytes (RFC 9110 section 8.6): the cap holds for them as for plain ones.
        if self._content_length is not None and self._content_length > self._max_body:
            raise BackendBodyTooLarge(f"Content-Length {self._content_length} over the {self._max_body} cap")
        if self._coding is not None and response_is_gzip(self._coding):
            self._decoder = GzipDecoder(self._max_body)

    def on_body(self, body: bytes) -> None:
        if not self._headers_done:
            raise BackendProtocolError("body in an interim (1xx) response")
        self._body_size += len(body)
        if self._body_size > self._max_body:
            raise BackendBodyTooLarge(f"response body over the {self._max_body} byte cap")
        if self._decoder is None:
            self._body.append(body)
        else:
            self._body.append(self._decoder.feed(body))

    def on_message_complete(self) -> None:
        if not self._headers_done:
            return  # an interim 1xx response ended; keep reading for the final one
        # Asked here: llhttp forgets the message's flags once this callback returns.
        self.reusable = self._parser.should_keep_alive()
        self._finish()


_PROTO = b"HTTP/"
_PROTO_LEN = len(_PROTO)


def _transport_what(got_bytes: bool) -> str:
    return "connection lost while reading the response" if got_bytes else "no response from the server"
