"""A misbehaving HTTP/1.1 backend on 127.0.0.1, written on raw trio sockets, for tests/test_faults.py. The faults,
plans and right answers are in tests/faultplan.py; what the server sends for each fault in tests/faultactions.py.

For every request the server reads the lookup key from the JSON body (``key`` for a socket map,
``recipient`` for a policy request) and draws a :class:`Plan` from a RNG seeded with ``seed/key``: the same key
always meets the same fault, so a failure is reproducible from the seed and the key alone. Then it does what
the plan says, down to the byte: a correct answer, a correct not-found, a delay past the daemon's deadline, a
reset before or in the middle of the response, 5xx, 429, invalid or empty JSON, a body over the client's cap,
a slow drip, a gzip bomb, a truncated gzip body, or a garbage status line. ``records`` says, per key, what the
server actually did (``RESTART`` is added when :meth:`FaultServer.restart` killed the request half-way), so
the suite can judge every reply the daemon gave against it.

The answers are derived from the key (:func:`right_value`, :func:`right_action`), so an answer meant for
another request, or a value a fault smuggled in, is told apart from the right one. Fault bodies carry bait:
the right value, no value, or a wrong one, so that a daemon that ignored the fault would show it.

With ``ssl_context`` the server speaks TLS first; with ``tls_garbage`` it answers a TLS client hello with
plain-text bytes. Connection-level counts (``accepted``, ``handshake_failures``) tell what the TLS targets saw.

Three more faults have weight 0 in DEFAULT_WEIGHTS because the daemon gets them wrong today; the xfail tests
of tests/test_faults.py plan them alone: an unsolicited extra response on a keep-alive connection, a status
line llhttp accepts although it is not HTTP/1.x, and a 0xx "interim" response with a body.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
import trio

from tests.faultactions import ACTIONS_BY_FAULT
from tests.faultplan import (
    BODY_CAP,
    DEFAULT_WEIGHTS,
    DRIP_STEP,
    LOOP_BOUND,
    MAX_HEAD,
    STREAM_PIECE,
    Fault,
    gzip_member,
    plan_for,
)


class FaultConnection:
    """One accepted connection; ``sock`` is the TCP socket under a TLS stream too (for resets)."""

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType) -> None:
        self.stream = stream
        self.sock = sock
        self.buf = bytearray()

    async def read_request(self) -> tuple[str, bytes] | None:
        """(request-target, body) of the next request; None when the client closed at a boundary."""
        for _ in range(LOOP_BOUND):
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buf) > MAX_HEAD or not await self._fill():
                return None
        else:
            return None
        head_text = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[: end + 4]
        target = head_text.split(" ", 2)[1]
        length = 0
        for line in head_text.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        for _ in range(LOOP_BOUND):
            if len(self.buf) >= length or not await self._fill():
                break
        if len(self.buf) < length:
            return None
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return target, body

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buf += data
        return bool(data)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def drip(self, data: bytes, step: int = 1) -> None:
        for i in range(0, len(data), step):
            await self.stream.send_all(data[i : i + step])
            await trio.sleep(DRIP_STEP)

    async def wait_eof(self, limit: float = 3.0) -> None:
        with trio.move_on_after(limit):
            for _ in range(LOOP_BOUND):
                if not await self.stream.receive_some(65536):
                    return

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
        if self.sock.fileno() >= 0:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@dataclass(eq=False)
class FaultServer:
    """The fault backend. ``await nursery.start(server.serve)`` returns the port; ``restart`` bounces it."""

    seed: int
    weights: Mapping[Fault, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    ssl_context: ssl.SSLContext | None = None
    tls_garbage: bool = False  # answer every connection with plain-text bytes (for an https:// target)
    port: int = 0
    records: defaultdict[str, list[Fault]] = field(default_factory=lambda: defaultdict(list))
    variants: Counter[tuple[Fault, str]] = field(default_factory=Counter)
    details: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    accepted: int = 0
    handshake_failures: int = 0
    restarts: int = 0
    _scope: trio.CancelScope | None = None
    _up: trio.Event = field(default_factory=trio.Event)
    _bomb: bytes = b""
    _downtime: float = 0.0

    def url(self, path: str) -> str:
        return f"{'https' if self.ssl_context or self.tls_garbage else 'http'}://127.0.0.1:{self.port}{path}"

    def _bind(self) -> trio.socket.SocketType:
        sock = trio.socket.socket()
        # Re-binding the same port right after a restart: the old connections were reset, but be safe.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; after ``restart`` the same port is bound again (at most 1000 times)."""
        if not self._bomb and self.weights.get(Fault.GZIP_BOMB):
            # Built before serving: compressing 17 MiB inside the run would stall every task for ~0.1 s.
            self._bomb = await trio.to_thread.run_sync(gzip_member, b"a" * (BODY_CAP + STREAM_PIECE), 9)
        for generation in range(1000):
            listener = self._bind()
            await listener.bind(("127.0.0.1", self.port))
            listener.listen(256)
            self.port = listener.getsockname()[1]
            try:
                with trio.CancelScope() as self._scope:
                    async with trio.open_nursery() as conns:
                        if generation == 0:
                            task_status.started(self.port)
                        self._up.set()
                        for _ in range(10_000_000):
                            sock, _addr = await listener.accept()
                            self.accepted += 1
                            conns.start_soon(self._handle, sock)
            finally:
                listener.close()
            await trio.sleep(self._downtime)

    async def restart(self, downtime: float) -> None:
        """Close the listener, reset every open connection, stay down ``downtime`` s, listen again."""
        assert self._scope is not None, "not serving"
        self._up = trio.Event()
        self._downtime = downtime
        self.restarts += 1
        self._scope.cancel()
        await self._up.wait()

    async def _handle(self, raw: trio.socket.SocketType) -> None:
        stream: trio.abc.Stream = trio.SocketStream(raw)
        conn = FaultConnection(stream, raw)
        cancelled = False
        last_key: str | None = None
        try:
            if self.tls_garbage:
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await conn.wait_eof()
                return
            if self.ssl_context is not None:
                conn.stream = trio.SSLStream(
                    stream, self.ssl_context, server_side=True, https_compatible=True
                )
                try:
                    await conn.stream.do_handshake()
                except trio.BrokenResourceError:
                    self.handshake_failures += 1
                    return
            for _ in range(LOOP_BOUND):
                request = await conn.read_request()
                if request is None:
                    return
                target, body = request
                policy = target.startswith("/policy")
                attrs = orjson.loads(body)
                key = str(attrs["recipient"] if policy else attrs["key"])
                plan = plan_for(self.seed, key, self.weights)
                self.records[key].append(plan.fault)
                last_key = key
                keep = await ACTIONS_BY_FAULT[plan.fault](self, conn, plan, policy, key)
                if not keep:
                    return
        except trio.Cancelled:
            # A restart: the reset may also discard an answer the daemon has not read yet, so the last
            # request on this connection is marked too, whether or not its answer went out whole.
            if last_key is not None:
                self.records[last_key].append(Fault.RESTART)
            cancelled = True
            raise
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the daemon went away: its deadline, its body cap, or a closed pool connection
        finally:
            if cancelled:
                conn.reset()  # a restart kills connections the hard way
            else:
                raw.close()

    def note(self, key: str, fault: Fault, variant: str) -> None:
        """Count the flavour of ``fault`` served, and keep it per key for the suite's messages."""
        self.variants[(fault, variant)] += 1
        self.details[key].append(f"{fault.value}/{variant}")

    @property
    def bomb(self) -> bytes:
        """A gzip member of BODY_CAP + 1 MiB of ``a`` (about 17 KiB coded); built by ``serve``."""
        return self._bomb
