"""A small trio HTTP/1.1 server (h11) for the demo backend and for integration tests.

Not on any hot path: it exists so ``pfxhttp demo`` needs nothing but pfxhttp, and so tests talk to a real HTTP
server over loopback instead of a mocked transport. Keep-alive, Content-Length and chunked request bodies are
handled by h11; every response carries Content-Length.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import h11
import trio

MAX_REQUEST_BODY = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str  # request-target, query string included
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int = 200
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = field(default=(("Content-Type", "application/json"),))


Handler = Callable[[HttpRequest], Awaitable[HttpReply]]


async def _read_event(conn: h11.Connection, stream: trio.SocketStream) -> object:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
            continue
        return event


async def _send(conn: h11.Connection, stream: trio.SocketStream, reply: HttpReply) -> None:
    headers = [*reply.headers, ("Content-Length", str(len(reply.body)))]
    data = conn.send(h11.Response(status_code=reply.status, headers=headers))
    data += conn.send(h11.Data(data=reply.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


async def _serve_connection(handler: Handler, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=65536)
    try:
        while True:
            event = await _read_event(conn, stream)
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed or an unexpected event: close
            body = bytearray()
            while True:
                part = await _read_event(conn, stream)
                if isinstance(part, h11.Data):
                    body += part.data
                    if len(body) > MAX_REQUEST_BODY:
                        await _send(conn, stream, HttpReply(413, b'{"error":"too large"}'))
                        return
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return
            request = HttpRequest(
                method=event.method.decode("ascii"),
                path=event.target.decode("ascii", "replace"),
                headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers},
                body=bytes(body),
            )
            await _send(conn, stream, await handler(request))
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def serve_http(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on host:port until cancelled; ``task_status.started`` gets the bound port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(partial(_serve_connection, handler), listeners)
    finally:
        for listener in listeners:  # serve_listeners leaves them open when cancelled; sync close
            listener.socket.close()  # so a pending cancellation cannot stop the loop half-way
