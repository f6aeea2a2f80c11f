"""Secrets read from files at load time: ``*_file`` keys, private keys, and the token store's directory.

The loader reads these while it parses, in the same worker thread that reads the YAML file, so a reload
(SIGHUP) reads them again and picks up a rotated secret. Every message names the file and never its content:
a config error is printed by ``pfxhttp check`` and logged by the daemon.

Secret files are small regular files (systemd credentials, Kubernetes secrets, a file from a vault agent).
Anything else (a FIFO, a device, something huge) is refused before it is read, because reading it could
block the load or exhaust memory.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yaml.nodes import Node

from pfxhttp.config.yamlnodes import Problems, as_str
from pfxhttp.errors import ConfigError

MAX_SECRET_FILE = 64 * 1024  # far above any password, client secret or PEM private key (RSA 16384: ~13 KiB)
MIN_RSA_BITS = 2048  # RFC 7518 section 3.3: RS256 keys must be 2048 bits or larger
KEY_TYPES = "RSA, EC (P-256, P-384 or P-521), Ed25519 or Ed448"
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}  # RFC 7518 section 3.4


@dataclass(frozen=True, slots=True)
class SecretFile:
    data: bytes
    mode: int  # permission bits, for the warning about files every user can read


def read_secret_file(filename: str) -> SecretFile:
    """The bytes of a small regular file; ConfigError (naming the file only) when it cannot be used."""
    try:
        info = os.stat(filename)  # before opening: opening a FIFO would block until a writer comes
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{filename} is not a regular file")
        if info.st_size > MAX_SECRET_FILE:
            raise ConfigError(f"{filename} is larger than {MAX_SECRET_FILE // 1024} KiB: not a secret file")
        with open(filename, "rb") as file:
            data = file.read(MAX_SECRET_FILE + 1)
    except FileNotFoundError:
        raise ConfigError(f"the file {filename} does not exist") from None
    except PermissionError:
        raise ConfigError(f"cannot read the file {filename}: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file {filename}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_SECRET_FILE:  # it grew after stat
        raise ConfigError(f"{filename} is larger than {MAX_SECRET_FILE // 1024} KiB: not a secret file")
    return SecretFile(data, stat.S_IMODE(info.st_mode))


def secret_text(data: bytes, filename: str) -> str:
    """A secret file's text without ONE trailing newline (LF or CR LF), which editors and ``echo`` add and
    which is never part of a password. Further trailing blanks are kept: they may be."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{filename} is not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ConfigError(f"{filename} is empty")
    return text


def _file_name(node: Node, path: str, problems: Problems) -> str | None:
    """The file name a ``*_file`` key gives; None when null or empty (not written)."""
    return as_str(node, path, problems) or None


def _warn_if_public(secret: SecretFile, filename: str, node: Node, path: str, problems: Problems) -> None:
    if secret.mode & stat.S_IROTH:
        problems.warn(
            node,
            path,
            f"{filename} holds a secret and every user may read it (mode {secret.mode:04o}): chmod o-r it",
        )


def read_secret(node: Node, path: str, problems: Problems) -> str | None:
    """The secret in the file a ``*_file`` key names, one trailing newline stripped; None after an error
    (reported at the key's value) or when the key gives no file name."""
    filename = _file_name(node, path, problems)
    if filename is None:
        return None
    try:
        secret = read_secret_file(filename)
        text = secret_text(secret.data, filename)
    except ConfigError as exc:
        problems.wrap(node, path, exc)
        return None
    _warn_if_public(secret, filename, node, path, problems)
    return text


def read_private_key(node: Node, path: str, problems: Problems) -> str | None:
    """The PEM text of the private key file a key names, after checking that it holds an unencrypted private
    key of a type JWT client authentication can sign with; None after an error or without a file name."""
    filename = _file_name(node, path, problems)
    if filename is None:
        return None
    try:
        secret = read_secret_file(filename)
        load_signing_key(secret.data, filename)  # checked now: a bad key is a config error at load
        pem = secret.data.decode("ascii")  # PEM is base64 between ASCII armour lines
    except (ConfigError, UnicodeDecodeError) as exc:
        message = exc.message if isinstance(exc, ConfigError) else f"{filename} is not a PEM file"
        problems.error(node, path, message)
        return None
    _warn_if_public(secret, filename, node, path, problems)
    return pem


def load_signing_key(data: bytes, filename: str) -> tuple[Any, str]:
    """The private key in ``data`` and the JWS algorithm private_key_jwt signs with (RFC 7523; RS256, ES256,
    ES384, ES512 by curve, EdDSA: RFC 7518, RFC 8037). ConfigError unless it is an unencrypted PEM private key
    of such a type; the messages name the file and the key type, never a byte of the key."""
    # Imported here: only configs with a private key need it, and it is a large import (~7 MB).
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's answer to an encrypted key without a password
        raise ConfigError(
            f"{filename} holds an encrypted private key: pfxhttp needs it unencrypted (protect the file "
            "with its mode instead)"
        ) from None
    except UnsupportedAlgorithm:
        raise ConfigError(f"{filename} holds a private key of an unsupported type: use {KEY_TYPES}") from None
    except ValueError:  # not PEM, or PEM that is not a private key; the library's text is not repeated
        raise ConfigError(f"{filename} holds no PEM private key ({KEY_TYPES})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(
                f"{filename} holds an RSA key of {key.key_size} bits: RS256 needs at least {MIN_RSA_BITS}"
            )
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise ConfigError(f"{filename} holds an EC key on {key.curve.name}: use P-256, P-384 or P-521")
        return key, algorithm
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key, "EdDSA"
    raise ConfigError(
        f"{filename} holds a {type(key).__name__.removesuffix('PrivateKey')} key: use {KEY_TYPES}"
    )


def check_db_path(text: str) -> str:
    """``server.jwt_db_path``: a file path whose directory exists (the file itself is created at start)."""
    path = Path(text)
    if path.is_dir():
        raise ConfigError(f"{text} is a directory: give the path of the database file in it")
    directory = path.parent
    if not directory.is_dir():
        raise ConfigError(f"the directory {directory} of {text} does not exist")
    return text
