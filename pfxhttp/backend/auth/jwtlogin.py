"""jwt_auth: log in at a token endpoint with the configured credentials; refresh with the refresh token.

One attempt per :meth:`JwtLoginFetcher.fetch`: a refresh when the current token carries a refresh token (and
``refresh`` is not ``none``), then, if that fails for any reason, exactly one login. Caching, single-flight and
back-off are the token source's business.

Expiry, in this order: the ``expires_at_field`` (unix seconds), the ``expires_in_field`` (seconds from the
moment the request was sent, so the estimate errs early), the token's own ``exp`` claim when it is a JWT.
With none of these the fetch fails with TokenError: a guessed lifetime would either renew needlessly or,
worse, keep presenting an expired token until every lookup fails; the operator names the right field instead.

Requests go through ``tokenhttp.request_json``: replies capped at MAX_TOKEN_RESPONSE bytes raw and decoded,
redirects of a POST never followed (a 307/308 would repeat the credentials to another place), log-safe errors
naming the endpoint (without userinfo or query string), the status and a short fixed reason, never credentials,
tokens or the response body, which may echo what was sent.

The helpers below (secret_digest, field_at, as_seconds, jwt_exp) are shared with ``oidc``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlencode

import httpx
import orjson

from pfxhttp.backend.auth.tokenhttp import endpoint_label, request_json
from pfxhttp.backend.auth.tokens import Token
from pfxhttp.config.model import JwtAuthConfig, RefreshMode, TokenContentType
from pfxhttp.errors import TokenError
from pfxhttp.logsetup import get_logger

# 128 bits of SHA-256: plenty to tell credentials apart, short enough for a store key.
DIGEST_HEX_CHARS = 32
REFRESH_HEADER = "X-Refresh-Token"  # the header form of refresh, as Nauthilus and upstream pfxhttp use it

log = get_logger(component="auth")


def secret_digest(*parts: str) -> str:
    """A truncated SHA-256 over length-prefixed parts (so ("ab", "c") and ("a", "bc") differ)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:DIGEST_HEX_CHARS]


def field_at(document: Mapping[str, object], path: str) -> object:
    """The value at a dotted path (``data.auth.token``) into nested objects; None when absent."""
    node: object = document
    for name in path.split("."):
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
    return node


def as_seconds(value: object) -> float:
    """A finite number of seconds from a JSON number or a numeric string; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("not a number")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError("not finite")
    return seconds


def jwt_exp(token: str) -> float | None:
    """The ``exp`` claim of a JWT we received from our own token endpoint (signature not checked: we are
    its bearer, not its audience), or None when the token is no JWT or has no numeric exp.

    Read by hand (RFC 7519 section 7.2: the second dot-separated part, base64url JSON) rather than with pyjwt:
    pyjwt imports cryptography (~10 MB of the daemon's 50 MB budget) and would be imported here for the first
    time after the privilege drop, where an interpreter readable only by root could not load it."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, orjson.JSONDecodeError):  # binascii.Error is a ValueError
        return None
    if not isinstance(claims, dict):
        return None
    try:
        return as_seconds(claims.get("exp"))
    except ValueError:
        return None


def _encode(content_type: TokenContentType, fields: Sequence[tuple[str, str]]) -> bytes:
    if content_type is TokenContentType.JSON:
        return orjson.dumps(dict(fields))
    return urlencode(list(fields)).encode("ascii")


class JwtLoginFetcher:
    """Gets tokens for one ``jwt_auth`` configuration (see the module docstring for the rules)."""

    def __init__(self, config: JwtAuthConfig) -> None:
        self._config = config
        self._label = endpoint_label(config.token_endpoint)
        credentials = sorted((name, secret.value) for name, secret in config.credentials)
        digest = secret_digest(config.token_endpoint, *(part for pair in credentials for part in pair))
        self._store_key = f"jwt|{self._label}|{digest}"

    @property
    def store_key(self) -> str:
        return self._store_key

    @property
    def description(self) -> str:
        return f"jwt_auth {self._label}"

    async def fetch(self, http: httpx.AsyncClient, current: Token | None) -> Token:
        if current is not None and current.refresh and self._config.refresh is not RefreshMode.NONE:
            try:
                return await self._refresh(http, current.refresh)
            except TokenError as exc:  # an expired, used or revoked refresh token: log in instead
                log.debug("token refresh failed, logging in", fetcher=self.description, reason=str(exc))
        return await self._login(http)

    def _headers(self, extra: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
        return {"Accept": "application/json", **dict(extra)}

    async def _login(self, http: httpx.AsyncClient) -> Token:
        config = self._config
        fields = [(name, secret.value) for name, secret in config.credentials]
        headers = self._headers([("Content-Type", config.content_type.value)])
        sent_at = time.time()
        document = await request_json(
            http,
            "POST",
            config.token_endpoint,
            what="token endpoint",
            headers=headers,
            content=_encode(config.content_type, fields),
        )
        return self._token(document, sent_at, previous_refresh=None, what="token endpoint")

    async def _refresh(self, http: httpx.AsyncClient, refresh: str) -> Token:
        config = self._config
        url = config.refresh_endpoint or config.token_endpoint
        if config.refresh is RefreshMode.HEADER:
            if not refresh.isascii() or not refresh.isprintable():  # RFC 9110 section 5.5 field values
                raise TokenError(f"refresh endpoint {endpoint_label(url)}: refresh token unfit for a header")
            headers = self._headers([(REFRESH_HEADER, refresh)])
            content = b""
        else:
            # The request names the refresh token like the reply's last path segment: a reply nesting it
            # under data.refresh_token is still refreshed with {"refresh_token": ...}.
            name = config.refresh_token_field.rpartition(".")[2]
            headers = self._headers([("Content-Type", config.content_type.value)])
            content = _encode(config.content_type, [(name, refresh)])
        sent_at = time.time()
        document = await request_json(
            http, "POST", url, what="refresh endpoint", headers=headers, content=content
        )
        return self._token(document, sent_at, previous_refresh=refresh, what="refresh endpoint")

    def _token(
        self, document: Mapping[str, object], sent_at: float, *, previous_refresh: str | None, what: str
    ) -> Token:
        config = self._config
        label = f"{what} {self._label}"
        access = field_at(document, config.token_field)
        if not isinstance(access, str) or not access:
            raise TokenError(f"{label}: field {config.token_field!r} missing or not a string")
        refresh = field_at(document, config.refresh_token_field)
        # Endpoints that do not rotate refresh tokens leave them out of a refresh reply: keep the old one.
        new_refresh = refresh if isinstance(refresh, str) and refresh else previous_refresh
        expires_at = self._expires_at(document, access, sent_at, label)
        if expires_at <= sent_at:
            raise TokenError(f"{label}: the token had expired on arrival")
        return Token(access=access, expires_at=expires_at, obtained_at=sent_at, refresh=new_refresh)

    def _expires_at(self, document: Mapping[str, object], access: str, sent_at: float, label: str) -> float:
        config = self._config
        for name, relative in ((config.expires_at_field, False), (config.expires_in_field, True)):
            value = field_at(document, name)
            if value is None:
                continue
            try:
                seconds = as_seconds(value)
            except ValueError:
                raise TokenError(f"{label}: field {name!r} is not a number") from None
            return sent_at + seconds if relative else seconds
        exp = jwt_exp(access)
        if exp is None:
            raise TokenError(
                f"{label}: no expiry: neither {config.expires_at_field!r} nor {config.expires_in_field!r}"
                " in the reply, and the token has no exp claim"
            )
        return exp
