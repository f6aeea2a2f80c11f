"""Backend-authentication secrets in the configuration: private key files of every type, the *_file secret keys
(permissions, rotation, unreadable files), and that no secret ever shows in a message, repr, report or schema
example."""

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

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from pfxhttp import cli
from pfxhttp.config import (
    BasicAuth,
    OidcAuthMethod,
    Secret,
    load_config,
)
from pfxhttp.config.schema import config_schema, schema_json
from tests.test_config_auth import LISTEN, SECRET, errors, parse, secret_file, secrets


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
