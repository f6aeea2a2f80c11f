"""The metrics scrape endpoint (``server.metrics``): minimal HTTP/1.1 over h11, served by trio.

GET and HEAD of the configured path only; basic auth when configured (RFC 7617), checked before anything else so
that nothing, not even which paths exist, is told without credentials; a 401 closes the connection
(``Connection: close``), so guessing credentials costs a connection each. Every request, read to written, runs
under a deadline, so neither an idle keep-alive connection nor a slow client holds a task for long.

At most ``MAX_CONNECTIONS`` connections are open: a scraper needs one or two (Prometheus keeps one keep-alive
connection per target). A connection beyond closes the one whose current request began the longest ago (an
idle keep-alive connection, or a slow client), so a flood can neither exhaust the process's descriptors through
this port nor lock a scraper out for longer than it keeps flooding.

``generate_latest`` runs in the trio thread on purpose: the collector reads state that trio tasks change, which
a worker thread could see half-changed. A scrape of a typical configuration costs about a millisecond. A failure
while rendering is logged and answered 500: a metrics bug must never reach the Postfix listeners, which share
the server's task tree.
"""

from __future__ import annotations

import base64
import errno
import hmac
from collections.abc import Sequence
from typing import Any

import h11
import trio

from pfxhttp.config.model import MetricsConfig
from pfxhttp.server.listeners import BindError
from pfxhttp.server.metrics import Metrics

# text/plain exposition format 0.0.4: what generate_latest writes, and what every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_TIMEOUT = 30.0  # one scrape request, read to written; an idle keep-alive connection closes after it
MAX_REQUEST_HEAD = 16384  # bytes of request line and headers (h11's max_incomplete_event_size)
MAX_REQUEST_BODY = 16384  # a scrape has no body; anything larger closes the connection
MAX_CONNECTIONS = 16  # open scrape connections; see the module docstring
_TEXT = ("Content-Type", "text/plain")
_ACCEPT_BACKOFF = 0.1  # after EMFILE and the like: the Postfix listeners come first
_TRANSIENT_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}

Reply = tuple[int, Sequence[tuple[str, str]], bytes]


class _Scrape:
    """One open metrics connection: its cancel scope, and when its current request began (trio clock)."""

    __slots__ = ("scope", "since")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.since = trio.current_time()


class MetricsEndpoint:
    """``server.metrics``: bound with the other listeners (``bind``), served until cancelled (``serve``)."""

    def __init__(self, metrics: Metrics, config: MetricsConfig, log: Any) -> None:
        self.metrics = metrics
        self.config = config
        self.log = log
        self.listeners: list[trio.SocketListener] = []
        self._open: set[_Scrape] = set()
        self._credentials: bytes | None = None
        if config.basic_auth is not None:
            # RFC 7617 section 2.1: user-id ":" password, UTF-8 (the charset parameter we announce), base64.
            pair = f"{config.basic_auth.username}:{config.basic_auth.password}".encode()
            self._credentials = base64.b64encode(pair)

    @property
    def addresses(self) -> list[str]:
        found = []
        for listener in self.listeners:
            host, port = listener.socket.getsockname()[:2]
            found.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return found

    async def bind(self) -> None:
        try:
            self.listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.address)
        except OSError as exc:
            where = f"{self.config.address}:{self.config.port}"
            raise BindError(f"cannot listen for metrics on {where}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        for listener in self.listeners:  # synchronous, like Server._close_listeners
            listener.socket.close()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            for listener in self.listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener.socket)  # a connection is pending: make room, accept
            if len(self._open) >= MAX_CONNECTIONS:
                oldest = min(self._open, key=lambda scrape: scrape.since)
                self._open.discard(oldest)  # no longer counted; its task closes it
                oldest.scope.cancel()
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _TRANSIENT_ACCEPT_ERRORS:
                    raise
                await trio.sleep(_ACCEPT_BACKOFF)
                continue
            scrape = _Scrape()
            self._open.add(scrape)
            nursery.start_soon(self._serve_connection, stream, scrape)

    def respond(self, method: str, target: str, authorization: str | None) -> Reply:
        """The reply to one request (no I/O): 401 before anything else, then 404, 405, 200."""
        if self._credentials is not None and not self._authorized(authorization):
            challenge = 'Basic realm="pfxhttp metrics", charset="UTF-8"'
            return 401, [("WWW-Authenticate", challenge), _TEXT, ("Connection", "close")], b"unauthorized\n"
        if target.split("?", 1)[0] != self.config.path:
            return 404, [_TEXT], b"not found\n"
        if method not in ("GET", "HEAD"):
            return 405, [("Allow", "GET, HEAD"), _TEXT], b"method not allowed\n"
        try:
            body = self.metrics.exposition()
        except Exception:
            self.log.exception("metrics could not be rendered")
            return 500, [_TEXT], b"internal error\n"
        return 200, [("Content-Type", CONTENT_TYPE)], body

    def _authorized(self, authorization: str | None) -> bool:
        assert self._credentials is not None
        scheme, _, token = (authorization or "").strip().partition(" ")
        # The auth-scheme is case-insensitive (RFC 9110 section 11.1); compare_digest: no timing oracle.
        ok = hmac.compare_digest(token.strip().encode("latin-1"), self._credentials)
        return ok and scheme.lower() == "basic"

    async def _serve_connection(self, stream: trio.SocketStream, scrape: _Scrape) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        try:
            with scrape.scope:  # cancelled to make room for a new connection (MAX_CONNECTIONS)
                while True:
                    scrape.since = trio.current_time()
                    with trio.move_on_after(REQUEST_TIMEOUT) as deadline:  # idle keep-alive or a slow client
                        answered = await self._exchange(conn, stream)
                    if deadline.cancelled_caught or not answered or conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self._open.discard(scrape)
            await trio.aclose_forcefully(stream)

    async def _exchange(self, conn: h11.Connection, stream: trio.SocketStream) -> bool:
        """Read one request and answer it; False when the connection is to be closed instead."""
        request = await _next_event(conn, stream)
        if not isinstance(request, h11.Request):
            return False
        body_size = 0
        while not isinstance(event := await _next_event(conn, stream), h11.EndOfMessage):
            if not isinstance(event, h11.Data):
                return False
            body_size += len(event.data)
            if body_size > MAX_REQUEST_BODY:
                return False
        method = request.method.decode("ascii", "replace")
        authorization = None
        for name, value in request.headers:
            if name == b"authorization":  # h11 lower-cases header names
                authorization = value.decode("latin-1")
        status, headers, body = self.respond(method, request.target.decode("ascii", "replace"), authorization)
        # A HEAD reply announces the GET body's length and sends none (RFC 9110 section 9.3.2).
        data = conn.send(
            h11.Response(status_code=status, headers=[*headers, ("Content-Length", str(len(body)))])
        )
        if method != "HEAD":
            data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
        data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
        await stream.send_all(data)
        return True


async def _next_event(conn: h11.Connection, stream: trio.SocketStream) -> Any:
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await stream.receive_some(65536))
    return event
