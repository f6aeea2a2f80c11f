"""gzip content coding of the backend client: gzipped request bodies, inflated responses, and the limits
(bombs, truncation, foreign codings), against a real local server that sends exact bytes."""

from __future__ import annotations

import gzip
import random
import tracemalloc
import zlib

import pytest
import trio

from pfxhttp.backend.contentcoding import GzipDecoder, gzip_body, response_is_gzip
from pfxhttp.backend.httpmsg import HttpResponse, PreparedRequest, Target, prepare_request
from pfxhttp.backend.pool import HttpClient
from pfxhttp.config.model import HttpClientConfig, TlsConfig
from pfxhttp.errors import BackendBodyTooLarge, BackendError, BackendProtocolError
from tests.httpd_scripted import (
    ScriptedConnection,
    ScriptedServer,
    chunked_bytes,
    response_bytes,
    scripted_server,
)

UA = "pfxhttp/test"
PLAIN = b'{"result":"' + b"mailbox-ok " * 300 + b'"}'
GZ = gzip.compress(PLAIN)


def gz_response(body: bytes = GZ, coding: str = "gzip") -> bytes:
    return response_bytes(200, body, headers=[("Content-Encoding", coding)])


def post(server: ScriptedServer, *, gzip_request: bool = False, accept_gzip: bool = False) -> PreparedRequest:
    return prepare_request(
        "POST",
        Target.parse(server.url("/q")),
        [],
        user_agent=UA,
        gzip_request=gzip_request,
        accept_gzip=accept_gzip,
    )


async def exchange(
    answers: list[bytes], *, max_body_size: int = 1 << 20, close_after: bool = False
) -> tuple[list[HttpResponse | BackendError], ScriptedServer]:
    """Answer the i-th request with ``answers[i]`` (any connection); return responses or errors in order."""
    sent = 0

    async def script(conn: ScriptedConnection) -> None:
        nonlocal sent
        while sent < len(answers) and await conn.read_request() is not None:
            sent += 1
            await conn.send(answers[sent - 1])
            if close_after:
                conn.close()
                return

    results: list[HttpResponse | BackendError] = []
    with trio.fail_after(5):
        async with (
            scripted_server(script) as server,
            HttpClient(HttpClientConfig(max_response_body_size=max_body_size), TlsConfig()) as http,
        ):
            for _ in answers:
                try:
                    results.append(await http.request(post(server, accept_gzip=True), b"{}"))
                except BackendError as exc:
                    results.append(exc)
    return results, server


async def one(raw: bytes, *, max_body_size: int = 1 << 20, close_after: bool = False) -> HttpResponse:
    [result], _ = await exchange([raw], max_body_size=max_body_size, close_after=close_after)
    if isinstance(result, BackendError):
        raise result
    return result


# --- request side (no network) ---


def test_head_with_both_flags() -> None:
    prepared = prepare_request(
        "POST", Target.parse("http://h/m"), [("X-K", "v")], user_agent=UA, gzip_request=True, accept_gzip=True
    )
    assert (prepared.gzip_request, prepared.accept_gzip) == (True, True)
    head = b"POST /m HTTP/1.1\r\nHost: h\r\nUser-Agent: pfxhttp/test\r\nX-K: v\r\nAccept-Encoding: gzip\r\n"
    assert prepared.head == head + b"Connection: keep-alive\r\n"
    wire = prepared.wire(PLAIN)
    prefix = prepared.head + b"Content-Encoding: gzip\r\nContent-Length: "
    assert wire.startswith(prefix)
    length, _, coded = wire[len(prefix) :].partition(b"\r\n\r\n")
    assert int(length) == len(coded) < len(PLAIN)
    assert gzip.decompress(coded) == PLAIN
    # No content, no content coding: an empty body goes out as it is.
    assert prepared.wire(b"") == prepared.wire(None) == prepared.head + b"Content-Length: 0\r\n\r\n"


def test_no_coding_fields_when_flags_off() -> None:
    prepared = prepare_request("POST", Target.parse("http://h/"), [], user_agent=UA)
    assert (prepared.gzip_request, prepared.accept_gzip) == (False, False)
    assert b"Encoding" not in prepared.wire(PLAIN)
    assert prepared.wire(PLAIN).endswith(b"\r\n\r\n" + PLAIN)


@pytest.mark.parametrize("name", ["Content-Encoding", "accept-encoding"])
def test_coding_fields_cannot_be_configured(name: str) -> None:
    with pytest.raises(ValueError, match="set by pfxhttp"):
        prepare_request("POST", Target.parse("http://h/"), [(name, "gzip")], user_agent=UA)


def test_gzip_body_is_one_standard_member() -> None:
    coded = gzip_body(PLAIN)
    assert coded[:3] == b"\x1f\x8b\x08"  # RFC 1952 section 2.3.1: magic and CM=deflate
    assert gzip.decompress(coded) == PLAIN
    assert gzip.decompress(gzip_body(b"x")) == b"x"


# --- Content-Encoding values and the decoder (no network) ---


@pytest.mark.parametrize(
    ("value", "is_gzip"),
    [(b"gzip", True), (b"X-GZip", True), (b" gzip ", True), (b"identity, gzip", True), (b"identity", False)],
)
def test_response_is_gzip(value: bytes, is_gzip: bool) -> None:
    assert response_is_gzip(value) is is_gzip


@pytest.mark.parametrize("value", [b"br", b"deflate", b"zstd", b"compress", b"gzip, gzip", b"deflate,gzip"])
def test_other_codings_refused(value: bytes) -> None:
    with pytest.raises(BackendProtocolError, match="unsupported Content-Encoding"):
        response_is_gzip(value)


def test_decoder_fed_byte_by_byte_and_multi_member() -> None:
    coded = GZ + gzip.compress(b"second member")  # RFC 1952 section 2.2: a series of members
    decoder = GzipDecoder(len(PLAIN) + 13)
    plain = b"".join(decoder.feed(coded[i : i + 1]) for i in range(len(coded)))
    decoder.finish()
    assert plain == PLAIN + b"second member"


def test_bomb_never_allocates_much_more_than_the_cap() -> None:
    bomb = zlib.compress(bytes(32 << 20), 9, wbits=31)  # 32 MiB of zeros in about 32 KiB
    cap = 64 << 10
    tracemalloc.start()
    try:
        decoder = GzipDecoder(cap)
        with pytest.raises(BackendBodyTooLarge):
            for i in range(0, len(bomb), 4096):
                decoder.feed(bomb[i : i + 4096])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The inflated output never exceeds cap + 1 bytes; CPython copies it once while assembling it, and
    # zlib's state (a 32 KiB window) comes on top: a few times the cap, never the 32 MiB the bomb holds.
    assert peak < 4 * cap


# --- against a real server ---


async def test_request_body_arrives_gzipped() -> None:
    async def script(conn: ScriptedConnection) -> None:
        while await conn.read_request() is not None:
            await conn.respond(200, b"ok")

    with trio.fail_after(5):
        async with scripted_server(script) as server, HttpClient(HttpClientConfig(), TlsConfig()) as http:
            prepared = post(server, gzip_request=True, accept_gzip=True)
            await http.request(prepared, PLAIN)
            await http.request(prepared, None)
    coded, empty = server.requests
    assert coded.header("Content-Encoding") == "gzip"
    assert coded.header("Accept-Encoding") == "gzip"
    assert coded.header("Content-Length") == str(len(coded.body))
    assert gzip.decompress(coded.body) == PLAIN
    assert empty.header("Content-Encoding") is None
    assert (empty.header("Content-Length"), empty.body) == ("0", b"")


async def test_flags_off_send_no_coding_fields() -> None:
    async def script(conn: ScriptedConnection) -> None:
        while await conn.read_request() is not None:
            await conn.respond(200, b"ok")

    with trio.fail_after(5):
        async with scripted_server(script) as server, HttpClient(HttpClientConfig(), TlsConfig()) as http:
            await http.request(post(server), PLAIN)
    [request] = server.requests
    assert b"encoding" not in request.head.lower()
    assert request.body == PLAIN


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "GZIP", "identity, gzip"])
async def test_gzip_response_inflated_and_connection_reused(coding: str) -> None:
    results, server = await exchange([gz_response(coding=coding)] * 3)
    assert [r.body for r in results if isinstance(r, HttpResponse)] == [PLAIN] * 3
    assert server.connections == 1


async def test_identity_response_untouched() -> None:
    assert (
        await one(response_bytes(200, b"plain", headers=[("Content-Encoding", "identity")]))
    ).body == b"plain"


async def test_chunked_and_gzip_dripped() -> None:
    """gzip members split over chunks of odd sizes, the chunks dripped a few bytes at a time."""
    coded = GZ + gzip.compress(b"!")
    pieces = [coded[i : i + 37] for i in range(0, len(coded), 37)]
    raw = chunked_bytes(200, pieces, headers=[("Content-Encoding", "gzip")])

    async def script(conn: ScriptedConnection) -> None:
        while await conn.read_request() is not None:
            await conn.drip(raw, step=11)

    with trio.fail_after(10):
        async with scripted_server(script) as server, HttpClient(HttpClientConfig(), TlsConfig()) as http:
            for _ in range(2):
                assert (await http.request(post(server), b"{}")).body == PLAIN + b"!"
    assert server.connections == 1


async def test_gzip_read_until_close() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n"
    assert (await one(raw + GZ, close_after=True)).body == PLAIN
    with pytest.raises(BackendProtocolError, match="truncated"):
        await one(raw + GZ[:-5], close_after=True)


@pytest.mark.parametrize("chunked", [False, True])
async def test_gzip_bomb(chunked: bool) -> None:
    bomb = gzip.compress(bytes(1 << 20), 9)  # 1 MiB of zeros
    assert len(bomb) < 2048
    headers = [("Content-Encoding", "gzip")]
    raw = chunked_bytes(200, [bomb[:500], bomb[500:]], headers=headers) if chunked else gz_response(bomb)
    with pytest.raises(BackendBodyTooLarge) as info:
        await one(raw, max_body_size=64 << 10)
    assert info.value.reason == "response too large"


async def test_inflated_size_exactly_at_cap() -> None:
    body = gz_response(gzip.compress(bytes(64 << 10)))
    assert (await one(body, max_body_size=64 << 10)).body == bytes(64 << 10)
    with pytest.raises(BackendBodyTooLarge):
        await one(body, max_body_size=(64 << 10) - 1)


async def test_coded_size_keeps_the_raw_cap() -> None:
    noise = gzip.compress(random.Random(7).randbytes(8000))  # incompressible: the coded body is the larger
    with pytest.raises(BackendBodyTooLarge, match="Content-Length"):
        await one(gz_response(noise), max_body_size=4096)
    raw = chunked_bytes(200, [noise[:3000], noise[3000:]], headers=[("Content-Encoding", "gzip")])
    with pytest.raises(BackendBodyTooLarge, match="byte cap"):
        await one(raw, max_body_size=4096)


@pytest.mark.parametrize(
    ("coded", "message"),
    [
        (GZ[:-5], "truncated"),  # the CRC and size trailer cut short
        (GZ[:10], "truncated"),  # the header alone
        (GZ[:-8] + b"\0\0\0\0" + GZ[-4:], "corrupt"),  # wrong CRC-32
        (b"this is not gzip", "corrupt"),
        (GZ + b"trailing junk", "corrupt"),
    ],
)
async def test_bad_gzip_is_a_protocol_error_and_the_connection_is_dropped(coded: bytes, message: str) -> None:
    results, server = await exchange([gz_response(coded), response_bytes(200, b"fine")])
    error, after = results
    assert isinstance(error, BackendProtocolError), error
    assert message in str(error)
    assert error.reason == "invalid HTTP response"
    assert isinstance(after, HttpResponse) and after.body == b"fine"
    assert server.connections == 2


@pytest.mark.parametrize(
    "fields",
    [
        [("Content-Encoding", "br")],
        [("Content-Encoding", "deflate")],
        [("Content-Encoding", "zstd")],
        [("Content-Encoding", "gzip, br")],
        [("Content-Encoding", "gzip"), ("Content-Encoding", "gzip")],  # one list, coded twice
    ],
)
async def test_unsupported_coding_is_a_protocol_error(fields: list[tuple[str, str]]) -> None:
    with pytest.raises(BackendProtocolError, match="unsupported Content-Encoding"):
        await one(response_bytes(200, GZ, headers=fields))


async def test_empty_and_bodiless_coded_responses() -> None:
    empty = await one(response_bytes(200, b"", headers=[("Content-Encoding", "gzip")]))
    assert empty.body == b""
    # 204 has no body whatever the fields say (RFC 9112 section 6.3), so its coding does not matter.
    assert (await one(b"HTTP/1.1 204 No Content\r\nContent-Encoding: br\r\n\r\n")).status == 204


async def test_coding_of_an_interim_response_does_not_leak() -> None:
    raw = b"HTTP/1.1 103 Early Hints\r\nContent-Encoding: gzip\r\n\r\n" + response_bytes(200, b"plain")
    assert (await one(raw)).body == b"plain"
