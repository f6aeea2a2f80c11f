"""HTTP/1.1 on one connection: one request/response exchange over a kept-alive socket.

The hot path is ``Http11Connection.exchange``: one ``send_all`` of bytes prepared at load time (``httpmsg``), then
``receive_some`` into an httptools (llhttp) parser that lives as long as the connection. Response framing
follows RFC 9112 section 6.3: 1xx interim responses are skipped, 204/304 have no body, Content-Length and
chunked bodies are read to their end, and a response with neither is read until the server closes. A
gzip-coded response body is inflated as it arrives (``contentcoding``); a body without Content-Encoding
takes no extra step.

A hostile backend can send without end, so everything it sends counts against a limit: the header section
and the trailer section of a chunked body share one budget (``max_header``), as do chunk framing bytes that
arrive without any body data (llhttp skips chunk extensions without limit); the body has its own cap
(``max_body``); and the deadline is checked after every read that leaves the response incomplete, since a
backend that sends faster than we parse never makes a read wait (rawio checks deadlines only on waits).
Trailer fields are counted and dropped, never merged into the headers (RFC 9110 section 6.5.1).

Foreign exceptions become pfxhttp errors in exactly one table (``TRANSPORT_ERRORS``) so that the callers see
only the ``BackendError`` tree; the detail goes into the message, never into ``reason``.
"""

from __future__ import annotations

import math
import select
from collections.abc import Awaitable, Callable

import httptools
import trio

from pfxhttp.backend.contentcoding import GzipDecoder, response_is_gzip
from pfxhttp.backend.httpmsg import HttpResponse
from pfxhttp.backend.rawio import RawSocketIO
from pfxhttp.errors import BackendBodyTooLarge, BackendError, BackendProtocolError, BackendTransportError

# The foreign exceptions that mean "the way to the peer broke": refused, reset, broken pipe, DNS, TLS (trio
# wraps ssl.SSLError in BrokenResourceError). ClosedResourceError and BusyResourceError are absent on purpose:
# they would be our own bug and must not be disguised as a network failure.
TRANSPORT_ERRORS = (OSError, trio.BrokenResourceError)

_READ_SIZE = 65536
_Receive = Callable[..., Awaitable[bytes | bytearray]]  # receive_some(max_bytes[, deadline])


def transport_error(what: str, exc: BaseException) -> BackendTransportError:
    """The one translation of a TRANSPORT_ERRORS member into a pfxhttp error (raise it ``from exc``)."""
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
    return BackendTransportError(f"{what}: {type(cause).__name__}: {cause}")


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
        "_io",
        "_max_body",
        "_max_header",
        "_parser",
        "_poller",
        "_proto_seen",
        "_response",
        "_sock",
        "_status",
        "_tail_size",
        "got_bytes",
        "idle_since",
        "reusable",
    )

    def __init__(
        self, stream: trio.abc.Stream, sock: trio.socket.SocketType, *, max_body: int, max_header: int
    ) -> None:
        self._sock = sock  # the TCP socket under a TLS stream too: closed synchronously on discard
        # Plain TCP: syscalls first, the scheduler only when they would block (rawio); TLS: trio's SSLStream.
        self._io: RawSocketIO | trio.abc.Stream = (
            RawSocketIO(sock) if isinstance(stream, trio.SocketStream) else stream
        )
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
        self._tail_size = 0  # bytes read after the header section without a body byte since (see _feed)
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

    async def exchange(self, data: bytes, deadline: float = math.inf) -> HttpResponse:
        """Send ``data`` (a whole request) and read the final response; sets ``reusable``. A response not
        complete by ``deadline`` (trio clock) raises trio.TooSlowError."""
        io = self._io
        if isinstance(
            io, RawSocketIO
        ):  # deadlines on the waits only (rawio): no cancel scope when none waits
            return await self._exchange(data, io.send_all, io.receive_some, deadline)
        with trio.move_on_at(deadline) as scope:
            return await self._exchange(data, io.send_all, io.receive_some)
        assert scope.cancelled_caught
        raise trio.TooSlowError

    async def _exchange(
        self, data: bytes, send_all: Callable[..., Awaitable[None]], receive: _Receive, *deadline: float
    ) -> HttpResponse:
        self._reset()
        self.got_bytes = self.reusable = False
        send_error: BaseException | None = None
        try:
            await send_all(data, *deadline)
        except TRANSPORT_ERRORS as exc:
            # The server may have answered early and closed (say 413 before reading the body): a plain TCP
            # socket still holds that answer, so read it before giving up.
            send_error = exc
        response: HttpResponse | None = None
        while response is None:
            try:
                chunk = await receive(_READ_SIZE, *deadline)
            except TRANSPORT_ERRORS as exc:
                raise transport_error(_transport_what(self.got_bytes), send_error or exc) from exc
            if not chunk:
                response = self._eof(send_error)
                break
            self.got_bytes = True
            response = self._feed(chunk)
            # Only where the response is still incomplete: the usual answer arrives in one read and pays no
            # clock call. TLS has no deadline argument; its cancel scope acts at every receive.
            if response is None and deadline and trio.current_time() >= deadline[0]:
                raise trio.TooSlowError
        self.reusable = self.reusable and send_error is None and not self._extra
        return response

    def _feed(self, chunk: bytes | bytearray) -> HttpResponse | None:
        if self._proto_seen < _PROTO_LEN:
            self._check_protocol(chunk)
        body_before = -1  # the header section is still being read
        if not self._headers_done:
            # Counted before parsing so that a header line without end cannot grow httptools' buffer.
            self._head_size += len(chunk)
        else:
            body_before = self._body_size
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
        if body_before == self._body_size and self._response is None:
            # A read without one body byte, after the header section: chunk framing or the trailer section.
            # Counted whole, as the header section is, so that neither a trailer line without end (httptools
            # joins its pieces in memory) nor endless chunk extensions outlast the budget. Body data resets
            # the count: framing between chunks of data is bounded by the body cap.
            self._tail_size += len(chunk)
            if self._tail_size > self._max_header:
                raise BackendProtocolError(
                    f"response trailer section or chunk framing over {self._max_header} bytes"
                )
        return self._response

    def _check_protocol(self, chunk: bytes | bytearray) -> None:
        """The response must start with "HTTP/": llhttp also accepts RTSP/ and ICE/ status lines, and an
        "RTSP/1.0 404" must not become NOTFOUND (found by tests/test_faults.py)."""
        start = self._proto_seen
        if not start and chunk.startswith(_PROTO):  # the usual case: the status line arrived whole
            self._proto_seen = _PROTO_LEN
            return
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
        # Dropped now, not at the next exchange: a pooled idle connection must not keep its last body (or the
        # pieces of a chunked one, ~50 bytes of overhead each) while the lookup parses it, nor after.
        self._body = []
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
        self._fields_size += len(name) + len(value) + 4
        if self._headers_done:
            # A trailer field (chunked body): it counts against the budget of the header section it follows
            # and is dropped; it must not reframe or recode a body that has already been read.
            if self._fields_size > self._max_header:
                raise BackendProtocolError(
                    f"response header and trailer sections over {self._max_header} bytes"
                )
            return
        name = name.lower()
        self._headers.append((name, value))
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
        self._tail_size = 0
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
