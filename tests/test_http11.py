"""HTTP/1.1 wire behaviour of the backend client without a network: URL (Target) and request head preparation.
Response framing against a real server: test_http11_framing.py."""

from __future__ import annotations

import pytest
import trio

from pfxhttp.backend.contentcoding import gzip_body
from pfxhttp.backend.httpmsg import HttpResponse, PreparedRequest, Target, prepare_request
from pfxhttp.backend.pool import HttpClient
from pfxhttp.config.model import HttpClientConfig, TlsConfig
from tests.httpd_scripted import ScriptedConnection, ScriptedServer, scripted_server

UA = "pfxhttp/test"


def client(**kwargs: object) -> HttpClient:
    config_keys = {
        "timeout",
        "max_connections_per_host",
        "max_idle_connections",
        "max_idle_connections_per_host",
        "idle_connection_timeout",
        "max_response_body_size",
    }
    config = HttpClientConfig(**{k: v for k, v in kwargs.items() if k in config_keys})  # type: ignore[arg-type]
    extra = {k: v for k, v in kwargs.items() if k not in config_keys}
    return HttpClient(config, TlsConfig(), **extra)  # type: ignore[arg-type]


def post(server: ScriptedServer, path: str = "/") -> PreparedRequest:
    return prepare_request("POST", Target.parse(server.url(path)), [], user_agent=UA)


async def one_response(
    raw: bytes, *, body: bytes = b"{}", **kwargs: object
) -> tuple[HttpResponse, ScriptedServer]:
    """Serve ``raw`` once as the answer to one request, then close."""

    async def script(conn: ScriptedConnection) -> None:
        await conn.read_request()
        await conn.send(raw)

    with trio.fail_after(5):
        async with scripted_server(script) as server, client(**kwargs) as http:
            return await http.request(post(server), body), server


# --- Target and request head (no network) ---


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.org", Target("http", "example.org", 80, "/")),
        (
            "HTTPS://api.example.org/v1/map?x=1&y=2#frag",
            Target("https", "api.example.org", 443, "/v1/map?x=1&y=2"),
        ),
        ("http://127.0.0.1:8080/a/b", Target("http", "127.0.0.1", 8080, "/a/b")),
        ("https://[::1]:8443/q", Target("https", "::1", 8443, "/q")),
        ("http://[2001:db8::1]", Target("http", "2001:db8::1", 80, "/")),
        ("http://h:/p", Target("http", "h", 80, "/p")),
    ],
)
def test_target_parse(url: str, expected: Target) -> None:
    target = Target.parse(url)
    assert target == expected
    assert target.origin == (expected.scheme, expected.host, expected.port)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.org/", "scheme"),
        ("example.org/path", "scheme"),
        ("http:///path", "no host"),
        ("http://user:pw@example.org/", "user info"),
        ("http://example.org:0/", "port"),
        ("http://example.org:65536/", "port"),
        ("http://example.org:http/", "port"),
        ("http://[::1/", "IPv6"),
        ("http://[zz::1]/", "IPv6"),
        ("http://[fe80::1%25eth0]/", "zone"),
        ("http://exa mple.org/", "spaces"),
        ("http://example.org/\r\nX: y", "control"),
        ("http://bücher.example/", "ASCII"),
        ("http://ex!ample.org/", "invalid host"),
    ],
)
def test_target_parse_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Target.parse(url)


def test_authority_brackets_ipv6_and_drops_default_port() -> None:
    assert Target.parse("http://[::1]/").authority == "[::1]"
    assert Target.parse("https://[::1]:8443/").authority == "[::1]:8443"
    assert Target.parse("https://h:443/").authority == "h"
    assert Target.parse("http://h:443/").authority == "h:443"


def test_prepared_head_exact() -> None:
    target = Target.parse("http://api.example:8080/v1/map?k=1")
    prepared = prepare_request(
        "POST", target, [("X-Token", "abc def"), ("Accept", "application/json")], user_agent=UA
    )
    assert prepared.head == (
        b"POST /v1/map?k=1 HTTP/1.1\r\nHost: api.example:8080\r\nUser-Agent: pfxhttp/test\r\n"
        b"X-Token: abc def\r\nAccept: application/json\r\nConnection: keep-alive\r\n"
    )
    assert prepared.wire(b'{"a":1}') == prepared.head + b'Content-Length: 7\r\n\r\n{"a":1}'
    assert prepared.wire(b"") == prepared.head + b"Content-Length: 0\r\n\r\n"
    assert prepared.wire(None) == prepared.head + b"Content-Length: 0\r\n\r\n"


def test_get_without_body_has_no_content_length() -> None:
    prepared = prepare_request("GET", Target.parse("http://h/"), [], user_agent=UA)
    assert (
        prepared.wire(None)
        == b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: pfxhttp/test\r\nConnection: keep-alive\r\n\r\n"
    )
    assert prepared.wire(b"x").endswith(b"Content-Length: 1\r\n\r\nx")


def test_a_bearer_token_goes_into_an_authorization_field_after_the_head() -> None:
    field = b"Authorization: Bearer a.b-c\r\n"
    post = prepare_request("POST", Target.parse("http://h/m"), [], user_agent=UA)
    assert post.wire(b"{}", "Bearer a.b-c") == post.head + field + b"Content-Length: 2\r\n\r\n{}"
    assert post.wire(None, "Bearer a.b-c") == post.head + field + b"Content-Length: 0\r\n\r\n"
    get = prepare_request("GET", Target.parse("http://h/m"), [], user_agent=UA)
    assert get.wire(None, "Bearer a.b-c") == get.head + field + b"\r\n"
    coded = prepare_request("POST", Target.parse("http://h/m"), [], user_agent=UA, gzip_request=True)
    wire = coded.wire(b"x" * 500, "Bearer a.b-c")
    assert wire.startswith(coded.head + field + b"Content-Encoding: gzip\r\nContent-Length: ")
    assert wire.split(b"\r\n\r\n", 1)[1] == gzip_body(b"x" * 500)


def test_custom_user_agent_replaces_default() -> None:
    prepared = prepare_request("POST", Target.parse("http://h/"), [("user-agent", "mine/1")], user_agent=UA)
    assert b"pfxhttp/test" not in prepared.head
    assert prepared.head.count(b"ser-agent") == 1
    assert b"user-agent: mine/1\r\n" in prepared.head


@pytest.mark.parametrize(
    ("method", "headers", "message"),
    [
        ("POST", [("X-A", "line\r\nInjected: 1")], "CR, LF or NUL"),
        ("POST", [("X-A", "nul\0")], "CR, LF or NUL"),
        ("POST", [("X A", "v")], "header name"),
        ("POST", [("", "v")], "header name"),
        ("POST", [("Content-Length", "5")], "set by pfxhttp"),
        ("POST", [("Host", "evil")], "set by pfxhttp"),
        ("POST", [("transfer-encoding", "chunked")], "set by pfxhttp"),
        ("PO ST", [], "method"),
        ("HEAD", [], "not supported"),
    ],
)
def test_prepare_request_rejects(method: str, headers: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prepare_request(method, Target.parse("http://h/"), headers, user_agent=UA)


# --- response framing against a real server ---
