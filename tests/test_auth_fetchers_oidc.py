"""The backend_oidc_auth token fetcher against a real local token server: client_secret_basic/post, public clients,
private_key_jwt with every key type, scopes, expiry, shared discovery and its failures, log-safe errors, store
keys, jwt_exp."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pfxhttp.backend.auth.jwtlogin import jwt_exp
from pfxhttp.backend.auth.oidc import DEFAULT_LIFETIME, DiscoveryCache, OidcClientCredentialsFetcher
from pfxhttp.config.model import (
    OidcAuthConfig,
    OidcAuthMethod,
    Secret,
)
from pfxhttp.errors import ConfigError, TokenError
from tests.test_auth_fetchers import (
    CLIENT_ID,
    CLIENT_SECRET,
    DEADLINE,
    MAILBOX,
    PASSWORD,
    assert_log_safe,
    claims_of,
)
from tests.tokenserver import (
    DISCOVERY,
    OIDC_TOKEN,
    ClientMethod,
    Expiry,
    Fault,
    TokenServer,
)


# The fixtures of test_auth_fetchers.py, restated: imported, ruff would report each use as a redefinition.
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
