"""The jwt_auth and backend_oidc_auth token fetchers against a real token server on loopback.

Every failure must be a TokenError whose text (and cause chain) holds no password, client secret, token or
response body: the server's error replies echo the request body to catch exactly that.
"""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs, quote_plus

import httpx
import jwt
import orjson
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pfxhttp.backend.auth.jwtlogin import JwtLoginFetcher, as_seconds, jwt_exp
from pfxhttp.backend.auth.oidc import DEFAULT_LIFETIME, DiscoveryCache, OidcClientCredentialsFetcher
from pfxhttp.backend.auth.tokens import Token
from pfxhttp.config.model import (
    JwtAuthConfig,
    OidcAuthConfig,
    OidcAuthMethod,
    RefreshMode,
    Secret,
    TokenContentType,
)
from pfxhttp.errors import ConfigError, TokenError
from tests.tokenserver import (
    DISCOVERY,
    LOGIN,
    OIDC_TOKEN,
    PM_LOGIN,
    PM_REFRESH,
    REFRESH,
    ClientMethod,
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


def oidc_config(server: TokenServer, **overrides: object) -> OidcAuthConfig:
    fields: dict[str, object] = {"client_id": CLIENT_ID, "configuration_uri": server.url + DISCOVERY}
    fields.update(overrides)
    return OidcAuthConfig(**fields)  # type: ignore[arg-type]


def pem(key: PrivateKeyTypes, password: bytes | None = None) -> Secret:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    text = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    return Secret(text.decode("ascii"))


async def test_client_secret_basic_with_cached_discovery(
    server: TokenServer, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        server.add_client(CLIENT_ID, ClientMethod.CLIENT_SECRET_BASIC, secret=CLIENT_SECRET)
        fetcher = OidcClientCredentialsFetcher(
            oidc_config(server, client_secret=Secret(CLIENT_SECRET)), DiscoveryCache()
        )
        assert fetcher.auth_method is OidcAuthMethod.CLIENT_SECRET_BASIC
        first = await fetcher.fetch(http, None)
        second = await fetcher.fetch(http, first)
        assert (server.count(DISCOVERY), server.count(OIDC_TOKEN)) == (1, 2)
        assert claims_of(server, second)["sub"] == CLIENT_ID
        assert second.expires_at == second.obtained_at + server.lifetime and second.refresh is None
        request = server.last(OIDC_TOKEN)
        assert request.headers["authorization"].startswith("Basic ")
        assert parse_qs(request.body.decode()) == {"grant_type": ["client_credentials"]}


async def test_client_secret_post(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        server.add_client(CLIENT_ID, ClientMethod.CLIENT_SECRET_POST, secret=CLIENT_SECRET)
        config = oidc_config(
            server, client_secret=Secret(CLIENT_SECRET), auth_method=OidcAuthMethod.CLIENT_SECRET_POST
        )
        token = await OidcClientCredentialsFetcher(config, DiscoveryCache()).fetch(http, None)
        assert claims_of(server, token)["sub"] == CLIENT_ID
        request = server.last(OIDC_TOKEN)
        assert "authorization" not in request.headers
        assert parse_qs(request.body.decode())["client_secret"] == [CLIENT_SECRET]


async def test_public_client_sends_its_id_only(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        server.add_client(CLIENT_ID, ClientMethod.NONE)
        fetcher = OidcClientCredentialsFetcher(oidc_config(server), DiscoveryCache())
        assert fetcher.auth_method is OidcAuthMethod.NONE
        await fetcher.fetch(http, None)
        form = parse_qs(server.last(OIDC_TOKEN).body.decode())
        assert form == {"grant_type": ["client_credentials"], "client_id": [CLIENT_ID]}


KEY_FACTORIES: dict[str, tuple[Callable[[], PrivateKeyTypes], str]] = {
    "rsa": (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    "p256": (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
    "p384": (lambda: ec.generate_private_key(ec.SECP384R1()), "ES384"),
    "p521": (lambda: ec.generate_private_key(ec.SECP521R1()), "ES512"),
    "ed25519": (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
    "ed448": (ed448.Ed448PrivateKey.generate, "EdDSA"),
}


@pytest.mark.parametrize("kind", sorted(KEY_FACTORIES))
async def test_private_key_jwt(server: TokenServer, http: httpx.AsyncClient, kind: str) -> None:
    with trio.fail_after(DEADLINE):
        factory, algorithm = KEY_FACTORIES[kind]
        key = factory()
        server.add_client(CLIENT_ID, ClientMethod.PRIVATE_KEY_JWT, public_key=key.public_key())
        config = oidc_config(server, private_key=pem(key), private_key_file="/etc/pfxhttp/client.pem")
        fetcher = OidcClientCredentialsFetcher(config, DiscoveryCache())
        assert fetcher.auth_method is OidcAuthMethod.PRIVATE_KEY_JWT
        token = await fetcher.fetch(http, None)
        assert claims_of(server, token)["sub"] == CLIENT_ID
        assertion = parse_qs(server.last(OIDC_TOKEN).body.decode())["client_assertion"][0]
        assert jwt.get_unverified_header(assertion)["alg"] == algorithm
        await fetcher.fetch(http, token)  # a fresh jti each time: the server refuses replays
        assert server.count(OIDC_TOKEN) == 2


async def test_private_key_jwt_with_an_unregistered_key_is_refused(
    server: TokenServer, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        registered, used = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        server.add_client(CLIENT_ID, ClientMethod.PRIVATE_KEY_JWT, public_key=registered.public_key())
        fetcher = OidcClientCredentialsFetcher(oidc_config(server, private_key=pem(used)), DiscoveryCache())
        with pytest.raises(TokenError, match=r"HTTP 401 \(invalid_client\)") as info:
            await fetcher.fetch(http, None)
        assert_log_safe(info.value)


@pytest.mark.parametrize(("scopes", "sent"), [(("mail.read", "api"), "mail.read api"), ((), None)])
async def test_scopes_are_space_delimited(
    server: TokenServer, http: httpx.AsyncClient, scopes: tuple[str, ...], sent: str | None
) -> None:
    with trio.fail_after(DEADLINE):
        server.add_client(CLIENT_ID, ClientMethod.NONE)
        await OidcClientCredentialsFetcher(oidc_config(server, scopes=scopes), DiscoveryCache()).fetch(
            http, None
        )
        assert server.scopes_granted == [sent]


async def test_expiry_without_expires_in(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        server.add_client(CLIENT_ID, ClientMethod.NONE)
        fetcher = OidcClientCredentialsFetcher(oidc_config(server), DiscoveryCache())
        server.oidc_expiry = Expiry.JWT_ONLY
        token = await fetcher.fetch(http, None)
        assert token.expires_at == claims_of(server, token)["exp"]
        server.oidc_expiry = Expiry.OPAQUE
        token = await fetcher.fetch(http, None)
        assert token.expires_at == token.obtained_at + DEFAULT_LIFETIME


async def test_discovery_is_shared_and_expires(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        server.add_client(CLIENT_ID, ClientMethod.NONE)
        server.add_client("other", ClientMethod.NONE)
        shared = DiscoveryCache()
        for client_id in (CLIENT_ID, "other", CLIENT_ID):
            await OidcClientCredentialsFetcher(oidc_config(server, client_id=client_id), shared).fetch(
                http, None
            )
        assert server.count(DISCOVERY) == 1
        stale = OidcClientCredentialsFetcher(oidc_config(server), DiscoveryCache(ttl=0))
        await stale.fetch(http, None)
        await stale.fetch(http, None)
        assert server.count(DISCOVERY) == 3


async def test_concurrent_fetchers_discover_once(server: TokenServer, http: httpx.AsyncClient) -> None:
    with trio.fail_after(DEADLINE):
        server.add_client(CLIENT_ID, ClientMethod.NONE)
        fetcher = OidcClientCredentialsFetcher(oidc_config(server), DiscoveryCache())
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(fetcher.fetch, http, None)
        assert (server.count(DISCOVERY), server.count(OIDC_TOKEN)) == (1, 5)


async def test_failures_are_not_cached_and_drop_the_document(
    server: TokenServer, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        server.add_client(CLIENT_ID, ClientMethod.NONE)
        fetcher = OidcClientCredentialsFetcher(oidc_config(server), DiscoveryCache())
        server.faults[DISCOVERY] = Fault.REFUSE
        with pytest.raises(TokenError, match=f"discovery {server.url}{DISCOVERY}: HTTP 503"):
            await fetcher.fetch(http, None)
        del server.faults[DISCOVERY]
        await fetcher.fetch(http, None)
        assert server.count(DISCOVERY) == 2
        server.faults[OIDC_TOKEN] = Fault.REFUSE
        with pytest.raises(TokenError, match=r"token endpoint .* HTTP 503"):
            await fetcher.fetch(http, None)
        del server.faults[OIDC_TOKEN]
        await fetcher.fetch(http, None)
        assert server.count(DISCOVERY) == 3


@pytest.mark.parametrize("endpoint", [None, "ftp://127.0.0.1/token", "/relative", 42])
async def test_discovery_without_a_usable_token_endpoint(
    server: TokenServer, http: httpx.AsyncClient, endpoint: object
) -> None:
    with trio.fail_after(DEADLINE):
        server.discovery_extra["token_endpoint"] = endpoint
        fetcher = OidcClientCredentialsFetcher(oidc_config(server), DiscoveryCache())
        with pytest.raises(TokenError, match="token_endpoint missing or not an http"):
            await fetcher.fetch(http, None)


async def test_configured_token_endpoint_skips_discovery(
    server: TokenServer, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(DEADLINE):
        server.add_client(CLIENT_ID, ClientMethod.NONE)
        config = oidc_config(server, configuration_uri=None, token_endpoint=server.url + OIDC_TOKEN)
        await OidcClientCredentialsFetcher(config, DiscoveryCache()).fetch(http, None)
        assert (server.count(DISCOVERY), server.count(OIDC_TOKEN)) == (0, 1)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.NONE, r"HTTP 401 \(invalid_client\)"),  # the secret is wrong
        (Fault.FORBID, r"HTTP 403 \(forbidden\)"),
        (Fault.HANG, "timed out"),
        (Fault.NOT_JSON, "not JSON"),
    ],
)
async def test_oidc_failures_are_log_safe(
    server: TokenServer, impatient: httpx.AsyncClient, fault: Fault, expected: str
) -> None:
    with trio.fail_after(DEADLINE):
        server.add_client(CLIENT_ID, ClientMethod.CLIENT_SECRET_BASIC, secret="the-right-one")
        server.faults[OIDC_TOKEN] = fault
        fetcher = OidcClientCredentialsFetcher(
            oidc_config(server, client_secret=Secret(CLIENT_SECRET)), DiscoveryCache()
        )
        with pytest.raises(TokenError, match=expected) as info:
            await fetcher.fetch(impatient, None)
        assert_log_safe(info.value, "the-right-one")


def test_unusable_keys_and_missing_secrets_are_config_errors() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    k256 = ec.generate_private_key(ec.SECP256K1())
    good = ec.generate_private_key(ec.SECP256R1())
    base = OidcAuthConfig(client_id=CLIENT_ID, token_endpoint="https://idp.example/token")
    cases: dict[str, dict[str, object]] = {
        "holds no PEM private key": {"private_key": Secret("-----BEGIN PRIVATE KEY-----\nAAAA\n")},
        "encrypted private key": {"private_key": pem(good, b"passphrase")},
        "at least 2048": {"private_key": pem(small)},
        "use P-256, P-384 or P-521": {"private_key": pem(k256)},
        "private_key_jwt needs": {"auth_method": OidcAuthMethod.PRIVATE_KEY_JWT},
        "client_secret_post needs": {"auth_method": OidcAuthMethod.CLIENT_SECRET_POST},
        "token_endpoint or configuration_uri": {"token_endpoint": None},
    }
    for message, overrides in cases.items():
        config = OidcAuthConfig(**{**_fields_of(base), **overrides})  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=message) as info:
            OidcClientCredentialsFetcher(config, DiscoveryCache())
        assert "PRIVATE KEY" not in str(info.value) and info.value.__cause__ is None


def _fields_of(config: OidcAuthConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in OidcAuthConfig.__slots__}


def test_oidc_store_key_names_the_client_and_digests_the_secret() -> None:
    def key(secret: str, scopes: tuple[str, ...] = ("b", "a")) -> str:
        config = OidcAuthConfig(
            client_id="pfx",
            token_endpoint="https://idp.example/token",
            client_secret=Secret(secret),
            scopes=scopes,
        )
        fetcher = OidcClientCredentialsFetcher(config, DiscoveryCache())
        assert secret not in fetcher.description
        return fetcher.store_key

    base = key(CLIENT_SECRET)
    assert base.startswith("oidc|https://idp.example/token|pfx|a b|client_secret_basic|")
    assert CLIENT_SECRET not in base
    assert key(CLIENT_SECRET + "x") != base
    assert key(CLIENT_SECRET, ("a", "b")) == base


def test_jwt_exp_reads_the_claim_of_real_jwts_and_refuses_everything_else() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signed = jwt.encode({"sub": "x", "exp": 2_000_000_000}, key, algorithm="RS256")
    assert jwt_exp(signed) == 2_000_000_000.0
    assert jwt_exp(jwt.encode({"exp": "1700000000.5"}, "k" * 32, algorithm="HS256")) == 1_700_000_000.5

    def unsigned(payload: bytes) -> str:
        return f"e30.{base64.urlsafe_b64encode(payload).decode().rstrip('=')}.sig"

    for token in (
        "opaque-token",
        "a.b",
        "a.b.c.d",
        "e30.!!!.sig",  # not base64url
        unsigned(b"not json"),
        unsigned(b"[1, 2]"),  # JSON, not an object
        unsigned(b'{"sub": "x"}'),  # no exp
        unsigned(b'{"exp": true}'),
        unsigned(b'{"exp": "soon"}'),
        unsigned(b'{"exp": 1e999}'),  # not finite
    ):
        assert jwt_exp(token) is None, token
