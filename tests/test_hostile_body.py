"""Hostile response bodies against the backend client, from a real local server that outruns it.

tests/firehose.py keeps the client's socket full, so no read ever waits: endless trailer fields, one endless
trailer line, endless chunk framing, and tiny chunks streamed past the request deadline. Each must end in a
defined BackendError (TEMP at the daemon) within the header budget or the deadline, never in an answer built
from the flood, nor in memory or time growing with it. The cap on the body itself is
``server.http_client.max_response_body_size`` (its config and its default are checked here too; the peak
memory at the cap is measured by bench/body_rss.py and checked through the daemon in test_hostile_daemon.py).
"""

from __future__ import annotations

import gc
import ssl
from pathlib import Path

import pytest
import trio
import trustme

from pfxhttp.backend.httpmsg import HttpResponse, PreparedRequest, Target, prepare_request
from pfxhttp.backend.pool import HttpClient
from pfxhttp.config import DEFAULT_MAX_RESPONSE_BODY_SIZE, parse_config
from pfxhttp.config.model import HttpClientConfig, TlsConfig
from pfxhttp.errors import BackendBodyTooLarge, BackendProtocolError, BackendTimeout, ConfigError
from tests.firehose import Firehose
from tests.httpd_scripted import ScriptedConnection, chunked_bytes, response_bytes, scripted_server

HEADER_BUDGET = 65536  # HttpClient's max_header_size default: the header section and trailers together
FLOOD = 8 << 20  # bytes a flood sends at most: 128 times the header budget
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def client(timeout: float = 10.0, body_cap: int = DEFAULT_MAX_RESPONSE_BODY_SIZE) -> HttpClient:
    return HttpClient(HttpClientConfig(timeout=timeout, max_response_body_size=body_cap), TlsConfig())


def post(url: str) -> PreparedRequest:
    return prepare_request("POST", Target.parse(url), [], user_agent="pfxhttp/test")


async def flood(
    head: bytes,
    block: bytes,
    tail: bytes,
    total: int = FLOOD,
    timeout: float = 10.0,
    body_cap: int = DEFAULT_MAX_RESPONSE_BODY_SIZE,
) -> tuple[BaseException | None, int]:
    """One request against a firehose; the error it ended in (None: an answer) and the bytes the server sent."""
    with Firehose(head, block, total=total, tail=tail) as server:
        with trio.fail_after(20):
            async with client(timeout, body_cap) as http:
                try:
                    await http.request(post(server.url()), b"{}")
                except (BackendProtocolError, BackendTimeout, BackendBodyTooLarge) as exc:
                    return exc, server.sent
    return None, server.sent


async def test_endless_trailer_fields_count_against_the_header_budget() -> None:
    """Before: every trailer field was appended to the response headers, without limit (2.8 GB in the
    review); the lookup was answered once the backend stopped."""
    error, sent = await flood(CHUNKED_HEAD + b"2\r\n{}\r\n0\r\n", b"X-T: a\r\n" * 1024, b"\r\n")
    assert isinstance(error, BackendProtocolError), error
    assert "trailer" in str(error)
    assert error.reason == "invalid HTTP response"
    assert sent < FLOOD  # refused while the flood was still coming


async def test_trailers_and_header_block_share_one_budget() -> None:
    """A header block just under the budget leaves no room for a trailer section of the same size."""
    half = b"X-H: " + b"h" * (HEADER_BUDGET // 2) + b"\r\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + half + b"\r\n"
    raw = head + b"2\r\n{}\r\n0\r\n" + half.replace(b"X-H", b"X-T") + b"\r\n"

    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        await conn.send(raw)

    with trio.fail_after(10):
        async with scripted_server(script) as server, client() as http:
            with pytest.raises(BackendProtocolError, match="trailer"):
                await http.request(post(server.url()), b"")


async def test_endless_trailer_line_is_refused_at_the_budget() -> None:
    """One trailer field that never ends: httptools joins its pieces in memory until the line ends."""
    error, sent = await flood(CHUNKED_HEAD + b"2\r\n{}\r\n0\r\nX-Endless: ", b"a" * 65536, b"\r\n\r\n")
    assert isinstance(error, BackendProtocolError), error
    assert sent < FLOOD


async def test_endless_chunk_extension_is_refused_at_the_budget() -> None:
    """Chunk framing without body data (llhttp skips extensions) is held to the same budget."""
    error, sent = await flood(CHUNKED_HEAD + b"2;ext=", b"e" * 65536, b"\r\n{}\r\n0\r\n\r\n")
    assert isinstance(error, BackendProtocolError), error
    assert sent < FLOOD


async def test_trailer_fields_are_not_merged_into_the_headers() -> None:
    """RFC 9110 section 6.5.1: a trailer field is not a header field; a trailing Content-Length or
    Content-Encoding must not recode anything, and a legitimate trailer section still works (llhttp itself
    refuses a trailing Content-Length)."""
    raw = chunked_bytes(200, [b'{"v":', b'"x"}'])[: -len(b"\r\n")]
    raw += b"Content-Encoding: gzip\r\nX-Checksum: abc\r\n\r\n"

    async def script(conn: ScriptedConnection) -> None:
        while await conn.read_request() is not None:
            await conn.send(raw)

    with trio.fail_after(10):
        async with scripted_server(script) as server, client() as http:
            for _ in range(2):
                response = await http.request(post(server.url()), b"")
                assert response == HttpResponse(200, ((b"transfer-encoding", b"chunked"),), b'{"v":"x"}')
    assert server.connections == 1  # a complete response with trailers leaves the connection reusable


async def test_deadline_holds_while_data_keeps_arriving() -> None:
    """Before: the deadline applied only where a read waited; 1-byte chunks that always arrived ahead of the
    reader ran on until the body cap (8 Mi llhttp callbacks: seconds) or the end of the stream instead of
    the 0.1 s deadline. The stream (64 MiB) and the cap are far beyond what the deadline lets through."""
    block = b"1\r\nx\r\n" * 10000
    error, _ = await flood(CHUNKED_HEAD, block, b"0\r\n\r\n", 64 << 20, timeout=0.1, body_cap=8 << 20)
    assert isinstance(error, BackendTimeout), error
    assert error.reason == "backend timeout"


async def test_deadline_holds_while_data_keeps_arriving_over_tls(tmp_path: Path) -> None:
    """Over TLS the deadline is a cancel scope, which trio's SSLStream honours at every receive."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    tls = TlsConfig(enabled=True, root_ca=str(tmp_path / "ca.pem"))
    block = b"1\r\nx\r\n" * 10000
    with Firehose(CHUNKED_HEAD, block, total=64 << 20, tail=b"0\r\n\r\n", ssl_context=context) as server:
        with trio.fail_after(20):
            config = HttpClientConfig(timeout=0.1, max_response_body_size=8 << 20)
            async with HttpClient(config, tls) as http:
                with pytest.raises(BackendTimeout):
                    await http.request(post(server.url()), b"{}")
    assert server.finished == 0


async def test_body_at_the_default_cap_is_read_and_one_byte_more_is_refused() -> None:
    at_cap = b'{"v":"' + b"x" * (DEFAULT_MAX_RESPONSE_BODY_SIZE - 8) + b'"}'
    answers = [response_bytes(200, at_cap), response_bytes(200, at_cap + b" ")]

    async def script(conn: ScriptedConnection) -> None:
        while answers and await conn.read_request() is not None:
            await conn.send(answers.pop(0))

    with trio.fail_after(10):
        async with scripted_server(script) as server, client() as http:
            assert (await http.request(post(server.url()), b"")).body == at_cap
            with pytest.raises(BackendBodyTooLarge):
                await http.request(post(server.url()), b"")


# --- server.http_client.max_response_body_size ---

BASE = "server:\n  listen: {type: tcp, address: 127.0.0.1, port: 23450}\n"


def test_body_cap_default_and_setting() -> None:
    assert parse_config(BASE, "t.yml").server.http_client.max_response_body_size == 128 * 1024
    text = BASE + "  http_client:\n    max_response_body_size: 1048576\n"
    config = parse_config(text, "t.yml")
    assert config.server.http_client.max_response_body_size == 1 << 20
    assert HttpClient(config.server.http_client, config.server.tls).max_body_size == 1 << 20


@pytest.mark.parametrize("value", ["0", "-1", "1023", "1073741825", "256k", "1.5", "true"])
def test_body_cap_bad_values_name_the_key_and_line(value: str) -> None:
    text = BASE + f"  http_client:\n    max_response_body_size: {value}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yml")
    message = str(info.value)
    assert "t.yml:4:" in message
    assert "server.http_client.max_response_body_size" in message


async def test_an_idle_pooled_connection_keeps_no_response_body() -> None:
    """Before: each idle keep-alive connection held its last body until its next use (up to the cap times
    max_idle_connections, besides the memory of the lookups in flight). The body is small enough to arrive
    in one read, so the bytes object the client returns is the one it would keep."""
    body = b'{"v":"' + b"x" * 4000 + b'"}'

    async def script(conn: ScriptedConnection) -> None:
        while await conn.read_request() is not None:
            await conn.send(response_bytes(200, body))

    with trio.fail_after(10):
        async with scripted_server(script) as server, client() as http:
            response = await http.request(post(server.url()), b"")
            received = response.body
            del response
            holders = [ref for ref in gc.get_referrers(received) if isinstance(ref, list | tuple)]
    assert received == body
    assert holders == []
