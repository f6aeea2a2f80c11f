"""Backend authentication meets the environment overrides and the JSON schema: PFXHTTP_ variables inside auth
blocks, and the schema accepting exactly what the loader accepts."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from pfxhttp.config import (
    JwtAuthConfig,
    TokenContentType,
)
from pfxhttp.config.schema import config_schema
from pfxhttp.errors import ConfigErrors
from tests.test_config_auth import ENTRY, LISTEN, errors, parse

# ---- environment overrides -------------------------------------------------------------------------------------
ENV_FILE = """\
socket_maps:
  defaults:
    jwt_auth: {token_endpoint: 'https://h/login', credentials: {username: u, password: p}}
  inherits: {target: http://h/}
  own: {target: http://h/, jwt_auth: {token_endpoint: 'https://h/own'}}
  plain: {target: http://h/, jwt_auth: false, oidc_auth: {client_id: c, token_endpoint: 'http://i/'}}
"""


def test_overrides_set_keys_inside_auth_blocks() -> None:
    config = parse(
        ENV_FILE,
        {
            "PFXHTTP_SOCKET_MAPS__OWN__JWT_AUTH__TOKEN_ENDPOINT": "https://h/changed",
            "PFXHTTP_SOCKET_MAPS__DEFAULTS__JWT_AUTH__CONTENT_TYPE": "application/json",
            "PFXHTTP_SOCKET_MAPS__PLAIN__OIDC_AUTH__SCOPES": "openid email",
            "PFXHTTP_SERVER__WORKERS": "3",
        },
    )
    own, inherits, plain = (config.socket_maps[name] for name in ("own", "inherits", "plain"))
    assert own.jwt_auth == JwtAuthConfig(token_endpoint="https://h/changed")
    assert inherits.jwt_auth is not None and inherits.jwt_auth.content_type is TokenContentType.JSON
    assert plain.backend_oidc_auth is not None and plain.backend_oidc_auth.scopes == ("openid", "email")
    assert config.server.workers == 3


def test_an_override_creates_an_absent_block_unless_defaults_has_one() -> None:
    # No block of defaults to lose: the variable creates one, which is then checked like the file's.
    text = "socket_maps:\n  m: {target: http://h/}\n"
    config = parse(text, {"PFXHTTP_SOCKET_MAPS__M__JWT_AUTH__TOKEN_ENDPOINT": "https://h/login"})
    assert config.socket_maps["m"].jwt_auth == JwtAuthConfig(token_endpoint="https://h/login")
    assert errors(text, {"PFXHTTP_SOCKET_MAPS__M__OIDC_AUTH__CLIENT_ID": "c"}) == [
        "environment variable PFXHTTP_SOCKET_MAPS__M__OIDC_AUTH__CLIENT_ID: at key socket_maps.m.oidc_auth: "
        "missing required key 'configuration_uri' or 'token_endpoint'"
    ]
    # An entry that inherits the block: one created here would drop the credentials of defaults ...
    variable = "PFXHTTP_SOCKET_MAPS__INHERITS__JWT_AUTH__TOKEN_ENDPOINT"
    assert errors(ENV_FILE, {variable: "https://h/x"}) == [
        f"environment variable {variable}: at key socket_maps.inherits.jwt_auth: the entry inherits jwt_auth "
        "from defaults and has none of its own; a jwt_auth created here would replace the defaults' one whole: "
        "write jwt_auth into the entry, or set the key in defaults (did you mean "
        "'PFXHTTP_SOCKET_MAPS__DEFAULTS__JWT_AUTH__TOKEN_ENDPOINT'?)"
    ]
    # ... but turning it off for this entry means the same either way.
    off = parse(ENV_FILE, {"PFXHTTP_SOCKET_MAPS__INHERITS__JWT_AUTH__ENABLED": "false"})
    assert off.socket_maps["inherits"].jwt_auth is None


def test_credentials_are_a_mapping_the_environment_cannot_set() -> None:
    variable = "PFXHTTP_SOCKET_MAPS__OWN__JWT_AUTH__CREDENTIALS"
    assert errors(ENV_FILE, {variable: "x"}) == [
        f"environment variable {variable}: at key socket_maps.own.jwt_auth.credentials: takes a mapping; the "
        "environment sets single values only"
    ]


# ---- the schema agrees with the loader -------------------------------------------------------------------------
SCHEMA_CASES = [
    (True, "  workers: 64\n"),
    (False, "  workers: 65\n"),
    (
        True,
        ENTRY
        + "    jwt_auth: {token_endpoint: 'http://a/', content_type: Application/JSON, refresh: BODY}\n",
    ),
    (True, ENTRY + "    jwt_auth: {enabled: false}\n    oidc_auth: {enabled: false}\n"),
    (False, ENTRY + "    jwt_auth: {credentials: {a: b}}\n"),
    (True, ENTRY + "    oidc_auth: {client_id: x, token_endpoint: 'http://a/', scopes: ' openid  email'}\n"),
    (False, ENTRY + "    oidc_auth: {client_id: x}\n"),
    (
        False,
        ENTRY
        + "    oidc_auth: {client_id: x, token_endpoint: 'http://a/', auth_method: CLIENT_SECRET_POST}\n",
    ),
    (
        False,
        ENTRY + "    oidc_auth: {client_id: x, token_endpoint: 'http://a/', auth_method: private_key_jwt}\n",
    ),
    (
        False,
        ENTRY + "    jwt_auth: {token_endpoint: 'http://a/'}\n    custom_headers: ' authorization : x'\n",
    ),
    (False, ENTRY + "    jwt_auth: {token_endpoint: 'http://a/'}\n    http_auth_basic: 'a:b'\n"),
    (True, ENTRY + "    jwt_auth: false\n    http_auth_basic: 'a:b'\n"),
    (
        False,
        ENTRY
        + "    jwt_auth: {token_endpoint: 'http://a/'}\n    oidc_auth: {client_id: x, token_endpoint: 'x'}\n",
    ),
]


@pytest.mark.parametrize(("valid", "text"), SCHEMA_CASES, ids=range(len(SCHEMA_CASES)))
def test_the_schema_agrees_with_the_loader(valid: bool, text: str) -> None:
    validator = jsonschema.Draft202012Validator(config_schema())
    schema_ok = not list(validator.iter_errors(yaml.safe_load(LISTEN + text)))
    try:
        parse(text, dedent=False)
        loader_ok = True
    except ConfigErrors:
        loader_ok = False
    assert (loader_ok, schema_ok) == (valid, valid)
