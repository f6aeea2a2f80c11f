"""The HTTP client's connection limits against a real local server: the deadline covers waiting for a slot, max
connections per host (and unlimited), FIFO waiters, idle limits per host and in total, the idle timeout."""

from __future__ import annotations

import trio
import trio.testing

from pfxhttp.backend.pool import HttpClient
from pfxhttp.errors import BackendTimeout
from tests.httpd_scripted import ScriptedConnection, ScriptedServer, scripted_server, serve_forever
from tests.test_pool import client, post, wait_for


async def test_deadline_covers_waiting_for_a_slot() -> None:
    release = trio.Event()

    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        await release.wait()

    outcomes: list[str] = []

    async def one(http: HttpClient, server: ScriptedServer) -> None:
        try:
            await http.request(post(server), b"")
        except BackendTimeout:
            outcomes.append("timeout")

    with trio.fail_after(5):
        async with scripted_server(script) as server, client(timeout=0.3, max_connections_per_host=1) as http:
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(one, http, server)
            release.set()
    assert outcomes == ["timeout"] * 3
    assert server.connections == 1  # the waiters never got a slot, so never connected


async def test_max_connections_per_host_under_concurrency() -> None:
    async def script(conn: ScriptedConnection) -> None:
        while await conn.read_request() is not None:
            await trio.sleep(0.02)
            await conn.respond(200, b"ok")

    bodies: list[bytes] = []

    async def one(http: HttpClient, server: ScriptedServer) -> None:
        bodies.append((await http.request(post(server), b"")).body)

    with trio.fail_after(5):
        async with scripted_server(script) as server, client(max_connections_per_host=2) as http:
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(one, http, server)
    assert bodies == [b"ok"] * 8
    assert server.max_active == 2
    assert server.connections == 2  # finished connections were handed straight to the waiters


async def test_unlimited_connections_per_host() -> None:
    """Four requests that only complete once four connections are open at the same time."""
    all_in = trio.Event()

    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        if conn.server.active == 4:
            all_in.set()
        await all_in.wait()
        await conn.respond(200, b"ok")
        await conn.wait_eof()

    with trio.fail_after(5):
        async with scripted_server(script) as server, client(max_connections_per_host=0) as http:
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(http.request, post(server), b"")
    assert server.max_active == 4


async def test_waiters_are_served_fifo() -> None:
    async def script(conn: ScriptedConnection) -> None:
        while await conn.read_request() is not None:
            await trio.sleep(0.01)
            await conn.respond(200, b"ok")

    with trio.fail_after(5):
        async with scripted_server(script) as server, client(max_connections_per_host=1) as http:
            async with trio.open_nursery() as nursery:
                for i in range(6):
                    nursery.start_soon(http.request, post(server), b"%d" % i)
                    await trio.testing.wait_all_tasks_blocked()  # request i is queued before i+1 starts
    assert [r.body for r in server.requests] == [b"%d" % i for i in range(6)]


async def test_idle_limit_per_host() -> None:
    all_in = trio.Event()

    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        if conn.server.active == 3:
            all_in.set()
        await all_in.wait()
        await conn.respond(200, b"ok")
        await serve_forever(conn)

    with trio.fail_after(5):
        async with scripted_server(script) as server, client(max_idle_connections_per_host=1) as http:
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(http.request, post(server), b"")
            await wait_for(lambda: server.eofs == 2, "two idle connections closed")
            await http.request(post(server), b"")
            assert server.connections == 3  # the one kept idle was reused
            assert server.active == 1


async def test_idle_limit_in_total() -> None:
    with trio.fail_after(5):
        async with (
            scripted_server(serve_forever) as first,
            scripted_server(serve_forever) as second,
            client(max_idle_connections=1) as http,
        ):
            await http.request(post(first), b"")
            await http.request(post(second), b"")  # no idle room left: closed after use
            await wait_for(lambda: second.eofs == 1, "second origin's connection closed")
            await http.request(post(first), b"")
    assert first.connections == 1
    assert first.eofs == 0 or first.eofs == 1  # closed by aclose at the end at most


async def test_idle_timeout() -> None:
    with trio.fail_after(5):
        async with scripted_server(serve_forever) as server, client(idle_connection_timeout=0.05) as http:
            await http.request(post(server), b"")
            await trio.sleep(0.15)
            await http.request(post(server), b"")
            await wait_for(lambda: server.eofs >= 1, "expired connection closed")
            assert server.connections == 2
            assert server.active == 1
