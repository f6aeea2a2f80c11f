"""The demo HTTP backend: a mail directory in the shape of a mail controller's Basic JSON API document.

The document maps each domain to its accounts and aliases::

    {"example.com": {"account": [{"name": "alice", "password": "$6$..."}],
                     "alias": [{"name": "office", "to": "alice@example.com,bob@example.com"}]}}

Endpoints (POST, JSON body ``{"key": ...}`` for lookups, the policy attribute map for the policy):

- ``/api/v1/aliases``   -> 200 ``{"data": {"result": "<to>"}}`` or 404 (virtual_alias_maps)
- ``/api/v1/mailboxes`` -> 200 ``{"data": {"result": "domain/user/"}}`` or 200 ``{"data": {}}`` (virtual_mailbox_maps)
- ``/api/v1/domains``   -> 200 ``{"data": {"result": "<domain>"}}`` or 404 (virtual_mailbox_domains)
- ``/api/v1/policy/sender-login`` -> ``{"policy": {"result": "DUNNO" | "REJECT 5.7.1 ..."}}``: an authenticated
  user may send as its own address or as an alias that delivers to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from pfxhttp.demo.httpd import HttpReply, HttpRequest

_NOT_FOUND = HttpReply(404, b'{"error":"not found"}')


@dataclass(frozen=True, slots=True)
class MailDirectory:
    accounts: frozenset[str]  # full addresses
    aliases: dict[str, tuple[str, ...]]  # alias address -> targets
    domains: frozenset[str]

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> MailDirectory:
        accounts: set[str] = set()
        aliases: dict[str, tuple[str, ...]] = {}
        for domain, entries in document.items():
            for account in entries.get("account", []):
                accounts.add(f"{account['name']}@{domain}".lower())
            for alias in entries.get("alias", []):
                targets = tuple(t.strip() for t in alias["to"].split(",") if t.strip())
                aliases[f"{alias['name']}@{domain}".lower()] = targets
        return cls(frozenset(accounts), aliases, frozenset(d.lower() for d in document))

    @classmethod
    def bundled(cls) -> MailDirectory:
        text = resources.files("pfxhttp.demo").joinpath("maildir.json").read_text(encoding="utf-8")
        return cls.from_document(json.loads(text))

    def may_send_as(self, user: str, sender: str) -> bool:
        user, sender = user.lower(), sender.lower()
        return sender == user or user in self.aliases.get(sender, ())


def _json(document: Any, status: int = 200) -> HttpReply:
    return HttpReply(status, orjson.dumps(document))


class DemoBackend:
    """Request handler for ``pfxhttp.demo.httpd.serve_http``; counts requests for tests."""

    def __init__(self, directory: MailDirectory | None = None) -> None:
        self.directory = directory or MailDirectory.bundled()
        self.requests = 0

    async def __call__(self, request: HttpRequest) -> HttpReply:
        self.requests += 1
        if request.method != "POST":
            return HttpReply(405, b'{"error":"method not allowed"}')
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return HttpReply(400, b'{"error":"invalid JSON"}')
        if not isinstance(body, dict):
            return HttpReply(400, b'{"error":"expected an object"}')
        route = request.path.split("?", 1)[0]
        if route == "/api/v1/policy/sender-login":
            return self._sender_login(body)
        key = str(body.get("key", "")).strip().lower()
        directory = self.directory
        if route == "/api/v1/aliases":
            targets = directory.aliases.get(key)
            return _json({"data": {"result": ",".join(targets)}}) if targets else _NOT_FOUND
        if route == "/api/v1/mailboxes":
            if key in directory.accounts:
                user, domain = key.split("@", 1)
                return _json({"data": {"result": f"{domain}/{user}/"}})
            return _json({"data": {}})
        if route == "/api/v1/domains":
            return _json({"data": {"result": key}}) if key in directory.domains else _NOT_FOUND
        return _NOT_FOUND

    def _sender_login(self, attrs: dict[str, Any]) -> HttpReply:
        user = str(attrs.get("sasl_username", ""))
        sender = str(attrs.get("sender", ""))
        if not user or not sender:
            action = "DUNNO"  # not authenticated, or a bounce (<>): other restrictions decide
        elif self.directory.may_send_as(user, sender):
            action = "DUNNO"
        else:
            action = f"REJECT 5.7.1 Sender address <{sender}> not owned by user {user}"
        return _json({"policy": {"result": action}})
