"""A local mail controller REST API, the backend of etc/examples/mailcontroller.yml in tests.

Implements the contract written in that example's header: accounts and aliases identified by their full,
lower-case address, ``GET /mail/alias/{id}/``, ``GET /mail/account/{id}/`` and ``GET /mail/account/?domain=D``
(a list), JSON everywhere, 404 for an unknown id, 401 without the right ``Authorization: Token ...`` header,
405 for any method but GET. Served by ``pfxhttp.demo.httpd.serve_http``, as tests/conftest.py's Backend::

    controller = MailController.seeded()
    port = await nursery.start(serve_http, controller)

``SEED_ACCOUNTS`` / ``SEED_ALIASES`` are the data the example tests are written against.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from pfxhttp.demo.httpd import HttpReply, HttpRequest

DEFAULT_TOKEN = "change-me"  # the token written in the example file


@dataclass(frozen=True)
class Account:
    name: str
    domain: str
    password: str = "{BLF-CRYPT}$2y$05$not.a.real.hash"
    spoofing_whitelist: str = ""
    submission_disabled: bool = False

    @property
    def id(self) -> str:
        return f"{self.name}@{self.domain}".lower()

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, **asdict(self)}


@dataclass(frozen=True)
class Alias:
    name: str
    domain: str
    to: str

    @property
    def id(self) -> str:
        return f"{self.name}@{self.domain}".lower()

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, **asdict(self)}


SEED_ACCOUNTS = (
    Account("alice", "example.com"),
    # Entries in mixed case and spacing, an address, a domain with and without "@".
    Account("bob", "example.com", spoofing_whitelist=" Sales@Example.COM, @example.org ,example.net,"),
    Account("carol", "example.com", spoofing_whitelist="*"),
    Account("dave", "example.com", spoofing_whitelist="*", submission_disabled=True),
    Account("erin", "example.net"),
)
SEED_ALIASES = (
    Alias("postmaster", "example.com", "alice@example.com"),
    Alias("team", "example.com", "alice@example.com,bob@example.com,carol@example.com"),
    # example.org has aliases but no accounts: an alias domain, not a virtual mailbox domain.
    Alias("info", "example.org", "bob@example.com"),
)


def _json(document: object, status: int = 200) -> HttpReply:
    return HttpReply(status, orjson.dumps(document))


NOT_FOUND = _json({"detail": "Not found."}, 404)


@dataclass
class MailController:
    """The API's request handler; records every request it gets."""

    accounts: dict[str, Account]
    aliases: dict[str, Alias]
    token: str = DEFAULT_TOKEN
    requests: list[HttpRequest] = field(default_factory=list)

    @classmethod
    def seeded(
        cls, accounts: Iterable[Account] = SEED_ACCOUNTS, aliases: Iterable[Alias] = SEED_ALIASES
    ) -> MailController:
        return cls({a.id: a for a in accounts}, {a.id: a for a in aliases})

    async def __call__(self, request: HttpRequest) -> HttpReply:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Token {self.token}":
            return _json({"detail": "Authentication credentials were not provided."}, 401)
        if request.method != "GET":
            return _json({"detail": f'Method "{request.method}" not allowed.'}, 405)
        url = urlsplit(request.path)
        if url.path == "/mail/account/":
            domain = parse_qs(url.query).get("domain", [None])[0]
            found = [a for a in self.accounts.values() if domain is None or a.domain == domain.lower()]
            return _json([a.to_json() for a in found])
        for prefix, table in (("/mail/account/", self.accounts), ("/mail/alias/", self.aliases)):
            ident = _resource_id(url.path, prefix)
            if ident is not None:
                record = table.get(ident.lower())
                return NOT_FOUND if record is None else _json(record.to_json())
        return NOT_FOUND

    def paths(self) -> list[str]:
        """The request targets received so far (query strings included)."""
        return [r.path for r in self.requests]


def _resource_id(path: str, prefix: str) -> str | None:
    """``PREFIX{id}/`` -> the decoded id (one encoded segment: a raw "/" inside means no such resource)."""
    if not path.startswith(prefix) or not path.endswith("/"):
        return None
    segment = path[len(prefix) : -1]
    if "/" in segment:
        return None
    return unquote(segment)
