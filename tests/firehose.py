"""A hostile HTTP/1.1 backend that sends faster than pfxhttp can read, in a thread of its own.

The in-loop servers of tests/httpd_scripted.py share the trio loop with the client under test, so the client
always drains what they wrote and its reads wait: the request deadline, which applies where a read waits,
then always holds. ``Firehose`` runs outside the loop, on a blocking socket in a thread (the GIL is free
while the kernel copies), and keeps the client's socket full: every read finds data and none waits. That is
what a backend on a fast link does that streams endless trailers, chunk framing or tiny chunks.

Per connection: read one request (its head and a Content-Length body), send ``head``, then ``block`` again
and again until ``total`` bytes of blocks went out, then ``tail``; stop early when the client hangs up. With
``ssl_context`` it speaks TLS (an https:// backend). Every loop is bounded in count and every socket
operation in time, and ``close`` ends the thread.

    with Firehose(head, block, total=8 << 20, tail=b"\\r\\n") as server:
        ... server.url("/path") ... server.sent ...
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from types import TracebackType

_IO_TIMEOUT = 10.0  # seconds a single accept, recv or send may block
_MAX_CONNECTIONS = 64
_MAX_HEAD = 1 << 20
_LOOP_BOUND = 1_000_000


class Firehose:
    """``head`` + ``block`` * n + ``tail`` per connection; ``sent`` counts block bytes across connections."""

    def __init__(
        self,
        head: bytes,
        block: bytes,
        *,
        total: int,
        tail: bytes = b"",
        seconds: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.head, self.block, self.total, self.tail, self.seconds = head, block, total, tail, seconds
        self._ssl_context = ssl_context
        self.sent = 0
        self.connections = 0
        self.finished = 0  # connections that got their tail: the client read the whole response
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="firehose", daemon=True)

    def url(self, path: str = "/") -> str:
        scheme = "http" if self._ssl_context is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Firehose:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=_IO_TIMEOUT + 5)
        self._listener.close()

    def _serve(self) -> None:
        end = time.monotonic() + self.seconds
        while not self._stop.is_set() and self.connections < _MAX_CONNECTIONS and time.monotonic() < end:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.settimeout(_IO_TIMEOUT)
            try:
                if self._ssl_context is not None:
                    conn = self._ssl_context.wrap_socket(conn, server_side=True)
                with conn:
                    if self._read_request(conn):
                        self._answer(conn, end)
            except OSError:  # ssl.SSLError too
                conn.close()  # the client hung up or reset: what a client that gives up does

    def _read_request(self, conn: socket.socket) -> bool:
        data = b""
        for _ in range(_LOOP_BOUND):
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                break
            chunk = conn.recv(65536)
            if not chunk or len(data) > _MAX_HEAD:
                return False
            data += chunk
        else:
            return False
        length = 0
        for line in data[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = data[end + 4 :]
        for _ in range(_LOOP_BOUND):
            if len(body) >= length:
                return True
            chunk = conn.recv(65536)
            if not chunk:
                return False
            body += chunk
        return False

    def _answer(self, conn: socket.socket, end: float) -> None:
        conn.sendall(self.head)
        mine = 0
        for _ in range(_LOOP_BOUND):
            if mine >= self.total or self._stop.is_set() or time.monotonic() > end:
                break
            conn.sendall(self.block)
            mine += len(self.block)
            self.sent += len(self.block)
        else:
            return
        if mine >= self.total:
            conn.sendall(self.tail)
            self.finished += 1
            conn.shutdown(socket.SHUT_WR)
            # Hold the connection a little, until the client closes it, so that nothing is cut short.
            conn.settimeout(2.0)
            conn.recv(1)
