"""HTTP/1.1 response framing against a real local server that sends exact bytes (see tests/httpd_scripted.py):
Content-Length, chunked, close-delimited bodies, keep-alive, interim responses, the caps, and malformed or cut
responses that must fail cleanly."""

from __future__ import annotations

import pytest
import trio

from pfxhttp.backend.httpmsg import HttpResponse
from pfxhttp.errors import (
    BackendBodyTooLarge,
    BackendProtocolError,
    BackendTransportError,
)
from tests.httpd_scripted import ScriptedConnection, response_bytes, scripted_server
from tests.test_http11 import client, one_response, post


async def test_content_length_body_and_lowercased_headers() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Mixed-Case: Keep\r\n"
        b"Content-Length: 11\r\n\r\n"
    )
    response, server = await one_response(raw + b'{"v":"abc"}')
    assert response == HttpResponse(
        200,
        ((b"content-type", b"application/json"), (b"x-mixed-case", b"Keep"), (b"content-length", b"11")),
        b'{"v":"abc"}',
    )
    assert server.requests[0].body == b"{}"
    assert server.requests[0].header("Content-Length") == "2"


async def test_repeated_header_fields_are_kept_in_arrival_order() -> None:
    # Nothing is folded or dropped: a repeated field keeps each value where it came (RFC 9110 section 5.3).
    raw = b"HTTP/1.1 200 OK\r\nX: 1\r\nContent-Type: application/json\r\nX: 2\r\nContent-Length: 2\r\n\r\n{}"
    response, _ = await one_response(raw)
    assert response.headers == (
        (b"x", b"1"),
        (b"content-type", b"application/json"),
        (b"x", b"2"),
        (b"content-length", b"2"),
    )


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"
)


async def test_chunked_with_extensions_and_trailers() -> None:
    response, _ = await one_response(CHUNKED)
    assert response.status == 200
    assert response.body == b"hello 0123456789"


async def test_chunked_dripped_one_byte_at_a_time() -> None:
    async def script(conn: ScriptedConnection) -> None:
        while await conn.read_request() is not None:
            await conn.drip(CHUNKED)

    with trio.fail_after(10):
        async with scripted_server(script) as server, client() as http:
            for _ in range(2):
                response = await http.request(post(server), b"{}")
                assert response.body == b"hello 0123456789"
    assert server.connections == 1  # a complete chunked body leaves the connection reusable


async def test_read_until_close() -> None:
    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        await conn.drip(b"until the end", step=4)
        conn.close()

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            assert (await http.request(post(server), b"")).body == b"until the end"
            assert (await http.request(post(server), b"")).body == b"until the end"
    assert server.connections == 2


@pytest.mark.parametrize(
    ("head", "reused"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", True),
    ],
)
async def test_connection_persistence(head: bytes, reused: bool) -> None:
    async def script(conn: ScriptedConnection) -> None:
        while await conn.read_request() is not None:
            await conn.send(head + b"ok")

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            for _ in range(3):
                assert (await http.request(post(server), b"{}")).body == b"ok"
    assert server.connections == (1 if reused else 3)


async def test_interim_responses_skipped() -> None:
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"
    )
    response, _ = await one_response(raw)
    assert response == HttpResponse(201, ((b"content-length", b"4"),), b"done")


async def test_204_and_304_have_no_body() -> None:
    answers = [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        response_bytes(200, b"after"),
    ]

    async def script(conn: ScriptedConnection) -> None:
        for answer in answers:
            await conn.read_request()
            await conn.send(answer)
        await conn.wait_eof()

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            assert await http.request(post(server), b"") == HttpResponse(204, (), b"")
            assert (await http.request(post(server), b"")).status == 304
            assert (await http.request(post(server), b"")).body == b"after"
    assert server.connections == 1


async def test_response_before_request_fully_written() -> None:
    """The server answers 413 after the head and closes without reading the 8 MiB body."""

    async def script(conn: ScriptedConnection) -> None:
        await conn.read_head_only()
        await conn.respond(413, b"too big", headers=[("Connection", "close")], reason="Content Too Large")
        await trio.sleep(0.2)  # let the client's send block on full buffers, then reset it
        conn.close()

    with trio.fail_after(5):
        async with scripted_server(script) as server, client(timeout=4.0) as http:
            response = await http.request(post(server), b"x" * (8 << 20))
    assert (response.status, response.body) == (413, b"too big")


async def test_extra_bytes_after_response_discard_connection() -> None:
    async def script(conn: ScriptedConnection) -> None:
        while await conn.read_request() is not None:
            await conn.send(response_bytes(200, b"ok") + b"HTTP/1.1 200 OK\r\n")

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            for _ in range(2):
                assert (await http.request(post(server), b"")).body == b"ok"
    assert server.connections == 2


async def test_garbage_status_line() -> None:
    with pytest.raises(BackendProtocolError) as info:
        await one_response(b"SMTP/1.1 250 OK\r\n\r\n")
    assert info.value.reason == "invalid HTTP response"


async def test_unrequested_upgrade_is_a_protocol_error() -> None:
    with pytest.raises(BackendProtocolError):
        await one_response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")


async def test_header_block_too_big() -> None:
    raw = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 2000 + b"\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(BackendProtocolError, match="header block"):
        await one_response(raw, max_header_size=1024)


async def test_endless_header_line_stops_at_the_cap() -> None:
    """A header that never ends must fail on size, not wait for the deadline."""

    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * 4096)
        await trio.sleep_forever()

    with trio.fail_after(5):
        async with scripted_server(script) as server, client(timeout=30.0, max_header_size=1024) as http:
            with pytest.raises(BackendProtocolError, match="header block"):
                await http.request(post(server), b"")


async def test_body_too_large_by_content_length_up_front() -> None:
    """Refused on the header alone: the server sends no body at all and stays open."""

    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        await trio.sleep_forever()

    with trio.fail_after(5):
        async with (
            scripted_server(script) as server,
            client(timeout=30.0, max_response_body_size=1000) as http,
        ):
            with pytest.raises(BackendBodyTooLarge) as info:
                await http.request(post(server), b"")
    assert info.value.reason == "response too large"


async def test_body_too_large_chunked() -> None:
    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(100):
            await conn.send(b"100\r\n" + b"z" * 256 + b"\r\n")
        await trio.sleep_forever()

    with trio.fail_after(5):
        async with (
            scripted_server(script) as server,
            client(timeout=30.0, max_response_body_size=1000) as http,
        ):
            with pytest.raises(BackendBodyTooLarge):
                await http.request(post(server), b"")


async def test_body_too_large_read_until_close() -> None:
    with pytest.raises(BackendBodyTooLarge):
        await one_response(b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * 5000, max_response_body_size=4096)


async def test_body_exactly_at_cap_is_fine() -> None:
    response, _ = await one_response(response_bytes(200, b"y" * 4096), max_response_body_size=4096)
    assert len(response.body) == 4096


async def test_eof_mid_body() -> None:
    with pytest.raises(BackendTransportError, match="connection lost while reading") as info:
        await one_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    assert info.value.reason == "backend unreachable"


async def test_reset_mid_body() -> None:
    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        await trio.sleep(0.05)
        conn.reset()

    with trio.fail_after(5):
        async with scripted_server(script) as server, client() as http:
            with pytest.raises(BackendTransportError) as info:
                await http.request(post(server), b"")
    assert isinstance(info.value.__cause__, trio.BrokenResourceError | OSError)


async def test_eof_before_status_line() -> None:
    with pytest.raises(BackendTransportError, match="no response"):
        await one_response(b"")
