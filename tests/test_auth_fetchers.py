"""The jwt_auth token fetcher (login, refresh, failures) against a real token server on loopback.

Every failure must be a TokenError whose text (and cause chain) holds no password, client secret, token or
response body: the server's error replies echo the request body to catch exactly that.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, quote_plus

import httpx
import orjson
import pytest
import trio

from pfxhttp.backend.auth.jwtlogin import JwtLoginFetcher, as_seconds
from pfxhttp.backend.auth.tokens import Token
from pfxhttp.config.model import (
    JwtAuthConfig,
    RefreshMode,
    Secret,
    TokenContentType,
)
from pfxhttp.errors import TokenError
from tests.tokenserver import (
    LOGIN,
    PM_LOGIN,
    PM_REFRESH,
    REFRESH,
    Expiry,
    Fault,
    TokenServer,
)

PASSWORD = "pw-S3kr3t+%&=:wörd"
CLIENT_ID = "pfx client:1"  # a space and a colon: RFC 6749 section 2.3.1 encoding matters
CLIENT_SECRET = "cs-s3cr3t:+/%&é"
MAILBOX = "alice@example.org"
DEADLINE = 10


@pytest.fixture
async def server(nursery: trio.Nursery) -> TokenServer:
    tokens = TokenServer(users={"alice": PASSWORD, MAILBOX: PASSWORD}, lifetime=300)
    await tokens.start(nursery)
    return tokens


@pytest.fixture(scope="module")
def tls() -> ssl.SSLContext:
    """One CA bundle load for the module instead of one per client (the server speaks plain HTTP)."""
    return ssl.create_default_context()


@pytest.fixture
async def http(tls: ssl.SSLContext) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False, verify=tls) as client:
        yield client


@pytest.fixture
async def impatient(tls: ssl.SSLContext) -> AsyncIterator[httpx.AsyncClient]:
    """A client that gives up long before the server's hang ends."""
    async with httpx.AsyncClient(timeout=0.3, trust_env=False, verify=tls) as client:
        yield client


def jwt_config(server: TokenServer, path: str = LOGIN, **overrides: object) -> JwtAuthConfig:
    fields: dict[str, object] = {
        "token_endpoint": server.url + path,
        "credentials": (("username", Secret("alice")), ("password", Secret(PASSWORD))),
        "refresh_endpoint": server.url + REFRESH,
    }
    fields.update(overrides)
    return JwtAuthConfig(**fields)  # type: ignore[arg-type]


def postfixme_config(server: TokenServer) -> JwtAuthConfig:
    return JwtAuthConfig(
        token_endpoint=server.url + PM_LOGIN,
        credentials=(("mailbox", Secret(MAILBOX)), ("password", Secret(PASSWORD))),
        content_type=TokenContentType.JSON,
        token_field="access_token",
        refresh=RefreshMode.BODY,
        refresh_endpoint=server.url + PM_REFRESH,
    )


def assert_log_safe(exc: BaseException, *secrets: str) -> None:
    """Neither the secrets (plain, form- or JSON-encoded) nor any body text in the message or its causes."""
    texts = []
    cause: BaseException | None = exc
    while cause is not None:
        texts += [str(cause), repr(cause)]
        cause = cause.__cause__ or cause.__context__
    text = "\n".join(texts)
    for secret in (*secrets, PASSWORD, CLIENT_SECRET):
        for form in (secret, quote_plus(secret), orjson.dumps(secret).decode()[1:-1]):
            assert form not in text
    assert "echo" not in text and "<html>" not in text


def claims_of(server: TokenServer, token: Token) -> dict[str, object]:
    claims = server.verify(token.access)
    assert claims is not None, "the server does not accept its own token"
    return claims


# -- jwt_auth: login -------------------------------------------------------------------------------------------


async def test_login_with_form_credentials(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        token = await JwtLoginFetcher(jwt_config(server)).fetch(http, None)
        claims = claims_of(server, token)
        assert claims["sub"] == "alice"
        assert token.expires_at == claims["exp"]
        assert token.refresh is not None and token.refresh.startswith("rt-")
        request = server.last(LOGIN)
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert request.headers["accept"] == "application/json"
        assert parse_qs(request.body.decode()) == {"username": ["alice"], "password": [PASSWORD]}


async def test_login_with_json_credentials(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        config = jwt_config(server, content_type=TokenContentType.JSON)
        token = await JwtLoginFetcher(config).fetch(http, None)
        assert claims_of(server, token)["sub"] == "alice"
        request = server.last(LOGIN)
        assert request.headers["content-type"] == "application/json"
        assert orjson.loads(request.body) == {"username": "alice", "password": PASSWORD}


@pytest.mark.parametrize("expiry", [Expiry.EXPIRES_AT, Expiry.EXPIRES_AT_STRING, Expiry.JWT_ONLY])
async def test_absolute_expiry_from_field_or_jwt_exp(
    server: TokenServer, http: httpx.AsyncClient, expiry: Expiry
) -> None:
    with trio.fail_after(DEADLINE):
        server.expiry = expiry
        token = await JwtLoginFetcher(jwt_config(server)).fetch(http, None)
        assert token.expires_at == claims_of(server, token)["exp"]


async def test_relative_expiry_counts_from_the_request(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        server.expiry = Expiry.EXPIRES_IN
        token = await JwtLoginFetcher(jwt_config(server)).fetch(http, None)
        assert token.expires_at == token.obtained_at + server.lifetime


async def test_no_expiry_anywhere_is_an_error(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        server.expiry = Expiry.OPAQUE
        with pytest.raises(TokenError, match="no expiry") as info:
            await JwtLoginFetcher(jwt_config(server)).fetch(http, None)
        assert_log_safe(info.value)


async def test_nested_field_paths(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        server.nest = ("data", "auth")
        config = jwt_config(
            server,
            token_field="data.auth.token",
            refresh_token_field="data.auth.refresh_token",
            expires_at_field="data.auth.expires_at",
            refresh=RefreshMode.NONE,
        )
        token = await JwtLoginFetcher(config).fetch(http, None)
        assert token.expires_at == claims_of(server, token)["exp"]
        assert token.refresh is not None


async def test_missing_token_field_is_an_error(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        server.nest = ("data",)
        with pytest.raises(TokenError, match="field 'token' missing") as info:
            await JwtLoginFetcher(jwt_config(server)).fetch(http, None)
        assert_log_safe(info.value)


def test_expiry_values_must_be_finite_numbers() -> None:
    assert as_seconds(12) == 12.0 and as_seconds("1700000000.5") == 1700000000.5
    for bad in (True, None, "soon", "nan", "inf", [1], {"a": 1}):
        with pytest.raises(ValueError, match="not"):
            as_seconds(bad)


# -- jwt_auth: refresh -----------------------------------------------------------------------------------------


async def test_header_refresh_keeps_a_refresh_token_not_rotated(
    server: TokenServer, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        fetcher = JwtLoginFetcher(jwt_config(server))
        first = await fetcher.fetch(http, None)
        second = await fetcher.fetch(http, first)
        assert (server.count(LOGIN), server.count(REFRESH)) == (1, 1)
        request = server.last(REFRESH)
        assert request.headers["x-refresh-token"] == first.refresh
        assert request.body == b"" and "password" not in request.headers
        assert second.refresh == first.refresh and second.access != first.access
        assert claims_of(server, second)["sub"] == "alice"


async def test_header_refresh_takes_a_rotated_refresh_token(
    server: TokenServer, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        server.header_refresh_rotates = True
        fetcher = JwtLoginFetcher(jwt_config(server))
        first = await fetcher.fetch(http, None)
        second = await fetcher.fetch(http, first)
        assert second.refresh is not None and second.refresh != first.refresh
        assert server.count(REFRESH) == 1


async def test_header_refresh_goes_to_the_token_endpoint_by_default(
    server: TokenServer, http: httpx.AsyncClient
) -> None:
    # /login refuses a request without credentials: the refresh fails and one login follows.
    with trio.fail_after(DEADLINE):
        fetcher = JwtLoginFetcher(jwt_config(server, refresh_endpoint=None))
        first = await fetcher.fetch(http, None)
        second = await fetcher.fetch(http, first)
        refresh_request = server.requests[-2]
        assert refresh_request.headers["x-refresh-token"] == first.refresh and refresh_request.body == b""
        assert server.count(LOGIN) == 3 and server.count(REFRESH) == 0
        assert claims_of(server, second)["sub"] == "alice"


async def test_postfixme_body_refresh_rotates_and_falls_back_to_login(
    server: TokenServer, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        fetcher = JwtLoginFetcher(postfixme_config(server))
        first = await fetcher.fetch(http, None)
        assert orjson.loads(server.last(PM_LOGIN).body) == {"mailbox": MAILBOX, "password": PASSWORD}
        assert first.expires_at == first.obtained_at + server.lifetime
        second = await fetcher.fetch(http, first)
        assert (server.count(PM_LOGIN), server.count(PM_REFRESH)) == (1, 1)
        assert orjson.loads(server.last(PM_REFRESH).body) == {"refresh_token": first.refresh}
        assert second.refresh is not None and second.refresh != first.refresh
        # The first refresh token was used up: the server answers 401 and the fetcher logs in once.
        third = await fetcher.fetch(http, first)
        assert (server.count(PM_LOGIN), server.count(PM_REFRESH)) == (2, 2)
        assert claims_of(server, third)["sub"] == MAILBOX


async def test_refresh_none_always_logs_in(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        fetcher = JwtLoginFetcher(jwt_config(server, refresh=RefreshMode.NONE))
        first = await fetcher.fetch(http, None)
        await fetcher.fetch(http, first)
        assert (server.count(LOGIN), server.count(REFRESH)) == (2, 0)


@pytest.mark.parametrize("fault", [Fault.REFUSE, Fault.REJECT, Fault.NOT_JSON, Fault.HANG])
async def test_refresh_failure_falls_back_to_one_login(
    server: TokenServer, impatient: httpx.AsyncClient, fault: Fault
) -> None:
    with trio.fail_after(DEADLINE):
        fetcher = JwtLoginFetcher(jwt_config(server))
        first = await fetcher.fetch(impatient, None)
        server.faults[REFRESH] = fault
        second = await fetcher.fetch(impatient, first)
        assert (server.count(LOGIN), server.count(REFRESH)) == (2, 1)
        assert claims_of(server, second)["sub"] == "alice"


async def test_refresh_and_login_failing_raise_the_login_error(
    server: TokenServer, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        fetcher = JwtLoginFetcher(jwt_config(server))
        first = await fetcher.fetch(http, None)
        server.fault = Fault.REFUSE
        with pytest.raises(TokenError, match=r"token endpoint .* HTTP 503") as info:
            await fetcher.fetch(http, first)
        assert (server.count(LOGIN), server.count(REFRESH)) == (2, 1)
        assert first.refresh is not None
        assert_log_safe(info.value, first.access, first.refresh)


# -- jwt_auth: failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.REJECT, r"HTTP 401 \(credentials refused\)"),
        (Fault.FORBID, r"HTTP 403 \(forbidden\)"),
        (Fault.REFUSE, r"HTTP 503 \(server error\)"),
        (Fault.HANG, "timed out"),
        (Fault.NOT_JSON, "HTTP 200: reply is not JSON"),
    ],
)
async def test_login_failures_are_log_safe_token_errors(
    server: TokenServer, impatient: httpx.AsyncClient, fault: Fault, expected: str
) -> None:
    with trio.fail_after(DEADLINE):
        server.fault = fault
        with pytest.raises(TokenError, match=expected) as info:
            await JwtLoginFetcher(jwt_config(server)).fetch(impatient, None)
        assert f"token endpoint {server.url}{LOGIN}" in str(info.value)
        assert info.value.reason == "backend token unavailable"
        assert_log_safe(info.value)


async def test_wrong_password_is_refused(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        wrong = "not-the-password+%"
        config = jwt_config(server, credentials=(("username", Secret("alice")), ("password", Secret(wrong))))
        with pytest.raises(TokenError, match="HTTP 401") as info:
            await JwtLoginFetcher(config).fetch(http, None)
        assert_log_safe(info.value, wrong)


async def test_oversized_reply_is_refused(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        server.fault = Fault.NOT_JSON  # echoes the request body, here larger than the reply cap
        config = jwt_config(server, credentials=(("password", Secret(PASSWORD * 20_000)),))
        with pytest.raises(TokenError, match="response over") as info:
            await JwtLoginFetcher(config).fetch(http, None)
        assert_log_safe(info.value)


async def test_unreachable_endpoint_is_a_transport_error(http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        with socket.socket() as bound:  # bound, never listening: the connection is refused
            bound.bind(("127.0.0.1", 0))
            url = f"http://user:{PASSWORD}@127.0.0.1:{bound.getsockname()[1]}/login?key={PASSWORD}"
            config = JwtAuthConfig(token_endpoint=url, credentials=(("password", Secret(PASSWORD)),))
            with pytest.raises(TokenError, match="transport error") as info:
                await JwtLoginFetcher(config).fetch(http, None)
        assert_log_safe(info.value)


def test_jwt_store_key_digests_the_credentials() -> None:
    def key(*credentials: tuple[str, str]) -> str:
        config = JwtAuthConfig(
            token_endpoint="https://user:pw@auth.example/login?x=1",
            credentials=tuple((name, Secret(value)) for name, value in credentials),
        )
        fetcher = JwtLoginFetcher(config)
        assert PASSWORD not in fetcher.description and ":pw@" not in fetcher.description
        return fetcher.store_key

    base = key(("username", "alice"), ("password", PASSWORD))
    assert base.startswith("jwt|https://auth.example/login|") and PASSWORD not in base and "pw@" not in base
    assert key(("password", PASSWORD), ("username", "alice")) == base
    assert key(("username", "alice"), ("password", PASSWORD + "2")) != base


# -- the protected API of the token server ---------------------------------------------------------------------


async def test_api_accepts_fresh_tokens_and_refuses_revoked_ones(
    server: TokenServer, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        token = await JwtLoginFetcher(jwt_config(server)).fetch(http, None)
        headers = {"Authorization": f"Bearer {token.access}"}
        reply = await http.post(server.url + "/api/map", headers=headers, json={"key": "k@example.org"})
        assert reply.status_code == 200
        assert reply.json() == {"data": {"result": "k@example.org", "sub": "alice"}}
        server.revoke_all()
        reply = await http.post(server.url + "/api/map", headers=headers, json={"key": "x"})
        assert reply.status_code == 401 and "invalid_token" in reply.headers["www-authenticate"]
        expired, _exp = server.issue("alice", lifetime=-5)
        reply = await http.get(server.url + "/api/map", headers={"Authorization": f"Bearer {expired}"})
        assert reply.status_code == 401


# -- backend_oidc_auth -----------------------------------------------------------------------------------------
