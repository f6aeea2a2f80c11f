"""Backend authentication in the configuration: jwt_auth, backend_oidc_auth (oidc_auth), the *_file secret keys,
private keys, server.jwt_db_path and server.workers; and that no secret ever shows in a message, repr or report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from pfxhttp import cli
from pfxhttp.config import (
    BasicAuth,
    Config,
    JwtAuthConfig,
    OidcAuthConfig,
    OidcAuthMethod,
    RefreshMode,
    Secret,
    TokenContentType,
    load_config,
    parse_config,
)
from pfxhttp.config.schema import config_schema, schema_json
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


# ---- private keys -----------------------------------------------------------------------------------------------
def pem(key: Any, encryption: serialization.KeySerializationEncryption | None = None) -> bytes:
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    )
    return data


KEYS: dict[str, Callable[[], Any]] = {
    "rsa-2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ec-p521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "ed448": ed448.Ed448PrivateKey.generate,
}


def oidc_with_key(path: Path, method: str = "private_key_jwt") -> str:
    return (
        "socket_maps:\n  m:\n    target: http://h/\n    backend_oidc_auth:\n"
        "      token_endpoint: https://idp/token\n      client_id: c\n"
        f"      private_key_file: {path}\n      auth_method: {method}\n"
    )


@pytest.mark.parametrize("kind", KEYS)
def test_private_keys_of_every_supported_type_load(tmp_path: Path, kind: str) -> None:
    data = pem(KEYS[kind]())
    path = secret_file(tmp_path, data, "key.pem", 0o400)
    auth = parse(oidc_with_key(path)).socket_maps["m"].backend_oidc_auth
    assert auth is not None and auth.auth_method is OidcAuthMethod.PRIVATE_KEY_JWT
    assert (auth.private_key_file, auth.private_key) == (str(path), Secret(data.decode()))
    assert "BEGIN" not in repr(auth) and data.decode() not in repr(auth)


REFUSED_KEYS: dict[str, tuple[Callable[[], bytes], str]] = {
    "garbage": (
        lambda: b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        "holds no PEM",
    ),
    "not-pem": (lambda: b"just text\n", "holds no PEM private key"),
    "public-key": (
        lambda: (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        ),
        "holds no PEM private key",
    ),
    "encrypted": (
        lambda: pem(ec.generate_private_key(ec.SECP256R1()), serialization.BestAvailableEncryption(b"pw")),
        "holds an encrypted private key: pfxhttp needs it unencrypted",
    ),
    "rsa-1024": (
        lambda: pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
        "holds an RSA key of 1024 bits: RS256 needs at least 2048",
    ),
    "ec-secp256k1": (
        lambda: pem(ec.generate_private_key(ec.SECP256K1())),
        "holds an EC key on secp256k1: use P-256, P-384 or P-521",
    ),
    "dsa": (lambda: pem(dsa.generate_private_key(key_size=1024)), "holds a DSA key: use RSA"),
    "binary": (lambda: b"\xff\xfe\x00garbage", "holds no PEM private key"),
}


@pytest.mark.parametrize("kind", REFUSED_KEYS)
def test_unusable_private_keys_are_errors_naming_the_file_only(tmp_path: Path, kind: str) -> None:
    make, expected = REFUSED_KEYS[kind]
    data = make()
    path = secret_file(tmp_path, data, "key.pem")
    (message,) = errors(oidc_with_key(path))
    assert message.startswith(
        f"f.yml:10:25: at key socket_maps.m.backend_oidc_auth.private_key_file: {path} "
    )
    assert expected in message
    body = [line for line in data.splitlines() if line and not line.startswith(b"-----")]
    assert all(line.decode("latin-1") not in message for line in body)


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


# ---- secret files ------------------------------------------------------------------------------------------------
def basic_auth_file(path: Path) -> str:
    return f"socket_maps:\n  m: {{target: http://h/, http_auth_basic_file: {path}}}\n"


def test_a_secret_file_loses_one_trailing_newline(tmp_path: Path) -> None:
    for content, expected in (("u:pw\n", "pw"), ("u:pw", "pw"), ("u:pw \n", "pw "), ("u:p:w\r\n", "p:w")):
        path = secret_file(tmp_path, content)
        assert parse(basic_auth_file(path)).socket_maps["m"].http_auth_basic == BasicAuth("u", expected)
    path = secret_file(tmp_path, "u:pw\n\n")  # the second newline is content: a control character
    assert errors(basic_auth_file(path)) == [
        "f.yml:5:48: at key socket_maps.m.http_auth_basic_file: the content of http_auth_basic_file must not "
        "contain control characters"
    ]


def test_unusable_secret_files_are_errors_at_their_key(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # never opened: reading it would block the load
    cases = {
        tmp_path / "missing": f"the file {tmp_path / 'missing'} does not exist",
        tmp_path: f"{tmp_path} is not a regular file",
        fifo: f"{fifo} is not a regular file",
        secret_file(tmp_path, "", "empty"): f"{tmp_path / 'empty'} is empty",
        secret_file(tmp_path, "\n", "newline"): f"{tmp_path / 'newline'} is empty",
        secret_file(tmp_path, b"u:\xff\xfe", "latin"): f"{tmp_path / 'latin'} is not UTF-8 text",
        secret_file(
            tmp_path, "u:" + "x" * 65536, "big"
        ): f"{tmp_path / 'big'} is larger than 64 KiB: not a secret file",
        secret_file(tmp_path, SECRET, "nocolon"): "the content of http_auth_basic_file must have the form "
        "'user:password'",
    }
    for path, message in cases.items():
        assert errors(basic_auth_file(path)) == [
            f"f.yml:5:48: at key socket_maps.m.http_auth_basic_file: {message}"
        ], path


# Root reads any file: as root, the load runs in a child that switches itself to nobody after its imports
# (the interpreter may live where nobody cannot read it, so it cannot simply be started as nobody).
_UNPRIVILEGED_LOAD = """
import os, pwd, sys
from pfxhttp.config import parse_config
from pfxhttp.errors import ConfigErrors
nobody = pwd.getpwnam("nobody")
os.setgroups([])
os.setgid(nobody.pw_gid)
os.setuid(nobody.pw_uid)
try:
    parse_config(sys.argv[1], "f.yml")
except ConfigErrors as exc:
    print("\\n".join(error.render() for error in exc.errors))
"""


def test_an_unreadable_secret_file_is_an_error(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        path = secret_file(tmp_path, "u:p", mode=0o000)
        assert errors(basic_auth_file(path)) == [
            f"f.yml:5:48: at key socket_maps.m.http_auth_basic_file: cannot read the file {path}: permission denied"
        ]
        return
    directory = Path(tempfile.mkdtemp(prefix="pfxhttp-secret-", dir="/tmp"))  # nobody may enter, not read
    try:
        directory.chmod(0o755)
        path = secret_file(directory, "u:p", mode=0o600)  # root's
        text = LISTEN + basic_auth_file(path)  # as parse() builds it
        done = subprocess.run(
            [sys.executable, "-c", _UNPRIVILEGED_LOAD, text],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.splitlines() == [
            f"f.yml:5:48: at key socket_maps.m.http_auth_basic_file: cannot read the file {path}: permission denied"
        ]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_secret_file_every_user_may_read_is_a_warning(tmp_path: Path) -> None:
    public = secret_file(tmp_path, "u:p\n", "public", 0o644)
    group = secret_file(tmp_path, "u:p\n", "group", 0o640)
    config = parse(
        f"socket_maps:\n  m: {{target: http://h/, http_auth_basic_file: {public}}}\n"
        f"  n: {{target: http://h/, http_auth_basic_file: {group}}}\n"
    )
    assert config.warnings == (
        f"socket_maps.m.http_auth_basic_file (line 5): {public} holds a secret and every user may read it (mode "
        "0644): chmod o-r it",
    )


def test_metrics_basic_auth_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, f"prometheus:{SECRET}\n")
    metrics = parse(f"  metrics: {{enabled: true, basic_auth_file: {path}}}\n", dedent=False).server.metrics
    assert metrics.basic_auth == BasicAuth("prometheus", SECRET)
    assert errors(f"  metrics: {{basic_auth: 'a:b', basic_auth_file: {path}}}\n", dedent=False) == [
        "f.yml:4:32: at key server.metrics.basic_auth_file: basic_auth and basic_auth_file exclude each other: give "
        "the credentials or the file that holds them"
    ]
    assert parse("  metrics: {basic_auth_file: ''}\n", dedent=False).server.metrics.basic_auth is None


def test_a_reload_reads_a_rotated_secret(tmp_path: Path) -> None:
    password = secret_file(tmp_path, "old\n")
    config_file = tmp_path / "pfxhttp.yml"
    config_file.write_text(
        LISTEN + "socket_maps:\n  m:\n    target: http://h/\n"
        f"    jwt_auth: {{token_endpoint: 'http://h/l', credentials: {{password_file: {password}}}}}\n"
    )

    def current() -> list[tuple[str, str]]:
        auth = load_config(config_file).socket_maps["m"].jwt_auth
        assert auth is not None
        return secrets(auth.credentials)

    assert current() == [("password", "old")]
    password.write_text("new\n")
    assert current() == [("password", "new")]


# ---- secrets never show --------------------------------------------------------------------------------------
def test_secrets_show_in_no_repr_message_or_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from_file = secret_file(tmp_path, f"{SECRET}-file\n", mode=0o644)  # world-readable: a warning, no content
    basic = secret_file(tmp_path, f"user:{SECRET}-basic\n", "basic")
    text = LISTEN + textwrap.dedent(
        f"""\
        socket_maps:
          m:
            target: http://h/
            jwt_auth:
              token_endpoint: http://h/login
              credentials: {{password: {SECRET}-inline, token_file: {from_file}}}
          n:
            target: http://h/
            backend_oidc_auth: {{client_id: c, token_endpoint: 'http://i/', client_secret: {SECRET}-client}}
          o: {{target: http://h/, http_auth_basic_file: {basic}}}
        """
    )
    config_file = tmp_path / "pfxhttp.yml"
    config_file.write_text(text)
    monkeypatch.setenv("PFXHTTP_SOCKET_MAPS__N__BACKEND_OIDC_AUTH__CLIENT_SECRET", f"{SECRET}-env")
    config = load_config(config_file, environ=dict(os.environ))
    n = config.socket_maps["n"].backend_oidc_auth
    assert n is not None and n.client_secret == Secret(f"{SECRET}-env")
    assert SECRET not in repr(config) and SECRET not in str(config.socket_maps["m"].jwt_auth)
    assert config.warnings and SECRET not in "".join(config.warnings)

    assert cli.main(["check", "--json", "--config", str(config_file)]) == cli.EXIT_OK
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["ok"] and report["overrides"] == [
        "PFXHTTP_SOCKET_MAPS__N__BACKEND_OIDC_AUTH__CLIENT_SECRET"
    ]
    assert SECRET not in out + err
    assert cli.main(["check", "--config", str(config_file)]) == cli.EXIT_OK
    out, err = capsys.readouterr()
    assert "warning" in err and SECRET not in out + err

    # A broken file: every error is reported, and still no secret.
    config_file.write_text(text.replace("http://h/login", "ftp://h/login").replace(f"user:{SECRET}", SECRET))
    basic.write_text(f"{SECRET}-no-colon\n")
    assert cli.main(["check", "--json", "--config", str(config_file)]) == cli.EXIT_CONFIG
    out, err = capsys.readouterr()
    assert len(json.loads(out)["errors"]) == 2 and SECRET not in out + err


def test_a_malformed_secret_from_the_environment_is_not_quoted_back() -> None:
    text = "socket_maps:\n  n: {target: http://h/, oidc_auth: {client_id: c, token_endpoint: 'http://i/'}}\n"
    variable = "PFXHTTP_SOCKET_MAPS__N__OIDC_AUTH__CLIENT_SECRET"
    assert errors(text, {variable: f"'{SECRET}"}) == [
        f"environment variable {variable}: at key socket_maps.n.oidc_auth.client_secret: the value starts with a "
        "quote but is not one quoted YAML string"
    ]


def test_the_schema_gives_no_secret_example() -> None:
    def walk(node: object, key: str = "") -> list[str]:
        found = []
        if isinstance(node, dict):
            if ("secret" in key or "basic_auth" in key or key == "credentials") and (
                "default" in node or "examples" in node
            ):
                found.append(key)
            for name, child in node.items():
                found += walk(child, name)
        elif isinstance(node, list):
            for child in node:
                found += walk(child, key)
        return found

    assert walk(config_schema()) == []
    assert "examples" not in schema_json()


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
