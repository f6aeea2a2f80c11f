"""Backend authentication in the configuration: jwt_auth, backend_oidc_auth (oidc_auth), defaults merging,
each mistake at its place, server.jwt_db_path and server.workers. Secrets: test_config_auth_secrets.py;
environment overrides and the schema: test_config_auth_overrides.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pfxhttp.config import (
    Config,
    JwtAuthConfig,
    OidcAuthConfig,
    OidcAuthMethod,
    RefreshMode,
    Secret,
    TokenContentType,
    parse_config,
)
from pfxhttp.errors import ConfigErrors, Location

LISTEN = "server:\n  listen:\n    - {type: tcp, address: 127.0.0.1, port: 1}\n"
SECRET = "s3cr3t-Value-that-must-never-show"


def parse(text: str, environ: dict[str, str] | None = None, *, dedent: bool = True) -> Config:
    """``text`` after the server's listener: sections, or (``dedent=False``) more keys of ``server``."""
    return parse_config(LISTEN + (textwrap.dedent(text) if dedent else text), "f.yml", environ=environ)


def errors(text: str, environ: dict[str, str] | None = None, *, dedent: bool = True) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse(text, environ, dedent=dedent)
    return [error.render() for error in info.value.errors]


def secret_file(directory: Path, content: str | bytes, name: str = "secret", mode: int = 0o600) -> Path:
    path = directory / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    path.chmod(mode)
    return path


def secrets(credentials: tuple[tuple[str, Secret], ...]) -> list[tuple[str, str]]:
    return [(name, secret.value) for name, secret in credentials]


# ---- jwt_auth ----------------------------------------------------------------------------------------------
def test_jwt_auth_reads_every_key(tmp_path: Path) -> None:
    password = secret_file(tmp_path, f"{SECRET}\n")
    config = parse(
        f"""\
        socket_maps:
          m:
            target: https://api.example.com/map
            jwt_auth:
              enabled: true
              token_endpoint: https://api.example.com/login
              credentials:
                username: pfxhttp
                password_file: {password}
                tenant: 7
              content_type: Application/JSON
              token_field: data.access
              refresh_token_field: data.refresh
              expires_at_field: data.exp
              expires_in_field: data.ttl
              refresh: HEADER
              refresh_endpoint: https://api.example.com/refresh
        """
    )
    auth = config.socket_maps["m"].jwt_auth
    assert auth == JwtAuthConfig(
        token_endpoint="https://api.example.com/login",
        credentials=(("username", Secret("pfxhttp")), ("password", Secret(SECRET)), ("tenant", Secret("7"))),
        content_type=TokenContentType.JSON,
        token_field="data.access",
        refresh_token_field="data.refresh",
        expires_at_field="data.exp",
        expires_in_field="data.ttl",
        refresh=RefreshMode.HEADER,
        refresh_endpoint="https://api.example.com/refresh",
    )
    assert config.socket_maps["m"].backend_oidc_auth is None
    assert config.warnings == ()  # mode 0600: nothing to say


def test_jwt_auth_defaults() -> None:
    config = parse(
        """\
        socket_maps:
          a: {target: http://h/, jwt_auth: {token_endpoint: 'http://h/login'}}
          b: {target: http://h/, jwt_auth: {token_endpoint: 'http://h/login', refresh_endpoint: 'http://h/r'}}
          c: {target: http://h/}
        """
    )
    assert config.socket_maps["a"].jwt_auth == JwtAuthConfig(token_endpoint="http://h/login")
    assert JwtAuthConfig(token_endpoint="").refresh is RefreshMode.HEADER
    assert JwtAuthConfig(token_endpoint="").content_type is TokenContentType.FORM
    b = config.socket_maps["b"].jwt_auth
    assert b is not None and b.refresh is RefreshMode.BODY  # a separate refresh endpoint: RFC 6749's way
    assert config.socket_maps["c"].jwt_auth is None


def test_a_turned_off_block_requires_nothing_and_reads_no_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    config = parse(
        f"""\
        socket_maps:
          a: {{target: http://h/, jwt_auth: false}}
          b: {{target: http://h/, jwt_auth: {{enabled: false, credentials: {{password_file: {missing}}}}}}}
          c: {{target: http://h/, backend_oidc_auth: {{enabled: false, client_secret_file: {missing}}}}}
        policy_services:
          p: {{target: http://h/, oidc_auth: false}}
        """
    )
    entries = [*config.socket_maps.values(), *config.policy_services.values()]
    assert [(e.jwt_auth, e.backend_oidc_auth) for e in entries] == [(None, None)] * 4
    # ... but what it holds is still checked, as the schema checks it.
    assert errors("socket_maps:\n  m: {target: http://h/, jwt_auth: {enabled: false, refresh: never}}\n") == [
        "f.yml:5:62: at key socket_maps.m.jwt_auth.refresh: unknown refresh mode 'never': use header, body or "
        "none"
    ]


# ---- backend_oidc_auth ----------------------------------------------------------------------------------------
def test_backend_oidc_auth_reads_every_key(tmp_path: Path) -> None:
    client_secret = secret_file(tmp_path, SECRET + "\r\n")
    config = parse(
        f"""\
        socket_maps:
          m:
            target: https://api.example.com/map
            backend_oidc_auth:
              enabled: true
              configuration_uri: https://idp.example.com/.well-known/openid-configuration
              token_endpoint: https://idp.example.com/token
              client_id: pfxhttp
              client_secret_file: {client_secret}
              scopes: [openid, "api:read"]
              auth_method: Client_Secret_Post
        policy_services:
          p:
            target: https://api.example.com/policy
            oidc_auth: {{configuration_uri: 'https://idp/.well-known/openid-configuration', client_id: c,
                         client_secret: inline, scopes: " openid  email "}}
        """
    )
    assert config.socket_maps["m"].backend_oidc_auth == OidcAuthConfig(
        client_id="pfxhttp",
        configuration_uri="https://idp.example.com/.well-known/openid-configuration",
        token_endpoint="https://idp.example.com/token",
        client_secret=Secret(SECRET),  # one CR LF stripped
        scopes=("openid", "api:read"),
        auth_method=OidcAuthMethod.CLIENT_SECRET_POST,
    )
    older = config.policy_services["p"].backend_oidc_auth  # oidc_auth is the same block
    assert older == OidcAuthConfig(
        client_id="c",
        configuration_uri="https://idp/.well-known/openid-configuration",
        client_secret=Secret("inline"),
        scopes=("openid", "email"),
    )
    assert older.auth_method is OidcAuthMethod.AUTO and older.private_key is None


# ---- defaults merging ----------------------------------------------------------------------------------------
def test_defaults_merging_replaces_blocks_whole_and_false_turns_them_off() -> None:
    config = parse(
        """\
        socket_maps:
          defaults:
            jwt_auth:
              token_endpoint: https://h/login
              credentials: {username: u, password: p}
          inherits: {target: http://h/}
          own: {target: http://h/, jwt_auth: {token_endpoint: 'https://h/other'}}
          off: {target: http://h/, jwt_auth: false}
          disabled: {target: http://h/, jwt_auth: {enabled: false}}
          other_kind: {target: http://h/, jwt_auth: false, oidc_auth: {client_id: c, token_endpoint: 'http://i/'}}
        """
    )
    maps = config.socket_maps
    inherited = maps["inherits"].jwt_auth
    assert inherited is not None and secrets(inherited.credentials) == [("username", "u"), ("password", "p")]
    assert maps["own"].jwt_auth == JwtAuthConfig(token_endpoint="https://h/other")  # no credentials merged
    assert maps["off"].jwt_auth is None and maps["disabled"].jwt_auth is None
    assert maps["other_kind"].jwt_auth is None
    assert maps["other_kind"].backend_oidc_auth == OidcAuthConfig(client_id="c", token_endpoint="http://i/")
    assert maps["inherits"].location_of("jwt_auth") == Location("f.yml", 7, 7)  # where defaults gives it


def test_the_authorization_header_has_one_source_after_merging() -> None:
    assert errors(
        """\
        socket_maps:
          defaults: {jwt_auth: {token_endpoint: 'https://h/login'}}
          a: {target: http://h/, oidc_auth: {client_id: c, token_endpoint: 'http://i/'}}
          b: {target: http://h/, http_auth_basic: 'u:p'}
          c: {target: http://h/, custom_headers: ['X-A: 1', 'authorization: Bearer x']}
          d: {target: http://h/, jwt_auth: false, custom_headers: 'Authorization: Bearer x'}
        """
    ) == [
        "f.yml:6:37: at key socket_maps.a.oidc_auth: oidc_auth and jwt_auth (from defaults) would both send the "
        "Authorization header: keep one (an entry turns off an authentication block of defaults with 'false')",
        "f.yml:7:43: at key socket_maps.b.http_auth_basic: http_auth_basic and jwt_auth (from defaults) would both "
        "send the Authorization header: keep one (an entry turns off an authentication block of defaults with "
        "'false')",
        "f.yml:8:42: at key socket_maps.c.custom_headers: a custom Authorization header and jwt_auth (from "
        "defaults) would both send the Authorization header: keep one (an entry turns off an authentication "
        "block of defaults with 'false')",
    ]


# ---- errors, each at its place -------------------------------------------------------------------------------
ENTRY = "socket_maps:\n  m:\n    target: http://h/\n"
ERRORS = [
    (
        "    jwt_auth: yes\n",
        "f.yml:7:15: at key socket_maps.m.jwt_auth: expected a mapping, or false to turn it off here; got a boolean",
    ),
    (
        "    jwt_auth: {credentials: {a: b}}\n",
        "f.yml:7:15: at key socket_maps.m.jwt_auth: missing required key 'token_endpoint'",
    ),
    (
        "    jwt_auth: {token_endpoint: 'ftp://h/'}\n",
        "f.yml:7:32: at key socket_maps.m.jwt_auth.token_endpoint: token_endpoint must use http:// or https://",
    ),
    (
        "    jwt_auth: {token_endpoint: 'https://u:pw@h:99999/'}\n",  # the URL (and its password) is not quoted
        "f.yml:7:32: at key socket_maps.m.jwt_auth.token_endpoint: token_endpoint has an invalid port",
    ),
    (
        "    jwt_auth: {token_endpoint: 'https://h/{{ key }}'}\n",
        "f.yml:7:32: at key socket_maps.m.jwt_auth.token_endpoint: token_endpoint is fetched as written: it takes "
        "no template expressions",
    ),
    (
        "    jwt_auth: {token_endpoint: 'http://h/', content_type: text/plain}\n",
        "f.yml:7:59: at key socket_maps.m.jwt_auth.content_type: unknown content type 'text/plain': use "
        "application/x-www-form-urlencoded or application/json",
    ),
    (
        "    jwt_auth: {token_endpoint: 'http://h/', refresh: none, refresh_endpoint: 'http://h/r'}\n",
        "f.yml:7:60: at key socket_maps.m.jwt_auth.refresh_endpoint: refresh is none, so no refresh request is "
        "ever sent: remove refresh_endpoint or choose a refresh mode",
    ),
    (
        "    jwt_auth: {token_endpoint: 'http://h/', credentials: {password: x, password_file: /x}}\n",
        "f.yml:7:72: at key socket_maps.m.jwt_auth.credentials.password_file: password and password_file exclude "
        "each other: give the secret or the file that holds it",
    ),
    (
        "    jwt_auth: {token_endpoint: 'http://h/', credentials: {password: }}\n",
        "f.yml:7:68: at key socket_maps.m.jwt_auth.credentials.password: expected a string, got nothing (null); "
        'write "" for an empty value',
    ),
    (
        "    jwt_auth: {token_endpoint: 'http://h/', credentials: {password_file: ''}}\n",
        "f.yml:7:74: at key socket_maps.m.jwt_auth.credentials.password_file: expected the name of the file that "
        'holds it, got ""',
    ),
    (
        "    jwt_auth: {token_endpoint: 'http://h/', token_feld: x}\n",
        "f.yml:7:45: at key socket_maps.m.jwt_auth.token_feld: unknown key (did you mean 'token_field'?)",
    ),
    (
        "    backend_oidc_auth: {client_secret: x}\n",
        "f.yml:7:24: at key socket_maps.m.backend_oidc_auth: missing required key 'client_id'\n"
        "f.yml:7:24: at key socket_maps.m.backend_oidc_auth: missing required key 'configuration_uri' or "
        "'token_endpoint'",
    ),
    (
        "    backend_oidc_auth: {client_id: c, token_endpoint: 'http://i/', auth_method: client_secret_basic}\n",
        "f.yml:7:81: at key socket_maps.m.backend_oidc_auth.auth_method: auth_method client_secret_basic needs "
        "client_secret or client_secret_file",
    ),
    (
        "    backend_oidc_auth: {client_id: c, token_endpoint: 'http://i/', auth_method: private_key_jwt,"
        " client_secret: x}\n",
        "f.yml:7:81: at key socket_maps.m.backend_oidc_auth.auth_method: auth_method private_key_jwt needs "
        "private_key_file",
    ),
    (
        "    backend_oidc_auth: {client_id: c, token_endpoint: 'http://i/', auth_method: mtls}\n",
        "f.yml:7:81: at key socket_maps.m.backend_oidc_auth.auth_method: unknown auth_method 'mtls': use auto, "
        "client_secret_basic, client_secret_post, private_key_jwt or none",
    ),
    (
        "    backend_oidc_auth: {client_id: c, token_endpoint: 'http://i/', client_secret: x,"
        " client_secret_file: /x}\n",
        "f.yml:7:86: at key socket_maps.m.backend_oidc_auth.client_secret_file: client_secret and "
        "client_secret_file exclude each other: give the secret or the file that holds it",
    ),
    (
        "    backend_oidc_auth: {client_id: c, token_endpoint: 'http://i/', scopes: [openid, openid]}\n",
        "f.yml:7:85: at key socket_maps.m.backend_oidc_auth.scopes[1]: duplicate scope 'openid'",
    ),
    (
        "    backend_oidc_auth: {client_id: c, token_endpoint: 'http://i/', scopes: ['a\"b']}\n",
        "f.yml:7:77: at key socket_maps.m.backend_oidc_auth.scopes[0]: scope 'a\"b' must be printable ASCII "
        "without blanks, '\"' or '\\' (RFC 6749 3.3); write one scope per list item",
    ),
    (
        "    backend_oidc_auth: {client_id: c, token_endpoint: 'http://i/'}\n    oidc_auth: false\n",
        "f.yml:8:5: at key socket_maps.m.oidc_auth: backend_oidc_auth and oidc_auth exclude each other: oidc_auth "
        "is the older name of backend_oidc_auth: write one",
    ),
    (
        "    jwt_auth: {token_endpoint: 'http://h/'}\n    backend_oidc_auth: {client_id: c, configuration_uri:"
        " 'http://i/'}\n",
        "f.yml:8:24: at key socket_maps.m.backend_oidc_auth: backend_oidc_auth and jwt_auth would both send the "
        "Authorization header: keep one (an entry turns off an authentication block of defaults with 'false')",
    ),
    (
        "    http_auth_basic: 'u:p'\n    http_auth_basic_file: /x\n",
        "f.yml:8:5: at key socket_maps.m.http_auth_basic_file: http_auth_basic and http_auth_basic_file exclude "
        "each other: give the credentials or the file that holds them",
    ),
]


@pytest.mark.parametrize(("entry", "expected"), ERRORS, ids=range(len(ERRORS)))
def test_each_mistake_is_reported_at_its_place(entry: str, expected: str) -> None:
    assert "\n".join(errors(ENTRY + entry)) == expected


def test_server_workers_and_jwt_db_path(tmp_path: Path) -> None:
    assert (parse("").server.workers, parse("").server.jwt_db_path) == (1, None)
    db = tmp_path / "tokens.db"
    server = parse(f"  workers: 64\n  jwt_db_path: {db}\n", dedent=False).server
    assert (server.workers, server.jwt_db_path) == (64, str(db))
    assert parse("  workers:\n  jwt_db_path: ''\n", dedent=False).server.workers == 1
    assert errors(f"  workers: 65\n  jwt_db_path: {tmp_path}\n", dedent=False) == [
        "f.yml:4:12: at key server.workers: must be between 1 and 64",
        f"f.yml:5:16: at key server.jwt_db_path: {tmp_path} is a directory: give the path of the database file in "
        "it",
    ]
    assert errors(f"  workers: 0\n  jwt_db_path: {tmp_path}/no/such/dir/t.db\n", dedent=False) == [
        "f.yml:4:12: at key server.workers: must be between 1 and 64",
        f"f.yml:5:16: at key server.jwt_db_path: the directory {tmp_path}/no/such/dir of "
        f"{tmp_path}/no/such/dir/t.db does not exist",
    ]
