"""Parsers for the single values of a pfxhttp configuration: durations, headers, credentials, names.

Every function here is pure and raises :class:`~pfxhttp.errors.ConfigError` with a message only; the loader
adds the file location and key path, because only it knows where the value stood.
"""

from __future__ import annotations

import math
import re
import urllib.parse

from pfxhttp.config.model import BasicAuth
from pfxhttp.errors import ConfigError

DURATION_SYNTAX = (
    "a Go duration such as 500ms, 10s, 1m30s or 1h2m3.5s (units ns, us, ms, s, m, h), "
    "or a plain number meaning seconds"
)

# Seconds per unit, as Go's time.ParseDuration spells them (both micro signs included, as Go accepts them).
_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# One "<number><unit>" group; Go allows "1.5h", ".5s" and "1.s" but never a lone ".".
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")

# RFC 9110 section 5.6.2: a field name is a token of tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_duration(value: object) -> float:
    """Return ``value`` as seconds.

    Strings use Go's ``time.ParseDuration`` syntax (``"1h2m3.5s"``, ``"500ms"``, ``"250us"``, ``"10ns"``, a
    bare ``"0"``). A bare int or float means seconds (upstream pfxhttp would read a bare YAML integer as
    nanoseconds, which is never what anyone means). Negative, infinite and NaN values are refused.
    """
    if isinstance(value, bool):  # bool is an int subclass; ``timeout: true`` is a mistake, not 1 second
        raise ConfigError(f"invalid duration {value!r}: expected {DURATION_SYNTAX}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_go_duration(value.strip())
    else:
        raise ConfigError(f"invalid duration {value!r}: expected {DURATION_SYNTAX}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ConfigError(f"invalid duration {value!r}: expected {DURATION_SYNTAX}")
    if seconds < 0:
        raise ConfigError(f"invalid duration {value!r}: must not be negative")
    return seconds


def _parse_go_duration(text: str) -> float:
    body = text[1:] if text[:1] in "+-" else text
    negative = text.startswith("-")
    if body == "0":  # Go's one unit-less form
        return 0.0
    if not body:
        raise ConfigError(f"invalid duration {text!r}: expected {DURATION_SYNTAX}")
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise ConfigError(f"invalid duration {text!r}: expected {DURATION_SYNTAX}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return -total if negative else total


def parse_header(text: str) -> tuple[str, str]:
    """Split a ``"Name: value"`` custom header; the name must be an RFC 9110 token.

    CR, LF and NUL are refused in the value because they would let a config smuggle extra header lines
    (RFC 9110 section 5.5); leading and trailing blanks of the value are not part of it (RFC 9110 5.5).
    """
    name, sep, value = text.partition(":")
    if not sep:
        raise ConfigError(f"custom header {text!r} must have the form 'Name: value'")
    name = name.strip()
    if not _TOKEN.fullmatch(name):
        raise ConfigError(f"custom header name {name!r} is not a valid HTTP field name (RFC 9110 token)")
    if any(c in value for c in "\r\n\x00"):
        raise ConfigError(f"custom header {name!r} has CR, LF or NUL in its value")
    return name, value.strip(" \t")


def parse_basic_auth(text: str) -> BasicAuth:
    """Parse upstream's ``http_auth_basic: "user:password"`` (split at the first ``:``, RFC 7617 2)."""
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise ConfigError("http_auth_basic must have the form 'user:password'")
    # RFC 7617 section 2: user-id and password must not contain control characters.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ConfigError("http_auth_basic must not contain control characters")
    return BasicAuth(username=username, password=password)


def check_target(url: str) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host; the backend POSTs to it as written."""
    if not url or any(c.isspace() or ord(c) < 0x20 for c in url):
        raise ConfigError(f"target {url!r} must be an http:// or https:// URL without blanks")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(f"target {url!r} must use http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"target {url!r} has no host")
    try:
        parts.port  # noqa: B018 - evaluated for its ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"target {url!r} has an invalid port") from exc
    return url


def check_map_name(name: str, what: str = "name") -> str:
    """Refuse names Postfix could never send.

    A socketmap request is ``NAME SP KEY`` and Postfix's ``socketmap:`` table syntax ends the name at the last
    ``:`` (socketmap_table(5)), so a name holds neither blanks nor ``:``.
    """
    if not name:
        raise ConfigError(f"{what} must not be empty")
    if any(c.isspace() or c == ":" or ord(c) < 0x20 for c in name):
        raise ConfigError(f"{what} {name!r} must not contain blanks, control characters or ':'")
    return name


def parse_octal_mode(text: str) -> int:
    """Read a unix socket mode; always octal (``0660``, ``660`` and ``0o660`` all mean rw-rw----)."""
    digits = text.strip()
    if digits[:2] in ("0o", "0O"):
        digits = digits[2:]
    if not digits or any(c not in "01234567" for c in digits):
        raise ConfigError(f'mode {text!r} must be an octal permission such as "0660"')
    mode = int(digits, 8)
    if mode > 0o7777:
        raise ConfigError(f"mode {text!r} is larger than 07777")
    return mode
