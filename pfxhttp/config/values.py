"""Parsers for the single values of a pfxhttp configuration: durations, headers, credentials, names, target
URLs, policy error actions.

Every function here is pure and raises :class:`~pfxhttp.errors.ConfigError` with a message only; the loader
adds the file location and key path, because only it knows where the value stood.
"""

from __future__ import annotations

import difflib
import math
import re
import urllib.parse

from pfxhttp.config.model import BasicAuth
from pfxhttp.errors import ConfigError
from pfxhttp.protocol.policy import MAX_ACTION_LENGTH

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
        # The text is not quoted: a header written without its name may be a bare token (a secret).
        raise ConfigError("custom header must have the form 'Name: value' (this one has no ':')")
    name = name.strip()
    if not _TOKEN.fullmatch(name):
        raise ConfigError(f"custom header name {name!r} is not a valid HTTP field name (RFC 9110 token)")
    if any(c in value for c in "\r\n\x00"):
        raise ConfigError(f"custom header {name!r} has CR, LF or NUL in its value")
    return name, value.strip(" \t")


def parse_basic_auth(text: str, what: str = "http_auth_basic") -> BasicAuth:
    """Parse upstream's ``http_auth_basic: "user:password"`` (split at the first ``:``, RFC 7617 2).

    ``what`` names the key in messages (``server.metrics.basic_auth`` uses the same form).
    """
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise ConfigError(f"{what} must have the form 'user:password'")
    # RFC 7617 section 2: user-id and password must not contain control characters.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ConfigError(f"{what} must not contain control characters")
    return BasicAuth(username=username, password=password)


def check_target(url: str) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host.

    The URL may hold template expressions (``{{ key }}``, ``{{ .Key }}``, ``{{ attrs.sender }}``) in its path
    and query; it is then checked with every expression replaced by a placeholder. Scheme, host and port must
    be literal: a key must never choose which server is asked (the backend layer compiles the templates and
    percent-encodes what they yield as one path segment).

    Messages quote the target without its userinfo, query and fragment (:func:`shown_target`): API keys live
    there, and a config error is printed and logged.
    """
    if not url:
        raise ConfigError("target must be an http:// or https:// URL")
    subject = _subject("target", url)
    if "{%" in url or "{#" in url:
        raise ConfigError(f"{subject}: only {{{{ expression }}}} templates are allowed in a URL")
    start = url.find("{{")
    if start < 0:
        return _check_url(url, url)
    if not _LITERAL_ORIGIN.match(url[:start]):
        raise ConfigError(
            f"{subject}: scheme, host and port must be written literally; a template expression "
            "may only follow them, in the path or query (after the '/' or '?' that ends the host)"
        )
    if _TEMPLATE_EXPRESSION.sub("", url).find("{{") >= 0:
        raise ConfigError(f"{subject} has an unclosed template expression ('{{{{' without '}}}}')")
    return _check_url(_TEMPLATE_EXPRESSION.sub(_PLACEHOLDER, url), url)


# A template may start only after "scheme://authority" and the "/", "?" or "#" that ends the authority.
_LITERAL_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#{]+[/?#]")
_TEMPLATE_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_PLACEHOLDER = "x"  # what an expression yields at most after percent-encoding, for the syntax check
# scheme://, then userinfo (through the authority's last '@'), then the rest up to the query or fragment.
_URL_PARTS = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#]*@)?([^?#]*)(.?)", re.DOTALL)


def shown_target(url: str) -> str | None:
    """``url`` as a message may quote it: scheme, host, port and path; userinfo and the query or fragment
    become ``...`` (credentials and API keys live there). None if it does not even start with a scheme."""
    match = _URL_PARTS.match(url)
    if match is None:
        return None
    scheme, userinfo, rest, cut = match.groups()
    return f"{scheme}{'...@' if userinfo else ''}{rest}{cut + '...' if cut else ''}"


def _subject(what: str, url: str) -> str:
    shown = shown_target(url) if url else None
    return f"{what} {shown!r}" if shown is not None else what


def _check_url(url: str, shown: str, what: str = "target") -> str:
    """Check ``url`` (the target with templates replaced); messages name ``what`` and quote ``shown``, the URL
    as written, without its secrets (:func:`shown_target`); an empty ``shown`` quotes nothing."""
    subject = _subject(what, shown)
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise ConfigError(f"{subject} must be an http:// or https:// URL without blanks")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(f"{subject} must use http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"{subject} has no host")
    try:
        parts.port  # noqa: B018 - evaluated for its ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{subject} has an invalid port") from exc
    return shown or url


def check_endpoint(url: str, what: str) -> str:
    """An absolute http(s) URL of a token or discovery endpoint (``what`` names the key), checked as
    :func:`check_target` checks a target but without templates: it is fetched as written.

    Messages never quote it: an endpoint URL may carry credentials (``https://user:pass@host/``) and a
    config error is printed and logged.
    """
    if not url:
        raise ConfigError(f"{what} must be an http:// or https:// URL")
    if "{{" in url or "{%" in url:
        raise ConfigError(f"{what} is fetched as written: it takes no template expressions")
    _check_url(url, "", what)
    return url


# access(5) actions a policy service may answer when its backend fails: each defers the mail or lets the
# other restrictions decide. OK would accept mail the policy never checked, REJECT/5NN bounce it, DISCARD
# loses it, HOLD parks it until someone looks: a backend fault must never do any of that.
_ERROR_ACTIONS = ("DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT", "DUNNO")
_REFUSED_ACTIONS = {
    "OK": "would accept mail the policy never checked",
    "REJECT": "would bounce mail",
    "DISCARD": "would lose mail",
    "HOLD": "would hold mail in the queue until an operator releases it",
}
_FOUR_NN = re.compile(r"4\d\d")


def check_error_action(text: str) -> str:
    """Return the policy ``error_action`` without surrounding blanks, or raise if it could lose mail.

    The first word must be DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT, DUNNO or a 4NN code (access(5); Postfix
    compares action names case-insensitively). CR, LF and NUL would inject lines into the policy reply.
    """
    action = text.strip()
    if not action:
        raise ConfigError("error_action must not be empty (Postfix reads an empty action as OK)")
    if any(c in action for c in "\r\n\x00"):
        raise ConfigError("error_action must be one line without CR, LF or NUL")
    try:
        size = len(action.encode("utf-8"))
    except UnicodeEncodeError:
        raise ConfigError("error_action must be valid Unicode text (no lone surrogates)") from None
    if size > MAX_ACTION_LENGTH:
        raise ConfigError(f"error_action is longer than {MAX_ACTION_LENGTH} bytes")
    word = action.split(None, 1)[0]
    if word.upper() in _ERROR_ACTIONS or _FOUR_NN.fullmatch(word):
        return action
    if word[:1] == "5" and word.isdigit():
        why = "would bounce mail"
    else:
        why = _REFUSED_ACTIONS.get(word.upper(), "is not an action that defers or stays neutral")
    raise ConfigError(
        f"error_action {word!r} {why}; a backend fault must answer DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT, "
        "a 4NN code or DUNNO",
        suggestion=suggest_word(word.upper(), _ERROR_ACTIONS),
    )


def suggest_word(word: str, choices: tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
    return close[0] if close else None


def check_attribute_name(name: str) -> str:
    """A policy attribute name as Postfix sends it: ``name=value`` lines, so no ``=``, blanks or controls."""
    if not name:
        raise ConfigError("an attribute name must not be empty")
    if any(c == "=" or c.isspace() or ord(c) < 0x20 for c in name):
        raise ConfigError(f"attribute name {name!r} must not contain '=', blanks or control characters")
    return name


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


# systemd.socket(5) FileDescriptorName=: at most 255 characters of printable ASCII without ':', because ':'
# separates the names in $LISTEN_FDNAMES (sd_listen_fds(3)). systemd also takes an empty name; we do not,
# since an empty name could never select one listener.
MAX_FD_NAME = 255
FD_NAME_SYNTAX = "1 to 255 printable ASCII characters without ':' (systemd's FileDescriptorName=)"


def check_fd_name(name: str) -> str:
    """A listener's ``systemd_socket_name``: a name systemd accepts in ``FileDescriptorName=``."""
    if not name or len(name) > MAX_FD_NAME or any(not 0x20 <= ord(c) <= 0x7E or c == ":" for c in name):
        raise ConfigError(f"systemd_socket_name {name!r} must be {FD_NAME_SYNTAX}")
    return name


# A user or group: a name as passwd(5) / group(5) hold them (no ':' separator, no '/', no blanks or control
# characters, not starting with '-', which tools would read as an option) or a numeric id. It is resolved
# only when privileges are dropped: that is I/O, not configuration parsing.
_ACCOUNT = re.compile(r"[^\s:/\x00-\x1f\x7f-][^\s:/\x00-\x1f\x7f]*")
ACCOUNT_PATTERN = "^" + _ACCOUNT.pattern + "$"


def check_account(name: str, what: str) -> str:
    """A ``run_as_user`` / ``run_as_group`` value: a user or group name, or a numeric id."""
    if not _ACCOUNT.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r} must be a name or a numeric id: no blanks, ':', '/' or control characters, "
            "and not starting with '-'"
        )
    return name


def check_url_path(path: str) -> str:
    """The HTTP path the metrics are served at: an origin-form path (RFC 9112 3.2.1) without query."""
    if not path.startswith("/"):
        raise ConfigError(f"path {path!r} must start with '/'")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F or c in "?#" for c in path):
        raise ConfigError(f"path {path!r} must not contain blanks, control characters, '?' or '#'")
    return path
