"""The per-lookup HTTP client: keep-alive connection pools per origin, one total deadline per request.

``HttpClient.request`` is the only way pfxhttp talks to a backend. Each origin (scheme, host, port) has a
``_HostPool`` that counts its open connections (at most ``max_connections_per_host``; waiters queue FIFO)
and keeps idle ones LIFO, so the warmest connection is reused and the coldest ages out first. Idle
connections are checked when taken: too old, or readable while idle (the server closed it, or sent bytes
nobody asked for), and they are closed instead of reused. Sockets are closed synchronously, so a cancelled
request can never leak one.
"""

from __future__ import annotations

import collections
import ssl
from dataclasses import dataclass, field

import trio

from pfxhttp.backend.http11 import TRANSPORT_ERRORS, Http11Connection, transport_error
from pfxhttp.backend.httpmsg import HttpResponse, PreparedRequest, Target
from pfxhttp.backend.tlsctx import build_ssl_context
from pfxhttp.config.model import HttpClientConfig, TlsConfig
from pfxhttp.errors import BackendTimeout, BackendTransportError

# Seconds a pooled connection must have been idle before it is polled at checkout. 0: every reuse is polled.
# Skipping the poll for recently used connections saved a syscall per request but let an unsolicited response
# (sent by a misbehaving backend on an idle keep-alive connection) be read as the answer to the next request:
# a wrong OK or a NOTFOUND (found by tests/test_faults.py). Correctness first.
LIVENESS_CHECK_AFTER = 0.0


@dataclass(slots=True)
class _IdleBudget:
    """The idle-connection count shared by all origins of one client (``max_idle_connections``)."""

    limit: int
    count: int = 0


@dataclass(slots=True, eq=False)
class _Waiter:
    """A request queued for a slot; ``granted`` is set by whoever hands it a connection or a free slot."""

    event: trio.Event = field(default_factory=trio.Event)
    granted: bool = False
    conn: Http11Connection | None = None  # None with granted: open a new connection in the slot
    closed: bool = False  # the client was closed while waiting


class _HostPool:
    """Connections to one origin. A "slot" is the right to hold one open connection."""

    __slots__ = ("_budget", "_client", "_idle", "_open", "_waiters", "target")

    def __init__(self, client: HttpClient, target: Target, budget: _IdleBudget) -> None:
        self._client = client
        self.target = target
        self._budget = budget
        self._idle: collections.deque[Http11Connection] = collections.deque()
        self._open = 0  # connections open or being opened, idle included
        self._waiters: collections.deque[_Waiter] = collections.deque()

    async def exchange(self, data: bytes, deadline: float) -> HttpResponse:
        """Send one request on a pooled or new connection; trio.TooSlowError past ``deadline`` (trio clock).

        The deadline is applied where a wait happens (slot, connect, TLS, the I/O waits of the exchange) rather
        than by one cancel scope around it all: a cancel scope costs more than a plain exchange that never
        waits (rawio)."""
        conn = self._take_idle()
        if conn is None:
            slotted = False
            with trio.move_on_at(deadline):
                conn = await self._acquire_slot()
                slotted = True
            if not slotted:
                raise trio.TooSlowError
        # From here on this task holds a slot, with or without a connection in it.
        try:
            if conn is not None:
                try:
                    response = await conn.exchange(data, deadline)
                except BackendTransportError:
                    if conn.got_bytes:
                        raise
                    # The keep-alive race (RFC 9112 section 9.3.1): the server closed the idle connection as
                    # our request went out. Retry once, on a fresh connection in the same slot.
                    conn.close()
                    conn = None
                else:
                    self._check_in(conn)
                    return response
            with trio.move_on_at(deadline):
                conn = await self._connect()
            if conn is None:
                raise trio.TooSlowError
            response = await conn.exchange(data, deadline)
        except BaseException:
            # Cancelled and TooSlowError included: whatever state the connection is in, it is never reused.
            if conn is not None:
                conn.close()
            self._release_slot()
            raise
        self._check_in(conn)
        return response

    def _take_idle(self) -> Http11Connection | None:
        idle = self._idle
        if not idle:
            return None
        now = trio.current_time()
        max_age = self._client.idle_timeout
        while idle:
            conn = idle.pop()
            self._budget.count -= 1
            idle_for = now - conn.idle_since
            # Dead (closed by the server) or holding bytes nobody asked for: never reuse it (see above).
            if idle_for > max_age or (idle_for >= LIVENESS_CHECK_AFTER and conn.is_dead()):
                conn.close()
                self._open -= 1
                continue
            return conn
        return None

    async def _acquire_slot(self) -> Http11Connection | None:
        limit = self._client.max_per_host
        if not limit or self._open < limit:
            self._open += 1
            return None
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                # Handed a slot in the same instant the deadline struck: pass it on, never drop it.
                self._regrant(waiter)
            else:
                self._waiters.remove(waiter)
            raise
        if waiter.closed:
            raise BackendTransportError("HTTP client closed")
        return waiter.conn

    def _regrant(self, waiter: _Waiter) -> None:
        if waiter.conn is not None:
            self._check_in(waiter.conn)
        elif not waiter.closed:
            self._release_slot()

    def _grant(self, conn: Http11Connection | None) -> bool:
        """Hand ``conn`` (or, with None, a free slot) to the longest waiter; False if nobody waits."""
        if not self._waiters:
            return False
        waiter = self._waiters.popleft()
        waiter.granted = True
        waiter.conn = conn
        waiter.event.set()
        return True

    def _release_slot(self) -> None:
        if not self._grant(None):
            self._open -= 1

    def _check_in(self, conn: Http11Connection) -> None:
        """Return a connection after a request: to a waiter, to the idle stack, or closed."""
        if not conn.reusable or self._client.closed:
            conn.close()
            self._release_slot()
            return
        if self._grant(conn):
            return
        budget = self._budget
        idle = self._idle
        now = trio.current_time()
        conn.idle_since = now
        max_age = self._client.idle_timeout
        # The bottom of the LIFO stack is the oldest: close what has aged out there, so that sockets of a
        # quiet origin do not linger until the next checkout.
        while idle and now - idle[0].idle_since > max_age:
            self._close_idle(idle.popleft())
        if idle and len(idle) >= self._client.max_idle_per_host > 0:
            self._close_idle(idle.popleft())
        if budget.limit and budget.count >= budget.limit:
            conn.close()
            self._open -= 1
            return
        idle.append(conn)
        budget.count += 1

    def _close_idle(self, conn: Http11Connection) -> None:
        conn.close()
        self._open -= 1
        self._budget.count -= 1

    def close(self) -> None:
        """Close idle connections and turn waiters away (used by ``HttpClient.aclose``)."""
        while self._idle:
            self._close_idle(self._idle.pop())
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.granted = waiter.closed = True
            waiter.event.set()

    async def _connect(self) -> Http11Connection:
        target = self.target
        client = self._client
        try:
            raw = await trio.open_tcp_stream(target.host, target.port)
        except OSError as exc:
            raise transport_error(f"connect to {target.host} port {target.port} failed", exc) from exc
        # trio's SocketStream already sets TCP_NODELAY: a request is one small write that must not wait for
        # an ACK (Nagle), so nothing more to do here.
        stream: trio.abc.Stream = raw
        if target.scheme == "https":
            tls = trio.SSLStream(raw, client.ssl_context, server_hostname=target.host, https_compatible=True)
            try:
                await tls.do_handshake()
            except BaseException as exc:
                raw.socket.close()
                if isinstance(exc, TRANSPORT_ERRORS):
                    raise transport_error(f"TLS handshake with {target.host} failed", exc) from exc
                raise
            stream = tls
        return Http11Connection(
            stream, raw.socket, max_body=client.max_body_size, max_header=client.max_header_size
        )


class HttpClient:
    """The HTTP/1.1 client shared by every lookup of one loaded configuration."""

    __slots__ = (
        "_budget",
        "_pools",
        "closed",
        "idle_timeout",
        "max_body_size",
        "max_header_size",
        "max_idle_per_host",
        "max_per_host",
        "ssl_context",
        "timeout",
    )

    def __init__(
        self,
        config: HttpClientConfig,
        tls: TlsConfig,
        *,
        max_header_size: int = 65536,
    ) -> None:
        self.timeout = config.timeout
        self.max_per_host = config.max_connections_per_host
        self.max_idle_per_host = config.max_idle_connections_per_host
        self.idle_timeout = config.idle_connection_timeout
        self.max_body_size = config.max_response_body_size
        self.max_header_size = max_header_size
        self.closed = False
        # Built now, for https targets alone but always: a bad root_ca/cert/key is a load-time ConfigError,
        # and the system trust store is read once here, never inside the trio loop.
        self.ssl_context: ssl.SSLContext = build_ssl_context(tls)
        self._budget = _IdleBudget(config.max_idle_connections)
        self._pools: dict[tuple[str, str, int], _HostPool] = {}

    async def request(
        self, prepared: PreparedRequest, body: bytes | None, authorization: str | None = None
    ) -> HttpResponse:
        """Send ``prepared`` with ``body`` (and an Authorization field when given) and return the final response.

        One deadline (``timeout``) covers waiting for a slot, connecting, TLS, writing and reading. The body
        is gzipped when ``prepared.gzip_request`` says so (``PreparedRequest.wire``); a gzip-coded response
        comes back inflated, within ``max_body_size`` (``http_client.max_response_body_size``) both coded and
        inflated. Raises BackendTimeout, BackendTransportError, BackendProtocolError or BackendBodyTooLarge.
        """
        if self.closed:
            raise BackendTransportError("HTTP client closed")
        target = prepared.target
        pool = self._pools.get(target.origin)
        if pool is None:
            pool = self._pools[target.origin] = _HostPool(self, target, self._budget)
        try:
            return await pool.exchange(prepared.wire(body, authorization), trio.current_time() + self.timeout)
        except trio.TooSlowError:
            raise BackendTimeout(
                f"no complete response from {target.host} port {target.port} within {self.timeout:g} s"
            ) from None

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close idle connections; connections in use close when their request ends; later requests fail."""
        self.closed = True
        for pool in self._pools.values():
            pool.close()
        await trio.lowlevel.checkpoint()
