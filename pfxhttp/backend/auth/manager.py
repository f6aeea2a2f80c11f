"""The token sources of one runtime: which entry sends which bearer token.

Entries whose auth configuration is the same (same endpoint, client, scopes and credentials: the fetcher's
``store_key``) share one TokenSource, so they share one token and one token request. Everything here is built
when a configuration is loaded (at start and on reload, outside the trio loop): the SQLite store is opened, the
private keys are parsed, the httpx client is made. Token requests use httpx (the cold path); they go out with the
TLS settings of ``server.tls`` and the total deadline of ``server.http_client.timeout``.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from pfxhttp.backend.auth.jwtlogin import JwtLoginFetcher
from pfxhttp.backend.auth.oidc import DiscoveryCache, OidcClientCredentialsFetcher
from pfxhttp.backend.auth.source import TokenSource
from pfxhttp.backend.auth.store import TokenStore, open_token_store
from pfxhttp.backend.auth.tokens import TokenFetcher
from pfxhttp.config.model import Config, EntryConfig

__all__ = ["AuthManager", "fetcher_for"]


def fetcher_for(entry: EntryConfig, discovery: DiscoveryCache) -> TokenFetcher | None:
    """The token fetcher of ``entry``, None without auth; ConfigError for what no request can fix."""
    if entry.jwt_auth is not None:
        return JwtLoginFetcher(entry.jwt_auth)
    if entry.backend_oidc_auth is not None:
        return OidcClientCredentialsFetcher(entry.backend_oidc_auth, discovery)
    return None


class AuthManager:
    """Token sources by entry, for one loaded configuration; ``aclose`` when its runtime is retired."""

    def __init__(
        self,
        config: Config,
        entries: Iterable[EntryConfig],
        ssl_context: ssl.SSLContext,
        log: Any,
        on_fetch: Callable[[bool], None] | None = None,
    ) -> None:
        discovery = DiscoveryCache()
        fetchers = {
            (entry.kind, entry.name): fetcher
            for entry in entries
            if (fetcher := fetcher_for(entry, discovery)) is not None
        }
        self._sources: dict[tuple[object, str], TokenSource] = {}
        self._store: TokenStore | None = None
        self._http: httpx.AsyncClient | None = None
        if not fetchers:
            return
        self._store = open_token_store(config.server.jwt_db_path, log)
        timeout = config.server.http_client.timeout
        # trust_env=False: proxy variables of the environment must not reroute (and see) credentials; redirects
        # are never followed (a 307 would resend them elsewhere).
        self._http = httpx.AsyncClient(
            verify=ssl_context, timeout=timeout, trust_env=False, follow_redirects=False
        )
        by_key: dict[str, TokenSource] = {}
        for name, fetcher in fetchers.items():
            source = by_key.get(fetcher.store_key)
            if source is None:
                source = by_key[fetcher.store_key] = TokenSource(
                    # A cap over the whole fetch: OIDC may need discovery and the token request.
                    fetcher,
                    self._store,
                    self._http,
                    log,
                    on_fetch=on_fetch,
                    fetch_timeout=2 * timeout,
                )
            self._sources[name] = source

    def source(self, entry: EntryConfig) -> TokenSource | None:
        """The token source of ``entry``; None when it sends no bearer token."""
        return self._sources.get((entry.kind, entry.name))

    async def aclose(self) -> None:
        for source in set(self._sources.values()):
            await source.aclose()
        if self._http is not None:
            await self._http.aclose()
        if self._store is not None:
            await self._store.aclose()
