"""What a token endpoint or a discovery URL may answer: size caps on the wire and after gzip, content codings,
redirects (same origin only, never for a POST) and the discovery document's ``issuer``.

Hostile replies come from tests/httpd_scripted.py (exact bytes, chunked so that no Content-Length warns the
client); the well-behaved side is tests/tokenserver.py. Memory is measured with tracemalloc around the fetch:
the cap must hold while reading, not after a whole body has been inflated.
"""

from __future__ import annotations

import ssl
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Sequence

import httpx
import orjson
import pytest
import trio
import trustme

from pfxhttp.backend.auth.jwtlogin import JwtLoginFetcher
from pfxhttp.backend.auth.oidc import DiscoveryCache, OidcClientCredentialsFetcher, issuer_matches
from pfxhttp.backend.auth.tokenhttp import MAX_REDIRECTS, MAX_TOKEN_RESPONSE
from pfxhttp.config.model import JwtAuthConfig, OidcAuthConfig, Secret
from pfxhttp.errors import TokenError
from tests.httpd_scripted import Script, ScriptedConnection, chunked_bytes, response_bytes, scripted_server
from tests.tokenserver import DISCOVERY, OIDC_TOKEN, ClientMethod, TokenServer

DEADLINE = 20
CLIENT_ID = "pfx-client"
BOMB_PLAIN = 64 * 1024 * 1024  # inflates from about 64 KiB: a quarter of the cap on the wire
PEAK_LIMIT = 8 * 1024 * 1024  # a few caps' worth of buffers; the bomb would need BOMB_PLAIN at least
GZIP = 31  # zlib wbits for the gzip container


def gzip_of(pieces: Sequence[bytes], repeat: int = 1) -> bytes:
    """One gzip member of ``pieces`` (repeated), compressed piece by piece so the plain text is never whole."""
    encoder = zlib.compressobj(9, zlib.DEFLATED, GZIP)
    out = [encoder.compress(piece) for _ in range(repeat) for piece in pieces]
    return b"".join([*out, encoder.flush()])


def gzip_bomb() -> bytes:
    return gzip_of([bytes(1024 * 1024)], repeat=BOMB_PLAIN // (1024 * 1024))


def gzip_of_nothing(size: int) -> bytes:
    """A valid gzip stream of ``size`` bytes that inflates to nothing: empty deflate blocks (sync flushes)."""
    encoder = zlib.compressobj(9, zlib.DEFLATED, GZIP)
    # After a sync flush the stream is byte-aligned; an empty stored block (RFC 1951 section 3.2.4: BFINAL 0,
    # BTYPE 00, LEN 0, NLEN 0xffff) adds no data, so the encoder's own final block and trailer stay valid.
    empty_block = b"\x00\x00\x00\xff\xff"
    head = encoder.compress(b"") + encoder.flush(zlib.Z_SYNC_FLUSH)
    stream = head + empty_block * (size // len(empty_block)) + encoder.flush()
    assert zlib.decompress(stream, GZIP) == b""
    return stream


def pieces_of(data: bytes, size: int = 16384) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def answer_once(reply: bytes) -> Script:
    """A script answering its first request with ``reply`` on every connection."""

    async def script(conn: ScriptedConnection) -> None:
        if await conn.read_request() is not None:
            await conn.send(reply)
            await conn.wait_eof()

    return script


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        yield client


def login(url: str) -> JwtLoginFetcher:
    return JwtLoginFetcher(JwtAuthConfig(token_endpoint=url, credentials=(("password", Secret("pw")),)))


def discovering(uri: str) -> OidcClientCredentialsFetcher:
    return OidcClientCredentialsFetcher(
        OidcAuthConfig(configuration_uri=uri, client_id=CLIENT_ID), DiscoveryCache()
    )


# -- size caps -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["token endpoint", "discovery"])
async def test_a_gzip_bomb_is_refused_while_inflating(http: httpx.AsyncClient, kind: str) -> None:
    """A 64 KiB gzip reply inflating to 64 MiB: refused at the cap, without ever holding the inflated body."""
    bomb = gzip_bomb()
    assert len(bomb) < MAX_TOKEN_RESPONSE // 2
    reply = chunked_bytes(200, pieces_of(bomb), headers=[("Content-Encoding", "gzip")])
    with trio.fail_after(DEADLINE):
        async with scripted_server(answer_once(reply)) as server:
            fetcher = (
                login(server.url("/login"))
                if kind == "token endpoint"
                else discovering(server.url(DISCOVERY))
            )
            tracemalloc.start()
            try:
                with pytest.raises(
                    TokenError, match=f"{kind} .*: HTTP 200: response over {MAX_TOKEN_RESPONSE} bytes"
                ):
                    await fetcher.fetch(http, None)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"peak {peak} bytes while refusing the bomb"


async def test_a_gzip_stream_of_nothing_is_capped_on_the_wire(http: httpx.AsyncClient) -> None:
    """Empty deflate blocks inflate to nothing, so only a cap on the received bytes stops an endless stream."""
    filler = gzip_of_nothing(2 * MAX_TOKEN_RESPONSE)
    reply = chunked_bytes(200, pieces_of(filler), headers=[("Content-Encoding", "gzip")])
    with trio.fail_after(DEADLINE):
        async with scripted_server(answer_once(reply)) as server:
            with pytest.raises(TokenError, match="HTTP 200: response over"):
                await login(server.url("/login")).fetch(http, None)


async def test_a_gzip_reply_within_the_cap_is_read(http: httpx.AsyncClient) -> None:
    document = {"token": "t0k3n", "expires_in": 300, "padding": "x" * (MAX_TOKEN_RESPONSE - 100)}
    coded = gzip_of([orjson.dumps(document)])
    # Several members (RFC 1952 section 2.2), in chunks: a member boundary can fall anywhere.
    reply = chunked_bytes(200, pieces_of(coded + gzip_of([b" "]), 7), headers=[("Content-Encoding", "gzip")])
    with trio.fail_after(DEADLINE):
        async with scripted_server(answer_once(reply)) as server:
            token = await login(server.url("/login")).fetch(http, None)
    assert token.access == "t0k3n"
    assert server.requests[0].header("accept-encoding") == "gzip"


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("deflate", zlib.compress(b'{"token": "t", "expires_in": 300}')),  # never asked for
        ("br", b'{"token": "t", "expires_in": 300}'),  # unknown to the decoder: not passed through as plain
        ("gzip", b'{"token": "t", "expires_in": 300}'),  # announced but not gzip
        ("gzip", gzip_of([b'{"token": "t", "expires_in": 300}'])[:-6]),  # truncated
    ],
)
async def test_other_or_broken_content_codings_are_refused(
    http: httpx.AsyncClient, coding: str, body: bytes
) -> None:
    reply = response_bytes(200, body, headers=[("Content-Encoding", coding)])
    with trio.fail_after(DEADLINE):
        async with scripted_server(answer_once(reply)) as server:
            with pytest.raises(TokenError, match="unsupported or corrupt content coding"):
                await login(server.url("/login")).fetch(http, None)


# -- redirects and issuer --------------------------------------------------------------------------------------


@pytest.fixture
async def tokens(nursery: trio.Nursery) -> TokenServer:
    server = TokenServer(lifetime=300)
    await server.start(nursery)
    server.add_client(CLIENT_ID, ClientMethod.NONE)
    return server


def redirect(location: str, status: int = 302) -> bytes:
    return response_bytes(status, headers=[("Location", location)], reason="Found")


async def test_discovery_follows_redirects_within_its_origin(
    http: httpx.AsyncClient, tokens: TokenServer
) -> None:
    """Two hops on the discovery server (absolute, then relative Location), then the document; its token endpoint
    may be on another host (as Google's is)."""

    async def moved(conn: ScriptedConnection) -> None:
        while (request := await conn.read_request()) is not None:
            if request.target == DISCOVERY:
                await conn.send(redirect(conn.server.url("/v1/openid-configuration"), 301))
            elif request.target == "/v1/openid-configuration":
                await conn.send(redirect("../v2/openid-configuration", 307))
            else:
                document = {"issuer": conn.server.url(""), "token_endpoint": tokens.url + OIDC_TOKEN}
                await conn.send(response_bytes(200, orjson.dumps(document)))

    with trio.fail_after(DEADLINE):
        async with scripted_server(moved) as server:
            token = await discovering(server.url(DISCOVERY)).fetch(http, None)
    assert token.access and tokens.count(OIDC_TOKEN) == 1
    assert [r.target for r in server.requests] == [
        DISCOVERY,
        "/v1/openid-configuration",
        "/v2/openid-configuration",
    ]


async def test_discovery_refuses_a_redirect_to_another_origin(
    http: httpx.AsyncClient, tokens: TokenServer
) -> None:
    with trio.fail_after(DEADLINE):
        async with scripted_server(answer_once(redirect(tokens.url + DISCOVERY))) as server:
            with pytest.raises(
                TokenError, match=r"HTTP 302: redirect to http://127\.0\.0\.1:\d+/\.well-known/\S* refused"
            ):
                await discovering(server.url(DISCOVERY)).fetch(http, None)
    assert tokens.count(DISCOVERY) == 0 and tokens.count(OIDC_TOKEN) == 0


async def test_discovery_over_https_refuses_a_redirect_to_http(tokens: TokenServer) -> None:
    ca = trustme.CA()
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_side)
    client_side = ssl.create_default_context()
    ca.configure_trust(client_side)
    with trio.fail_after(DEADLINE):
        async with (
            httpx.AsyncClient(timeout=5.0, trust_env=False, verify=client_side) as http,
            scripted_server(
                answer_once(redirect(tokens.url + DISCOVERY, 308)), ssl_context=server_side
            ) as server,
        ):
            assert server.url(DISCOVERY).startswith("https://")
            with pytest.raises(TokenError, match=r"HTTP 308: redirect to http://\S* refused"):
                await discovering(server.url(DISCOVERY)).fetch(http, None)
    assert tokens.count(DISCOVERY) == 0


async def test_a_redirect_loop_ends(http: httpx.AsyncClient) -> None:
    async def loop(conn: ScriptedConnection) -> None:
        while await conn.read_request() is not None:
            await conn.send(redirect(DISCOVERY))

    with trio.fail_after(DEADLINE):
        async with scripted_server(loop) as server:
            with pytest.raises(TokenError, match=f"more than {MAX_REDIRECTS} redirects"):
                await discovering(server.url(DISCOVERY)).fetch(http, None)
    assert len(server.requests) == MAX_REDIRECTS + 1


async def test_a_token_endpoint_redirect_is_not_followed(
    http: httpx.AsyncClient, tokens: TokenServer
) -> None:
    with trio.fail_after(DEADLINE):
        async with scripted_server(answer_once(redirect("/login", 307))) as server:
            with pytest.raises(TokenError, match=r"HTTP 307 \(redirect not followed\)"):
                await login(server.url("/login")).fetch(http, None)
        assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("issuer", "accepted"),
    [
        ("{url}", True),
        ("{url}/", True),  # a trailing slash is not held against it
        (None, False),
        (42, False),
        ("http://127.0.0.1:1", False),  # another origin
        ("{url}/realms/other", False),  # another issuer on the same host
        ("https://evil.example", False),
    ],
)
async def test_discovery_checks_the_issuer(
    http: httpx.AsyncClient, tokens: TokenServer, issuer: object, accepted: bool
) -> None:
    tokens.discovery_extra["issuer"] = issuer.format(url=tokens.url) if isinstance(issuer, str) else issuer
    with trio.fail_after(DEADLINE):
        fetcher = discovering(tokens.url + DISCOVERY)
        if accepted:
            await fetcher.fetch(http, None)
            assert tokens.count(OIDC_TOKEN) == 1
        else:
            with pytest.raises(TokenError, match="issuer"):
                await fetcher.fetch(http, None)
            assert tokens.count(OIDC_TOKEN) == 0


@pytest.mark.parametrize(
    ("uri", "issuer", "matches"),
    [
        (
            "https://idp.example/realms/mail/.well-known/openid-configuration",
            "https://idp.example/realms/mail",
            True,
        ),
        ("https://IDP.example:443/.well-known/openid-configuration", "https://idp.example", True),
        ("https://idp.example/.well-known/openid-configuration", "https://idp.example/", True),
        (
            "https://idp.example/.well-known/oauth-authorization-server/tenant",
            "https://idp.example/tenant",
            True,
        ),
        ("https://idp.example/.well-known/openid-configuration/tenant", "https://idp.example/tenant", True),
        ("https://idp.example/custom/discovery.json", "https://idp.example/anything", True),  # origin only
        ("https://idp.example/.well-known/openid-configuration", "http://idp.example", False),
        ("https://idp.example/.well-known/openid-configuration", "https://idp.example:8443", False),
        ("https://idp.example/a/.well-known/openid-configuration", "https://idp.example/b", False),
        ("https://idp.example/.well-known/oauth-authorization-server/t1", "https://idp.example/t2", False),
        ("https://idp.example/custom/discovery.json", "https://other.example", False),
        ("https://idp.example/.well-known/openid-configuration", "https://idp.example?x=1", False),
        ("https://idp.example/.well-known/openid-configuration", "https://[::1", False),
    ],
)
def test_issuer_matches(uri: str, issuer: str, matches: bool) -> None:
    assert issuer_matches(uri, issuer) is matches
