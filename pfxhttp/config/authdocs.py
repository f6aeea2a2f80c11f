"""The descriptions and JSON Schema of the backend authentication keys: ``jwt_auth``, ``backend_oidc_auth``
(``oidc_auth``), and the rules between an entry's keys that keep one source of the Authorization header.

Part of :mod:`pfxhttp.config.keydocs`, which merges these into its tables; the loader's checks they mirror
are in :mod:`pfxhttp.config.auth` and ``entries._check_authorization``.
"""

from __future__ import annotations

from typing import Any

from pfxhttp.config.jsontypes import (
    SCOPE,
    SCOPES,
    TARGET,
    Doc,
    any_case,
    any_case_pattern,
    boolean,
    string,
)
from pfxhttp.config.model import JwtAuthConfig, OidcAuthMethod, RefreshMode, TokenContentType

_JWT = JwtAuthConfig(token_endpoint="")
_OFF = {"type": "object", "required": ["enabled"], "properties": {"enabled": {"const": False}}}
_ON = {"type": "object", "not": _OFF}  # an authentication block that is not turned off
_AUTH_BLOCKS = ("jwt_auth", "backend_oidc_auth", "oidc_auth")
_AUTHORIZATION_HEADER = {
    "type": "string",
    "pattern": r"^[ \t]*" + any_case_pattern(["authorization"])[1:-1] + r"[ \t]*:",  # as values.parse_header
}
_SECRET_METHODS = (OidcAuthMethod.CLIENT_SECRET_BASIC, OidcAuthMethod.CLIENT_SECRET_POST)


def _method_needs(methods: tuple[OidcAuthMethod, ...], *alternatives: str) -> dict[str, Any]:
    """With auth_method one of ``methods``, one of the keys ``alternatives`` is required (auth._check_method)."""
    pattern = any_case_pattern([method.value for method in methods])
    return {
        "if": {"required": ["auth_method"], "properties": {"auth_method": {"pattern": pattern}}},
        "then": {"anyOf": [{"required": [key]} for key in alternatives]},
    }


def _when_on(*rules: dict[str, Any]) -> dict[str, Any]:
    """Rules that hold for an authentication block unless ``enabled: false`` turns it off."""
    return {"if": _OFF, "else": {"allOf": list(rules)}}


def _both(first: str, second: str, **properties: Any) -> dict[str, Any]:
    """Not ``first`` and ``second`` in one mapping (each matching its schema in ``properties``)."""
    both: dict[str, Any] = {"type": "object", "required": [first, second]}
    if properties:
        both["properties"] = properties
    return {"not": both}


AUTH_BLOCK_DOCS: dict[str, Doc] = {
    "jwt_auth": Doc(
        "Log in at token_endpoint with credentials and send the token as Authorization: Bearer, renewed before it "
        "expires (false or enabled: false turns off one from 'defaults').",
        _when_on({"required": ["token_endpoint"]}),
        nullable=False,
    ),
    "backend_oidc_auth": Doc(
        "OAuth 2.0 client credentials at the token endpoint (given, or found by OpenID Connect discovery); the "
        "token is sent as Authorization: Bearer (false or enabled: false turns off one from 'defaults').",
        {
            "allOf": [
                _both("client_secret", "client_secret_file"),
                _when_on(
                    {"required": ["client_id"]},
                    {"anyOf": [{"required": ["configuration_uri"]}, {"required": ["token_endpoint"]}]},
                    _method_needs(_SECRET_METHODS, "client_secret", "client_secret_file"),
                    _method_needs((OidcAuthMethod.PRIVATE_KEY_JWT,), "private_key_file"),
                ),
            ]
        },
        nullable=False,
    ),
}
AUTH_BLOCK_DOCS["oidc_auth"] = Doc(
    "Upstream's older name of backend_oidc_auth (the same keys); an entry has one of the two.",
    AUTH_BLOCK_DOCS["backend_oidc_auth"].schema,
    nullable=False,
)

# One spelling of a key, and one source of the Authorization header in one entry (entries._parse_fields and
# entries._check_authorization; the loader also checks them after merging `defaults`).
AUTH_ENTRY_RULES: list[dict[str, Any]] = [
    _both("http_auth_basic", "http_auth_basic_file"),
    _both("backend_oidc_auth", "oidc_auth"),
    *(
        _both(auth, other, **{auth: _ON, other: _ON})
        for auth, other in (("jwt_auth", "backend_oidc_auth"), ("jwt_auth", "oidc_auth"))
    ),
    *(
        _both(auth, other, **{auth: _ON, other: {"type": "string", "minLength": 1}})
        for auth in _AUTH_BLOCKS
        for other in ("http_auth_basic", "http_auth_basic_file")
    ),
    *(
        _both(
            auth,
            "custom_headers",
            **{
                auth: _ON,
                "custom_headers": {
                    "anyOf": [_AUTHORIZATION_HEADER, {"type": "array", "contains": _AUTHORIZATION_HEADER}]
                },
            },
        )
        for auth in _AUTH_BLOCKS
    ),
]

AUTH_DOCS: dict[str, dict[str, Doc]] = {
    "jwt_auth": {
        "enabled": Doc(
            "false turns the block off (also one from 'defaults'); the block's presence turns it on.",
            boolean(True),
        ),
        "token_endpoint": Doc(
            "Required: the http(s) URL the credentials are posted to; its JSON answer holds the token.",
            string(TARGET),
        ),
        "credentials": Doc(
            "Name -> value posted to token_endpoint (form fields or a JSON object, as content_type says). A name "
            "ending in _file gives the file that holds the value of the name without it.",
            {
                "type": "object",
                "propertyNames": {"minLength": 1},
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
        ),
        "content_type": Doc(
            "How credentials and refresh tokens are posted: application/x-www-form-urlencoded or "
            "application/json.",
            any_case([t.value for t in TokenContentType], _JWT.content_type.value),
        ),
        "token_field": Doc(
            "Where the token is in the JSON answer (a dotted path).", string(default=_JWT.token_field)
        ),
        "refresh_token_field": Doc(
            "Where a refresh token is in the answer, and its name in a body refresh request.",
            string(default=_JWT.refresh_token_field),
        ),
        "expires_at_field": Doc(
            "Where the expiry time (unix seconds) is in the answer.", string(default=_JWT.expires_at_field)
        ),
        "expires_in_field": Doc(
            "Where the lifetime (seconds) is in the answer; with neither field, the token's exp claim is read.",
            string(default=_JWT.expires_in_field),
        ),
        "refresh": Doc(
            "How a refresh token is sent: header (X-Refresh-Token), body (refresh_token_field in content_type) "
            "or none (log in again). Default: body with a refresh_endpoint, else header.",
            any_case([r.value for r in RefreshMode]),
        ),
        "refresh_endpoint": Doc(
            "The http(s) URL refresh requests are posted to (default: token_endpoint).", string(TARGET)
        ),
    },
    "backend_oidc_auth": {
        "enabled": Doc(
            "false turns the block off (also one from 'defaults'); the block's presence turns it on.",
            boolean(True),
        ),
        "configuration_uri": Doc(
            "The OpenID Connect discovery URL (.../.well-known/openid-configuration) the token endpoint is read "
            "from; this or token_endpoint is required.",
            string(TARGET),
        ),
        "token_endpoint": Doc("The token endpoint's http(s) URL; skips discovery.", string(TARGET)),
        "client_id": Doc("Required: the OAuth 2.0 client id.", string()),
        "client_secret": Doc("The client secret.", string()),
        "client_secret_file": Doc(
            "Instead of client_secret: the file that holds it (one trailing newline stripped).", string()
        ),
        "private_key_file": Doc(
            "An unencrypted PEM private key for private_key_jwt (RFC 7523): RSA of 2048 bits or more, EC P-256, "
            "P-384 or P-521, Ed25519 or Ed448. Read at load and on reload.",
            string(),
        ),
        "scopes": Doc(
            "The scopes asked for: a list, or one string of scopes separated by blanks.",
            {"anyOf": [string(SCOPES), {"type": "array", "items": string(SCOPE), "uniqueItems": True}]},
        ),
        "auth_method": Doc(
            "How the client authenticates at the token endpoint: auto (private_key_jwt with a private_key_file, "
            "else client_secret_basic with a secret, else none), client_secret_basic, client_secret_post, "
            "private_key_jwt or none.",
            any_case([m.value for m in OidcAuthMethod], OidcAuthMethod.AUTO.value),
        ),
    },
}
