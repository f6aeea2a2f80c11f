"""What every token fetcher, the token store and the token source share: the Token and the fetcher protocol.

A Token never shows its secrets in ``repr``; logs name a token by its fetcher's ``description`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx

# Renew this many seconds before expiry; tokens that live under SHORT_LIFETIME are renewed at half life.
RENEW_MARGIN = 30.0
SHORT_LIFETIME = 60.0


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token and what is known of its lifetime (unix seconds)."""

    access: str
    expires_at: float
    obtained_at: float
    refresh: str | None = None  # a refresh token, when the endpoint gave one

    def __repr__(self) -> str:
        return f"Token(expires_at={self.expires_at:.0f}, obtained_at={self.obtained_at:.0f}, <redacted>)"

    @property
    def renew_at(self) -> float:
        """When to start getting the next token: RENEW_MARGIN before expiry, or at half the lifetime of a
        token that lives under SHORT_LIFETIME seconds."""
        lifetime = self.expires_at - self.obtained_at
        if lifetime < SHORT_LIFETIME:
            return self.obtained_at + max(lifetime, 0.0) / 2
        return self.expires_at - RENEW_MARGIN

    def usable(self, now: float) -> bool:
        """Still accepted by the backend (not expired)."""
        return now < self.expires_at

    def sendable(self) -> bool:
        """The access token can go into an HTTP field value as it is (RFC 9110 section 5.5): printable ASCII.
        A CR or LF in it would inject header fields into every backend request."""
        return bool(self.access) and self.access.isascii() and self.access.isprintable()


class TokenFetcher(Protocol):
    """Gets a token from one token endpoint for one client; one per distinct auth configuration."""

    @property
    def store_key(self) -> str:
        """Identifies the token in the store: endpoint, client and scopes, and a digest of the credentials
        (so a changed password never reuses an old token); never a secret in clear."""
        ...

    @property
    def description(self) -> str:
        """For logs: kind and endpoint (no secrets)."""
        ...

    async def fetch(self, http: httpx.AsyncClient, current: Token | None) -> Token:
        """A new token. ``current`` (maybe expired) lets a fetcher refresh with its refresh token first and
        fall back to a fresh login. Raises TokenError (with a log-safe message) for every failure."""
        ...
