"""The connection pool and HttpClient against real local servers: reuse, retries, deadlines.
Connection and idle limits: test_pool_limits.py."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from pfxhttp.backend.httpmsg import PreparedRequest, Target, prepare_request
from pfxhttp.backend.pool import HttpClient
from pfxhttp.config.model import HttpClientConfig, TlsConfig
from pfxhttp.errors import BackendTimeout, BackendTransportError
from tests.httpd_scripted import ScriptedConnection, ScriptedServer, scripted_server, serve_forever

UA = "pfxhttp/test"


def client(**config: float) -> HttpClient:
    return HttpClient(HttpClientConfig(**config), TlsConfig())  # type: ignore[arg-type]


def post(server: ScriptedServer, path: str = "/") -> PreparedRequest:
    return prepare_request("POST", Target.parse(server.url(path)), [], user_agent=UA)


async def wait_for(predicate: object, what: str) -> None:
    """Poll a server counter the client changes asynchronously (bounded)."""
    for _ in range(200):
        if predicate():  # type: ignore[operator]
            return
        await trio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_keep_alive_reuses_one_connection() -> None:
    with trio.fail_after(5):
        async with scripted_server(serve_forever) as server, client() as http:
            for i in range(10):
                response = await http.request(post(server), b'{"n":%d}' % i)
                assert response.body == b"ok"
    assert server.connections == 1
    assert [r.body for r in server.requests] == [b'{"n":%d}' % i for i in range(10)]


async def test_custom_headers_and_user_agent_sent_exactly() -> None:
    target_headers = [("Content-Type", "application/json"), ("X-Api-Key", "s3cr3t value"), ("Accept", "*/*")]
    with trio.fail_after(5):
        async with scripted_server(serve_forever) as server, client() as http:
            prepared = prepare_request(
                "POST", Target.parse(server.url("/v1/q?x=1")), target_headers, user_agent="pfxhttp/9.9"
            )
            await http.request(prepared, b"[1]")
            await http.request(prepared, None)
    host = f"127.0.0.1:{server.port}"
    common = (
        f"POST /v1/q?x=1 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pfxhttp/9.9\r\n"
        "Content-Type: application/json\r\nX-Api-Key: s3cr3t value\r\nAccept: */*\r\n"
        "Connection: keep-alive\r\n"
    ).encode()
    assert server.requests[0].head == common + b"Content-Length: 3\r\n\r\n"
    assert server.requests[0].body == b"[1]"
    assert server.requests[1].head == common + b"Content-Length: 0\r\n\r\n"


async def test_connection_close_honoured() -> None:
    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        await conn.respond(200, b"bye", headers=[("Connection", "close")])
        assert await conn.wait_eof() == b""  # the client closes its end; nothing more is sent

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            for _ in range(3):
                assert (await http.request(post(server), b"")).body == b"bye"
            await wait_for(lambda: server.eofs == 3, "client closes")
    assert server.connections == 3


async def test_idle_connection_closed_by_server_is_not_reused() -> None:
    """The server closes after answering; the client notices at checkout or retries: either way one fresh
    connection answers."""

    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        await conn.respond(200, b"once")
        conn.close()

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            assert (await http.request(post(server), b"")).body == b"once"
            await trio.sleep(0.05)
            assert (await http.request(post(server), b"")).body == b"once"
    assert server.connections == 2
    assert len(server.requests) == 2


async def test_keep_alive_race_retried_once_on_fresh_connection() -> None:
    """The first connection dies just as the second request arrives (read, then closed unanswered)."""

    async def script(conn: ScriptedConnection) -> None:
        if conn.index == 0:
            await conn.read_request()
            await conn.respond(200, b"first")
            await conn.read_request()
            conn.close()
        else:
            await serve_forever(conn, b"fresh")

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            assert (await http.request(post(server), b"1")).body == b"first"
            assert (await http.request(post(server), b"2")).body == b"fresh"
            assert (await http.request(post(server), b"3")).body == b"fresh"
    assert server.connections == 2
    assert [r.body for r in server.requests] == [b"1", b"2", b"2", b"3"]


async def test_server_that_always_closes_gets_exactly_one_retry() -> None:
    async def script(conn: ScriptedConnection) -> None:
        if conn.index == 0:
            await conn.read_request()
            await conn.respond(200, b"first")
        await conn.read_request()
        conn.close()

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            await http.request(post(server), b"1")
            with pytest.raises(BackendTransportError, match="no response") as info:
                await http.request(post(server), b"2")
    assert info.value.reason == "backend unreachable"
    assert server.connections == 2
    assert [r.body for r in server.requests] == [b"1", b"2", b"2"]


async def test_reset_on_reused_connection_is_retried() -> None:
    async def script(conn: ScriptedConnection) -> None:
        if conn.index == 0:
            await conn.read_request()
            await conn.respond(200, b"first")
            await conn.read_request()
            conn.reset()
        else:
            await serve_forever(conn, b"fresh")

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            await http.request(post(server), b"1")
            assert (await http.request(post(server), b"2")).body == b"fresh"
    assert server.connections == 2


async def test_no_retry_once_response_bytes_arrived() -> None:
    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        await conn.respond(200, b"first")
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Le")
        conn.close()

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            await http.request(post(server), b"1")
            with pytest.raises(BackendTransportError, match="connection lost"):
                await http.request(post(server), b"2")
    assert server.connections == 1


async def test_no_retry_on_fresh_connection() -> None:
    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        conn.close()

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            with pytest.raises(BackendTransportError):
                await http.request(post(server), b"1")
    assert server.connections == 1


async def test_connection_refused() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    prepared = prepare_request("POST", Target.parse(f"http://127.0.0.1:{port}/"), [], user_agent=UA)
    with trio.fail_after(5):
        async with client() as http:
            with pytest.raises(BackendTransportError, match=r"connect to 127\.0\.0\.1") as info:
                await http.request(prepared, b"")
    assert info.value.reason == "backend unreachable"
    assert isinstance(info.value.__cause__, OSError)


async def test_timeout_when_server_never_answers_then_pool_still_works() -> None:
    async def script(conn: ScriptedConnection) -> None:
        if conn.index == 0:
            await conn.read_request()
            await conn.wait_eof()  # never answers; returns once the client drops the connection
            return
        await serve_forever(conn)

    with trio.fail_after(5):
        async with scripted_server(script) as server, client(timeout=0.3, max_connections_per_host=1) as http:
            with pytest.raises(BackendTimeout) as info:
                await http.request(post(server), b"")
            assert info.value.reason == "backend timeout"
            # The timed-out connection was discarded and its only slot released.
            assert (await http.request(post(server), b"")).body == b"ok"
            await wait_for(lambda: server.eofs == 1, "timed-out connection closed")
    assert server.connections == 2


async def test_timeout_on_slow_drip() -> None:
    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        await conn.drip(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000, delay=0.02, step=10)

    with trio.fail_after(5):
        async with scripted_server(script) as server, client(timeout=0.3) as http:
            with pytest.raises(BackendTimeout):
                await http.request(post(server), b"")


async def test_cancellation_propagates_and_releases_the_slot() -> None:
    async def script(conn: ScriptedConnection) -> None:
        if conn.index == 0:
            await conn.read_request()
            await conn.wait_eof()  # never answers; returns once the client drops the connection
            return
        await serve_forever(conn)

    with trio.fail_after(5):
        async with scripted_server(script) as server, client(timeout=30, max_connections_per_host=1) as http:
            with trio.move_on_after(0.1) as scope:
                await http.request(post(server), b"")
            assert scope.cancelled_caught  # trio.Cancelled went through untouched
            assert (await http.request(post(server), b"")).body == b"ok"
            await wait_for(lambda: server.eofs == 1, "cancelled connection closed")
    assert server.connections == 2


async def test_aclose_closes_idle_and_refuses_new_requests() -> None:
    with trio.fail_after(5):
        async with scripted_server(serve_forever) as server:
            http = client()
            await http.request(post(server), b"")
            await http.aclose()
            await wait_for(lambda: server.eofs == 1, "idle connection closed")
            with pytest.raises(BackendTransportError, match="closed"):
                await http.request(post(server), b"")


async def test_connections_use_tcp_nodelay() -> None:
    seen: list[int] = []

    async def script(conn: ScriptedConnection) -> None:
        await serve_forever(conn)

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            await http.request(post(server), b"")
            pool = next(iter(http._pools.values()))
            conn = pool._idle[0]
            seen.append(conn._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    assert seen == [1]


async def test_liveness_poll_only_after_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The liveness poll threshold works as documented (the default, 0, polls every reuse: see pool.py for why);
    either way a connection the server closed never fails the request."""
    from pfxhttp.backend import http11, pool

    polls: list[bool] = []
    real_is_dead = http11.Http11Connection.is_dead

    def counting_is_dead(self: http11.Http11Connection) -> bool:
        polls.append(dead := real_is_dead(self))
        return dead

    monkeypatch.setattr(http11.Http11Connection, "is_dead", counting_is_dead)
    monkeypatch.setattr(pool, "LIVENESS_CHECK_AFTER", 0.2)

    async def script(conn: ScriptedConnection) -> None:
        for _ in range(10):
            if await conn.read_request() is None:
                return
            await conn.respond(200, b"kept")

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            for _ in range(3):
                assert (await http.request(post(server), b"")).body == b"kept"
            assert polls == []  # reused at once: no poll
            await trio.sleep(0.3)
            assert (await http.request(post(server), b"")).body == b"kept"
    assert polls == [False]  # idle past the threshold: polled once, alive, reused
    assert server.connections == 1
