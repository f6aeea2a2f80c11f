"""Pieces of JSON Schema (draft 2020-12) for the values of pfxhttp.yml: patterns, small builders, and the
:class:`Doc` that pairs a key's description with its schema.

Patterns are ECMA-262 regular expressions, as JSON Schema requires; each mirrors a check of
:mod:`pfxhttp.config.values` as far as a regular expression can, and names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pfxhttp.config.auth import SCOPE_PATTERN
from pfxhttp.config.values import MAX_FD_NAME

# Go's time.ParseDuration syntax (values.parse_duration), or a plain number of seconds.
GO_DURATION = r"^\+?(0|((\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)$"
ENTRY_NAME = r"^[^\s:\x00-\x1f]+$"  # values.check_map_name: what Postfix can send as a map name
HEADER = r"^[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*:[^\r\n\x00]*$"  # RFC 9110 token, then the value
BASIC_AUTH = r"^[^:\x00-\x1f\x7f]+:[^\x00-\x1f\x7f]*$"  # RFC 7617: user-id ':' password, no controls
TARGET = r"^[Hh][Tt][Tt][Pp][Ss]?://"
FD_NAME = "^[ -9;-~]{1,%d}$" % MAX_FD_NAME  # printable ASCII except ':' (0x3a)  # noqa: UP031
URL_PATH = r"^/[^\s?#\x00-\x1f\x7f]*$"
ATTRIBUTE = r"^[^=\s\x00-\x1f]+$"
OCTAL_MODE = r"^(0[oO]|0)?[0-7]{1,4}$"
SCOPE = f"^{SCOPE_PATTERN}$"  # auth.SCOPE_PATTERN: one RFC 6749 scope-token
SCOPES = rf"^[ \t]*({SCOPE_PATTERN}[ \t]*)*$"  # scope-tokens separated by blanks
# values.check_error_action: the first word defers or stays neutral; never OK, REJECT, 5NN, DISCARD, HOLD.
ERROR_ACTION = (
    r"^[ \t]*([Dd][Ee][Ff][Ee][Rr](_[Ii][Ff]_([Pp][Ee][Rr][Mm][Ii][Tt]|[Rr][Ee][Jj][Ee][Cc][Tt]))?"
    r"|[Dd][Uu][Nn][Nn][Oo]|4[0-9][0-9])([ \t][^\r\n\x00]*)?$"
)


@dataclass(frozen=True, slots=True)
class Doc:
    """One key's description and the JSON Schema of its value (of a block: extra keywords, such as
    required keys); ``nullable``: null means "not set" there."""

    text: str
    schema: Mapping[str, Any] = field(default_factory=dict)
    nullable: bool = True


def go_duration(seconds: float) -> str:
    """Seconds in Go's notation, as a schema default: 90.0 -> ``1m30s``, 3600.0 -> ``1h``."""
    whole = round(seconds)
    if whole != seconds or whole == 0:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)


def duration(
    default: float | None = None, *, maximum: float | None = None, positive: bool = False
) -> dict[str, Any]:
    number: dict[str, Any] = {"type": "number", "exclusiveMinimum" if positive else "minimum": 0}
    if maximum is not None:
        number["maximum"] = maximum
    schema: dict[str, Any] = {"anyOf": [{"type": "string", "pattern": GO_DURATION}, number]}
    if default is not None:
        schema["default"] = go_duration(default)
    return schema


def integer(low: int, high: int, default: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
    if default is not None:
        schema["default"] = default
    return schema


def boolean(default: bool = False) -> dict[str, Any]:
    return {"type": "boolean", "default": default}


def string(pattern: str | None = None, **more: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", **more}
    if pattern is not None:
        schema["pattern"] = pattern
    return schema


def _literal(char: str) -> str:
    # Not re.escape: it escapes '-' too, which ECMA-262 in unicode mode refuses outside a class.
    return "\\" + char if char in ".+*?^$()[]{}|\\" else char


def any_case_pattern(values: list[str]) -> str:
    """A pattern matching any of ``values`` in any letter case (ECMA-262 has no inline case-insensitive flag)."""
    spelled = [
        "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else _literal(c) for c in v) for v in values
    ]
    return f"^({'|'.join(spelled)})$"


def any_case(values: list[str], default: str | None = None) -> dict[str, Any]:
    """An enum the loader matches in any letter case: the enum for editors' completion, a pattern for the
    rest."""
    schema: dict[str, Any] = {
        "anyOf": [{"enum": values}, {"type": "string", "pattern": any_case_pattern(values)}]
    }
    if default is not None:
        schema["default"] = default
    return schema


def status_codes(default: int, *, allow_empty: bool) -> dict[str, Any]:
    code = integer(100, 599)
    return {
        "anyOf": [
            code,
            {"type": "array", "items": code, "uniqueItems": True, "minItems": 0 if allow_empty else 1},
        ],
        "default": default,
    }


def one_or_list(item: Mapping[str, Any]) -> dict[str, Any]:
    """What upstream's decoder lifts: one value or a list of them."""
    return {"anyOf": [item, {"type": "array", "items": item}]}
