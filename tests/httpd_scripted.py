"""A raw trio TCP (optionally TLS) server for tests that must send exact bytes.

Each accepted connection is answered by a scripted coroutine ``script(conn)`` that reads requests and writes
whatever bytes the test wants: chunked bodies, early closes, garbage, slow drips, resets. The server counts
connections (total and concurrent) and records every request it read, so tests can assert what the client
did on the wire. An exception raised by a script (an assert) escapes ``scripted_server`` and fails the test;
a client that hangs up is not an error.

    async def script(conn: ScriptedConnection) -> None:
        while (request := await conn.read_request()) is not None:
            await conn.respond(200, b"hello")

    async with scripted_server(script) as server:
        ... server.url("/path") ...
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio

_MAX_HEAD = 1 << 20
_LOOP_BOUND = 100_000  # every read loop here is bounded


@dataclass(frozen=True)
class RawRequest:
    """One request as the server read it; ``head`` is exact, up to and including the blank line."""

    head: bytes
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class ScriptedServer:
    """What the server saw; ``port`` is set once it listens on 127.0.0.1."""

    port: int = 0
    scheme: str = "http"
    connections: int = 0  # accepted so far
    active: int = 0  # open right now
    max_active: int = 0
    requests: list[RawRequest] = field(default_factory=list)
    peer_certs: list[dict[str, object] | None] = field(default_factory=list)  # TLS: per handshake
    alpn: list[str | None] = field(default_factory=list)  # TLS: the protocol each handshake selected
    handshake_failures: int = 0
    eofs: int = 0  # connections on which the server read EOF (the client closed first)

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


Script = Callable[["ScriptedConnection"], Awaitable[None]]


class ScriptedConnection:
    """One accepted connection handed to a script."""

    def __init__(
        self, server: ScriptedServer, index: int, stream: trio.abc.Stream, sock: trio.socket.SocketType
    ):
        self.server = server
        self.index = index  # 0 for the first connection the server accepted
        self.stream = stream
        self.sock = sock
        self.requests_here = 0  # requests read on this connection
        self._buf = bytearray()

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        if not data:
            self.server.eofs += 1
            return False
        self._buf += data
        return True

    async def read_request(self) -> RawRequest | None:
        """Read one whole request (Content-Length body); None if the client closed before sending one."""
        for _ in range(_LOOP_BOUND):
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buf) > _MAX_HEAD:
                raise AssertionError("request head too large")
            if not await self._fill():
                if self._buf:
                    raise AssertionError(f"client closed mid-request: {bytes(self._buf)!r}")
                return None
        head = bytes(self._buf[: end + 4])
        del self._buf[: end + 4]
        lines = head[:-4].decode("utf-8").split("\r\n")
        method, target, version = lines[0].split(" ")
        assert version == "HTTP/1.1", lines[0]
        headers = tuple(
            (name, value.strip()) for name, _, value in (line.partition(":") for line in lines[1:])
        )
        length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
        for _ in range(_LOOP_BOUND):
            if len(self._buf) >= length:
                break
            if not await self._fill():
                raise AssertionError("client closed mid-body")
        body = bytes(self._buf[:length])
        del self._buf[:length]
        request = RawRequest(head, method, target, headers, body)
        self.server.requests.append(request)
        self.requests_here += 1
        return request

    async def read_head_only(self) -> bytes:
        """Read up to the blank line and no further (the body stays unread in the socket)."""
        for _ in range(_LOOP_BOUND):
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                return bytes(self._buf[: end + 4])
            data = await self.stream.receive_some(1)
            if not data:
                raise AssertionError("client closed before the end of the head")
            self._buf += data
        raise AssertionError("no end of head")

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def drip(self, data: bytes, *, delay: float = 0.0, step: int = 1) -> None:
        """Send ``data`` ``step`` bytes at a time, sleeping ``delay`` between writes."""
        for i in range(0, len(data), step):
            await self.stream.send_all(data[i : i + step])
            await trio.sleep(delay)

    async def respond(
        self,
        status: int = 200,
        body: bytes = b"",
        *,
        headers: Sequence[tuple[str, str]] = (),
        reason: str = "OK",
    ) -> None:
        """Send a Content-Length framed HTTP/1.1 response."""
        await self.send(response_bytes(status, body, headers=headers, reason=reason))

    async def wait_eof(self) -> bytes:
        """Read until the client closes; return whatever it sent meanwhile."""
        extra = bytearray(self._buf)
        self._buf.clear()
        for _ in range(_LOOP_BOUND):
            data = await self.stream.receive_some(65536)
            if not data:
                self.server.eofs += 1
                return bytes(extra)
            extra += data
        raise AssertionError("client never closed")

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def response_bytes(
    status: int = 200, body: bytes = b"", *, headers: Sequence[tuple[str, str]] = (), reason: str = "OK"
) -> bytes:
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    return head.encode() + b"\r\n" + body


def chunked_bytes(
    status: int = 200, pieces: Sequence[bytes] = (), *, headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    """A chunked HTTP/1.1 response with one chunk per non-empty piece, then the last chunk."""
    head = f"HTTP/1.1 {status} OK\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces if piece)
    return head.encode() + b"\r\n" + chunks + b"0\r\n\r\n"


async def _handle(
    server: ScriptedServer, script: Script, ctx: ssl.SSLContext | None, raw: trio.SocketStream
) -> None:
    index = server.connections
    server.connections += 1
    server.active += 1
    server.max_active = max(server.max_active, server.active)
    stream: trio.abc.Stream = raw
    try:
        if ctx is not None:
            tls = trio.SSLStream(raw, ctx, server_side=True, https_compatible=True)
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError:
                server.handshake_failures += 1
                return
            server.peer_certs.append(tls.getpeercert())
            server.alpn.append(tls.selected_alpn_protocol())
            stream = tls
        try:
            await script(ScriptedConnection(server, index, stream, raw.socket))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up or the script closed the socket: both are part of the tests
    finally:
        server.active -= 1
        raw.socket.close()


@asynccontextmanager
async def scripted_server(
    script: Script, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[ScriptedServer]:
    """Serve ``script`` on 127.0.0.1, an ephemeral port; stop when the block ends."""
    server = ScriptedServer(scheme="https" if ssl_context else "http")
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, partial(_handle, server, script, ssl_context), 0, host="127.0.0.1")
        )
        server.port = listeners[0].socket.getsockname()[1]
        try:
            yield server
        except BaseException as exc:
            # Kept out of the nursery so that a test sees its own exception, not an ExceptionGroup around it.
            body_error = exc
        nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error


async def serve_forever(conn: ScriptedConnection, body: bytes = b"ok") -> None:
    """A plain keep-alive server script: answer every request with 200 and ``body``."""
    for _ in range(_LOOP_BOUND):
        if await conn.read_request() is None:
            return
        await conn.respond(200, body)
