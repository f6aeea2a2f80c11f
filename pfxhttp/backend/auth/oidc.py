"""backend_oidc_auth: OAuth 2.0 client credentials (RFC 6749 section 4.4) at a token endpoint found by
OpenID Connect discovery.

The token endpoint is ``token_endpoint`` when configured, else the ``token_endpoint`` of the discovery
document at ``configuration_uri`` (OpenID Connect Discovery 1.0 section 4; the URI is used as given, normally
ending in ``/.well-known/openid-configuration``). :class:`DiscoveryCache` fetches each document once and
shares it between fetchers for DISCOVERY_TTL; a failed discovery is not cached, and a failed token request
drops the cached document, so an identity provider that moved its endpoint is found again.

The document decides where the client's secret goes, so it must come from the identity provider named in the
configuration: redirects are followed within the URI's origin only (``tokenhttp``), and the document's
``issuer`` must be the one the URI names (:func:`issuer_matches`), as OpenID Connect Discovery 1.0 section 4.3
requires. A token endpoint on another host is allowed (Google's is), but not plain http under an https URI.

Client authentication (RFC 6749 section 2.3, OpenID Connect Core 1.0 section 9): ``client_secret_basic``,
``client_secret_post``, ``private_key_jwt`` (RFC 7523 section 2.2, a short-lived assertion signed with the
configured key) or ``none``; ``auto`` picks private_key_jwt with a key, else client_secret_basic with a secret,
else none.

Expiry: ``expires_in`` of the reply; without it the ``exp`` claim when the access token is a JWT, else
DEFAULT_LIFETIME (one hour, what upstream pfxhttp assumes). A refresh token in the reply is ignored: client
credentials need none (RFC 6749 section 4.4.3), a new token is simply requested.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

import httpx
import trio

from pfxhttp.backend.auth.jwtlogin import as_seconds, jwt_exp, secret_digest
from pfxhttp.backend.auth.tokenhttp import endpoint_label, origin, request_json
from pfxhttp.backend.auth.tokens import Token
from pfxhttp.config.model import OidcAuthConfig, OidcAuthMethod
from pfxhttp.errors import ConfigError, TokenError

# OpenID Connect Discovery 1.0 section 4 appends this to the issuer; RFC 8414 section 3 inserts its own
# well-known name (or this one) between the issuer's host and path.
OIDC_WELL_KNOWN = "/.well-known/openid-configuration"
INSERTED_WELL_KNOWN = (OIDC_WELL_KNOWN, "/.well-known/oauth-authorization-server")
DISCOVERY_TTL = 3600.0  # identity providers rarely move their endpoints; an hour bounds a stale document
DEFAULT_LIFETIME = 3600.0
ASSERTION_LIFETIME = 300  # RFC 7523 section 3: the assertion should expire soon; it is used once
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"  # RFC 7523 section 2.2


@dataclass(frozen=True, slots=True)
class _Discovered:
    token_endpoint: str
    fetched_at: float


def _http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def issuer_matches(configuration_uri: str, issuer: str) -> bool:
    """The ``issuer`` of a discovery document is the one ``configuration_uri`` names.

    ``https://idp/realm/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0 section 4) and
    ``https://idp/.well-known/oauth-authorization-server/realm`` (RFC 8414 section 3) name the issuer
    ``https://idp/realm``; a trailing slash is not held against it (identity providers differ there; the origin
    and the path are what matter). A URI of any other shape names only an origin, which the issuer must share."""
    try:
        uri, claimed = httpx.URL(configuration_uri), httpx.URL(issuer)
    except httpx.InvalidURL:
        return False
    if origin(uri) != origin(claimed) or claimed.query or claimed.fragment:
        return False
    path = uri.path
    if path.endswith(OIDC_WELL_KNOWN):
        expected = path[: -len(OIDC_WELL_KNOWN)]
    else:
        inserted = next((name for name in INSERTED_WELL_KNOWN if path.startswith(name + "/")), None)
        if inserted is None:
            return True
        expected = path[len(inserted) :]
    return claimed.path.rstrip("/") == expected.rstrip("/")


class DiscoveryCache:
    """Discovery documents by configuration_uri, shared by every OIDC fetcher of a process.

    Concurrent lookups of one URI wait for a single fetch (a per-URI trio lock); a failure is not cached.
    """

    def __init__(self, ttl: float = DISCOVERY_TTL) -> None:
        self._ttl = ttl
        self._entries: dict[str, _Discovered] = {}
        self._locks: dict[str, trio.Lock] = {}

    async def token_endpoint(self, http: httpx.AsyncClient, configuration_uri: str) -> str:
        """The token endpoint announced at configuration_uri, fetched when not cached or older than ttl."""
        lock = self._locks.setdefault(configuration_uri, trio.Lock())
        async with lock:
            entry = self._entries.get(configuration_uri)
            if entry is not None and time.monotonic() - entry.fetched_at < self._ttl:
                return entry.token_endpoint
            endpoint = await self._discover(http, configuration_uri)
            self._entries[configuration_uri] = _Discovered(endpoint, time.monotonic())
            return endpoint

    def invalidate(self, configuration_uri: str) -> None:
        """Forget the document: the next lookup fetches it again."""
        self._entries.pop(configuration_uri, None)

    @staticmethod
    async def _discover(http: httpx.AsyncClient, configuration_uri: str) -> str:
        label = f"discovery {endpoint_label(configuration_uri)}"
        document = await request_json(
            http, "GET", configuration_uri, what="discovery", headers={"Accept": "application/json"}
        )
        issuer = document.get("issuer")
        if not isinstance(issuer, str) or not _http_url(issuer):
            raise TokenError(f"{label}: issuer missing or not an http(s) URL")
        if not issuer_matches(configuration_uri, issuer):
            raise TokenError(f"{label}: issuer {endpoint_label(issuer)} is not the one the URL names")
        endpoint = document.get("token_endpoint")
        if not isinstance(endpoint, str) or not _http_url(endpoint):
            raise TokenError(f"{label}: token_endpoint missing or not an http(s) URL")
        # A document fetched over TLS must not send the client's credentials over plain HTTP.
        if urlsplit(configuration_uri).scheme == "https" and urlsplit(endpoint).scheme != "https":
            raise TokenError(f"{label}: token_endpoint is not https")
        return endpoint


def resolve_method(config: OidcAuthConfig) -> OidcAuthMethod:
    """The auth method ``auto`` stands for with this configuration (any other is itself)."""
    if config.auth_method is not OidcAuthMethod.AUTO:
        return config.auth_method
    if config.private_key is not None:
        return OidcAuthMethod.PRIVATE_KEY_JWT
    if config.client_secret is not None:
        return OidcAuthMethod.CLIENT_SECRET_BASIC
    return OidcAuthMethod.NONE


def basic_authorization(client_id: str, secret: str) -> str:
    """RFC 6749 section 2.3.1: id and secret are form-urlencoded before the RFC 7617 basic scheme."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode("ascii")
    return "Basic " + base64.b64encode(pair).decode("ascii")


class OidcClientCredentialsFetcher:
    """Gets client-credentials tokens for one ``backend_oidc_auth`` configuration.

    Raises ConfigError at construction for what no request can fix: no endpoint, a method without its
    secret or key, an unusable key.
    """

    def __init__(self, config: OidcAuthConfig, discovery: DiscoveryCache) -> None:
        self._config = config
        self._discovery = discovery
        where = config.token_endpoint or config.configuration_uri
        if not where:
            raise ConfigError("backend_oidc_auth needs token_endpoint or configuration_uri")
        if not config.client_id:
            raise ConfigError("backend_oidc_auth needs a client_id")
        self._method = resolve_method(config)
        self._key: tuple[Any, str] | None = None  # a cryptography private key and its JWS algorithm
        if self._method is OidcAuthMethod.PRIVATE_KEY_JWT:
            if config.private_key is None:
                raise ConfigError("backend_oidc_auth: private_key_jwt needs a private_key_file")
            # Imported here: cryptography and pyjwt (~10 MB) only for the configurations that sign.
            from pfxhttp.config.secrets import load_signing_key

            source = config.private_key_file or "private key"
            self._key = load_signing_key(config.private_key.value.encode("utf-8"), source)
            import jwt  # noqa: F401 - imported now, before the privilege drop, for _assertion
        needs_secret = (OidcAuthMethod.CLIENT_SECRET_BASIC, OidcAuthMethod.CLIENT_SECRET_POST)
        if self._method in needs_secret and config.client_secret is None:
            raise ConfigError(f"backend_oidc_auth: {self._method.value} needs a client_secret")
        self._label = endpoint_label(where)
        digest = secret_digest(
            where,
            config.client_secret.value if config.client_secret else "",
            config.private_key.value if config.private_key else "",
        )
        scopes = " ".join(sorted(config.scopes))
        self._store_key = f"oidc|{self._label}|{config.client_id}|{scopes}|{self._method.value}|{digest}"

    @property
    def store_key(self) -> str:
        return self._store_key

    @property
    def description(self) -> str:
        return f"backend_oidc_auth client {self._config.client_id!r} at {self._label}"

    @property
    def auth_method(self) -> OidcAuthMethod:
        """The method in use (``auto`` resolved)."""
        return self._method

    async def fetch(self, http: httpx.AsyncClient, current: Token | None) -> Token:
        """A new token; ``current`` is not used (client credentials need no refresh token)."""
        uri = self._config.configuration_uri
        if self._config.token_endpoint or not uri:  # the constructor made sure one of them is set
            return await self._request_token(http, self._config.token_endpoint or "")
        endpoint = await self._discovery.token_endpoint(http, uri)
        try:
            return await self._request_token(http, endpoint)
        except TokenError:
            self._discovery.invalidate(uri)
            raise

    def _assertion(self, endpoint: str) -> str:
        """RFC 7523 section 3: iss and sub are the client, aud the token endpoint, a short exp, a fresh jti."""
        assert self._key is not None
        key, algorithm = self._key
        now = int(time.time())
        claims = {
            "iss": self._config.client_id,
            "sub": self._config.client_id,
            "aud": endpoint,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": secrets.token_urlsafe(18),
        }
        import jwt  # already loaded by __init__ (sys.modules): no file is read after the privilege drop

        return jwt.encode(claims, key, algorithm=algorithm)

    async def _request_token(self, http: httpx.AsyncClient, endpoint: str) -> Token:
        config = self._config
        form = [("grant_type", "client_credentials")]
        if config.scopes:
            form.append(("scope", " ".join(config.scopes)))  # RFC 6749 section 3.3: space-delimited
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        secret = config.client_secret.value if config.client_secret else ""
        if self._method is OidcAuthMethod.CLIENT_SECRET_BASIC:
            headers["Authorization"] = basic_authorization(config.client_id, secret)
        elif self._method is OidcAuthMethod.CLIENT_SECRET_POST:
            form += [("client_id", config.client_id), ("client_secret", secret)]
        elif self._method is OidcAuthMethod.PRIVATE_KEY_JWT:
            form += [
                ("client_id", config.client_id),  # RFC 7521 section 4.2: optional, must match the assertion
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", self._assertion(endpoint)),
            ]
        else:
            form.append(("client_id", config.client_id))
        sent_at = time.time()
        document = await request_json(
            http,
            "POST",
            endpoint,
            what="token endpoint",
            headers=headers,
            content=urlencode(form).encode("ascii"),
        )
        return self._token(document, sent_at, f"token endpoint {endpoint_label(endpoint)}")

    @staticmethod
    def _token(document: dict[str, object], sent_at: float, label: str) -> Token:
        access = document.get("access_token")
        if not isinstance(access, str) or not access:
            raise TokenError(f"{label}: field 'access_token' missing or not a string")
        token_type = document.get("token_type")
        # RFC 6750: we present the token as Bearer; another type (DPoP, MAC) would be refused anyway.
        if token_type is not None and (not isinstance(token_type, str) or token_type.lower() != "bearer"):
            raise TokenError(f"{label}: token_type is not Bearer")
        expires_in = document.get("expires_in")
        if expires_in is not None:
            try:
                expires_at = sent_at + as_seconds(expires_in)
            except ValueError:
                raise TokenError(f"{label}: field 'expires_in' is not a number") from None
        else:
            exp = jwt_exp(access)
            expires_at = exp if exp is not None else sent_at + DEFAULT_LIFETIME
        if expires_at <= sent_at:
            raise TokenError(f"{label}: the token had expired on arrival")
        return Token(access=access, expires_at=expires_at, obtained_at=sent_at)
