"""One task per Postfix connection: read frames, answer each in order, close cleanly.

This module holds the ONE place per connection where unexpected errors are caught (``serve_connection``): an
exception escaping a trio connection task would take down the whole server, so it is logged with its traceback
and only that connection is closed.

Deadlines and limits: the frame loop records what its connection is doing (``ConnState``: idle between
requests, reading the rest of a request, answering, writing the reply) and since when; the registry
(pfxhttp.server.registry) enforces the idle timeout, the frame and write deadlines and the connection limits
from that. Idle connections time out after a limit longer than Postfix's own (socketmap: Postfix closes idle
connections after 10 s; policy: after smtpd_policy_service_max_idle = 300 s), so it is Postfix that normally
closes, at a request boundary. At shutdown idle connections are closed at once, while a connection busy with a
backend request finishes it and then closes.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import trio

from pfxhttp.backend.rawio import RawSocketIO
from pfxhttp.backend.runtime import Runtime
from pfxhttp.config.model import ListenConfig, ListenKind
from pfxhttp.errors import ProtocolError, ReplyError
from pfxhttp.protocol.netstring import NetstringDecoder
from pfxhttp.protocol.policy import PolicyDecoder, PolicyRequest
from pfxhttp.protocol.socketmap import SocketmapReply, SocketmapRequest
from pfxhttp.protocol.tcptable import TcpTableDecoder, TcpTableRequest, TcpTableStatus
from pfxhttp.server.registry import FRAME_TIMEOUT, WRITE_TIMEOUT, Connection, ConnectionRegistry, ConnState

if TYPE_CHECKING:  # imported at run time only when metrics are enabled (prometheus-client costs memory)
    from pfxhttp.server.metrics import ListenerMeter, Metrics

SOCKETMAP_IDLE_TIMEOUT = 60.0
POLICY_IDLE_TIMEOUT = 330.0
DEFAULT_IDLE_TIMEOUTS: Mapping[ListenKind, float] = {
    ListenKind.SOCKET_MAP: SOCKETMAP_IDLE_TIMEOUT,
    ListenKind.POLICY_SERVICE: POLICY_IDLE_TIMEOUT,
    ListenKind.TCP_TABLE: SOCKETMAP_IDLE_TIMEOUT,  # same client-side limits as socketmap (dict_tcp.c)
}
RECEIVE_SIZE = 65536


def _peer(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return "?"
    try:
        peer = sock.getpeername()
    except OSError:
        return "?"
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return str(peer) or "unix"


class _Stream(Protocol):
    async def receive_some(self, max_bytes: int) -> bytes | bytearray: ...
    async def send_all(self, data: bytes) -> None: ...


class _Decoder(Protocol):
    @property
    def at_boundary(self) -> bool: ...
    def feed(self, data: bytes | bytearray) -> None: ...
    def next(self) -> Any: ...
    def eof(self) -> None: ...


# What a protocol does with one decoded frame: the bytes to send (None: nothing) and whether to close after.
_Answer = Callable[[Any, int], Awaitable[tuple[bytes | None, bool]]]


async def _frame_loop(stream: trio.abc.Stream, conn: Connection, decoder: _Decoder, answer: _Answer) -> int:
    """Read, decode and answer frames in order until EOF, a stop or the protocol asks to close."""
    # Plain sockets (every listener kind): syscalls first, the scheduler only when they would block (rawio).
    io: _Stream = RawSocketIO(stream.socket) if isinstance(stream, trio.SocketStream) else stream
    count = 0
    frame_started: float | None = None  # when the first byte of a request still incomplete was read
    while True:
        # Waiting on the client: the deadline sweep, a stop or a new connection at the limit may cancel
        # conn.scope now (inline, not a helper coroutine: once per request).
        if conn.stopping:
            conn.scope.cancel()
        if frame_started is None:
            conn.since = trio.current_time()
            conn.state = ConnState.IDLE
        else:
            conn.since = frame_started
            conn.state = ConnState.READING
        try:
            data = await io.receive_some(RECEIVE_SIZE)
        finally:
            conn.state = ConnState.ANSWERING
        if not data:
            decoder.eof()  # a close inside a frame is a protocol error; at a boundary it is normal
            return count
        decoder.feed(data)
        while (frame := decoder.next()) is not None:
            frame_started = None
            count += 1
            wire, last = await answer(frame, count)
            if wire is not None:
                conn.since = trio.current_time()
                conn.state = ConnState.WRITING
                await io.send_all(wire)
                conn.state = ConnState.ANSWERING
            if last:
                return count
        if conn.stopping:
            return count
        if frame_started is None and not decoder.at_boundary:
            # The deadline counts from here, not from the receive: time spent answering earlier pipelined
            # requests is ours, not the client's.
            frame_started = trio.current_time()


def _socketmap(ctx: ServerContext, listener: ListenConfig, log: Any) -> tuple[_Decoder, _Answer]:
    meter = ctx.listener_meter(listener)  # metrics
    debug = log.is_enabled_for(logging.DEBUG)

    async def answer(payload: bytes, count: int) -> tuple[bytes | None, bool]:
        request = SocketmapRequest.parse(payload)
        if debug:  # building the call's arguments costs more than the dropped line saves
            log.debug("socketmap request", request=count, name=request.name, key=request.key)
        runtime = ctx.runtime()  # per request: a reload swaps it; a running request keeps its own
        max_reply = runtime.max_reply_size
        reply = await runtime.socketmap(request, log, count, listener)
        try:
            wire = reply.encode(max_reply)
        except ReplyError as exc:  # the mapping checks sizes and bytes first; this is the last guard
            log.error("reply could not be encoded", request=count, error=str(exc))
            reply = SocketmapReply.perm("invalid reply")  # metrics: count the reply sent
            wire = reply.encode(max_reply)
        if meter is not None:  # metrics
            meter.socketmap(request.name, reply.status)
        if debug:
            log.debug("socketmap reply", request=count, status=reply.status.value)
        return wire, False

    return NetstringDecoder(), answer


def _policy(ctx: ServerContext, listener: ListenConfig, log: Any) -> tuple[_Decoder, _Answer]:
    service = listener.name
    meter = ctx.listener_meter(listener)  # metrics
    debug = log.is_enabled_for(logging.DEBUG)

    async def answer(request: PolicyRequest, count: int) -> tuple[bytes | None, bool]:
        if debug:  # the attribute look-ups cost something even when debug lines are dropped
            log.debug(
                "policy request",
                request=count,
                service=service,
                protocol_state=request.get("protocol_state"),
                sender=request.get("sender"),
                recipient=request.get("recipient"),
            )
        reply = await ctx.runtime().policy(service, request, log, count, listener)
        if meter is not None:  # metrics
            meter.policy(None if reply is None else reply.action)
        if reply is None:  # on_error: close -> Postfix applies smtpd_policy_service_default_action
            log.info("backend failed, closing without a reply (on_error: close)", request=count)
            return None, True
        if debug:
            log.debug("policy reply", request=count, action=reply.action)
        return reply.encode(), False

    return PolicyDecoder(), answer


def _tcp_table(ctx: ServerContext, listener: ListenConfig, log: Any) -> tuple[_Decoder, _Answer]:
    meter = ctx.listener_meter(listener)  # metrics

    async def answer(request: TcpTableRequest, count: int) -> tuple[bytes | None, bool]:
        log.debug("tcp_table request", request=count, name=listener.name, key=request.key)
        reply = await ctx.runtime().tcp_table(listener.name, request.key, log, count, listener)
        if meter is not None:  # metrics
            meter.tcp_table(reply.status)
        log.debug("tcp_table reply", request=count, status=reply.status.value)
        # Postfix closes after a 4xx reply anyway (dict_tcp.c): close too.
        return reply.encode(), reply.status is TcpTableStatus.TEMP

    return TcpTableDecoder(), answer


class ServerContext:
    """What connection tasks share: the current runtime and the connection registry."""

    def __init__(
        self,
        runtime: Runtime,
        log: Any,
        idle_timeouts: Mapping[ListenKind, float] | None = None,
        metrics: Metrics | None = None,  # metrics
        frame_timeout: float = FRAME_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self._runtime = runtime
        self.metrics = metrics  # metrics
        self.idle_timeouts = dict(idle_timeouts or DEFAULT_IDLE_TIMEOUTS)
        self.registry = ConnectionRegistry(frame_timeout, write_timeout)
        self.log = log
        self._session_ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)

    def runtime(self) -> Runtime:
        return self._runtime

    def register(self, listener: ListenConfig) -> Connection:
        """A new connection of ``listener``, counted against the limits from now on."""
        conn = Connection(self.idle_timeouts[listener.kind], listener.identity())
        conn.stopping = self.registry.stopping  # accepted just as the stop began
        self.registry.add(conn)
        return conn

    def swap(self, runtime: Runtime) -> Runtime:
        """A reload: later requests use ``runtime``; requests already running keep the one they started with.
        Returns the previous runtime (to retire)."""
        previous, self._runtime = self._runtime, runtime
        return previous

    def session_id(self) -> str:
        return f"{self._prefix}-{next(self._session_ids)}"

    def listener_meter(self, listener: ListenConfig) -> ListenerMeter | None:
        """metrics: the listener's pre-bound counters, None without metrics."""
        return None if self.metrics is None else self.metrics.listener(listener)


_PROTOCOLS: dict[ListenKind, Callable[[ServerContext, ListenConfig, Any], tuple[_Decoder, _Answer]]] = {
    ListenKind.SOCKET_MAP: _socketmap,
    ListenKind.POLICY_SERVICE: _policy,
    ListenKind.TCP_TABLE: _tcp_table,
}


async def serve_connection(
    stream: trio.abc.Stream, ctx: ServerContext, listener: ListenConfig, conn: Connection | None = None
) -> None:
    """Serve one connection to its end. Never raises (except Cancelled): this is the per-connection catch-all.
    ``conn``: its registration, when the accept loop made it (``ServerContext.register``)."""
    if conn is None:
        conn = ctx.register(listener)
    meter = ctx.listener_meter(listener)  # metrics
    if meter is not None:
        meter.connections.inc()
    log = ctx.log.bind(session=ctx.session_id(), listener=listener.name or listener.describe())
    log.debug("connection opened", peer=_peer(stream))
    requests = 0
    try:
        with conn.scope:
            decoder, answer = _PROTOCOLS[listener.kind](ctx, listener, log)
            requests = await _frame_loop(stream, conn, decoder, answer)
        if conn.evicted:
            log.debug("connection closed to make room for a new one (connection limit)")
        elif conn.scope.cancelled_caught:
            log.debug("connection deadline or shutdown")
    except ProtocolError as exc:
        log.error("malformed request, closing connection", error=str(exc))
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        log.debug("connection lost", error=str(exc) or type(exc).__name__)
    except Exception:
        log.exception("unexpected error, closing connection")
    finally:
        ctx.registry.discard(conn)
        if meter is not None:  # metrics
            meter.connections.dec()
        log.debug("connection closed", requests=requests)
        await trio.aclose_forcefully(stream)  # may raise a pending Cancelled, after closing: keep it last
