"""The names every template of an entry sees for one lookup, and the hostile sample used to check them at load.

Payload, URL (target/query) and value templates share one context per lookup: ``key`` / ``Key`` (socket maps:
the lookup key; policy services: the attribute map), ``name`` (the entry name) and ``attrs`` (the policy
attributes; empty for socket maps). ``{{ .Key }}`` is upstream's Go-template spelling of ``Key``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pfxhttp.config.model import EntryConfig, EntryKind

# `{{ .Key }}`, `{{- .Key -}}`, `{{.Key}}`: upstream's Go text/template spelling of the one field it offers.
GO_KEY = re.compile(r"\{\{(-?)\s*\.Key\s*(-?)\}\}")


def jinja_source(source: str) -> str:
    """Rewrite upstream's ``{{ .Key }}`` to the Jinja name ``Key``."""
    return GO_KEY.sub(r"{{\1 Key \2}}", source)


class PolicyAttributes(dict[str, str]):
    """The policy attribute map as templates see it: an attribute Postfix did not send reads as "" (Postfix's
    own meaning of an absent attribute), so ``{{ attrs.sasl_username }}`` works for unauthenticated clients
    and across Postfix versions. A misspelt top-level name (``{{ atrs }}``) is still an error at load."""

    __slots__ = ()

    def __missing__(self, key: str) -> str:
        return ""


# Socket maps have no attributes; one shared empty map (templates run sandboxed and immutable: none can add).
_NO_ATTRIBUTES = PolicyAttributes()


def lookup_context(
    entry: EntryConfig, key: str = "", attrs: Mapping[str, str] | Iterable[tuple[str, str]] = ()
) -> dict[str, Any]:
    """The template context of one lookup (socket maps: ``key``; policy services: ``attrs``)."""
    if entry.kind is EntryKind.SOCKET_MAP:
        return {"Key": key, "key": key, "name": entry.name, "attrs": _NO_ATTRIBUTES}
    view = attrs if isinstance(attrs, PolicyAttributes) else PolicyAttributes(attrs)
    return {"Key": view, "key": view, "name": entry.name, "attrs": view}


# Sample values used to prove at load time that templates render valid JSON and URLs. They contain the
# characters that break naive templates, so a template that survives them is safe for any value.
SAMPLE_KEY = 'sample "quoted" \\ <key>@example.com'
SAMPLE_ATTRS = {
    "request": "smtpd_access_policy",
    "protocol_state": "RCPT",
    "protocol_name": "ESMTP",
    "client_address": "192.0.2.1",
    "client_name": "client.example.com",
    "helo_name": "helo.example.com",
    "sender": 'a"b@example.com',
    "recipient": "c\\d@example.com",
    "sasl_username": "user@example.com",
}


def sample_context(entry: EntryConfig) -> dict[str, Any]:
    return lookup_context(entry, SAMPLE_KEY, SAMPLE_ATTRS)
