"""One backend's ``Authorization`` value: a bearer token got once, shared, renewed early, never hammered for.

Per lookup, :meth:`TokenSource.authorization` is one clock call and two attribute reads while the token is
fresh. Past its renewal point (``Token.renew_at``) the current token is still handed out and ONE background
request gets the next; only without a usable token do callers wait, all on the same single request
("single flight"). Every request first re-reads the store: another worker process, or this daemon before a
restart, may hold a newer token already.

Token requests run as trio system tasks (``trio.lowlevel.spawn_system_task``), not in a caller's task nor in a
nursery handed in: a lookup that times out or whose client goes away must not cancel a request other lookups
wait for, and the source is built where no nursery exists (configuration load and reload run in a worker
thread). System tasks are cancelled when the daemon stops; an exception escaping one would abort trio as a whole,
so each is wrapped to catch and log every ``Exception``.

A 401 from the backend (:meth:`TokenSource.refused`) forces a renewal at most once per token: the token is
dropped and the request sent once more with the next one, which is then on probation. If the backend refuses that
fresh token too, the token was not the problem (an API that answers 401 for some keys, a token it never
accepts): its 401 is the lookup's answer, and further 401s force no renewal until a back-off has passed (1 s,
doubling per renewal that did not help, up to 60 s; reset once a renewed token is accepted). Without this, every
refused lookup cost a token request (21 lookups, 22 logins).

A failed request starts a back-off: for 1 s, doubling per consecutive failure up to 60 s, callers without a
usable token get TokenError at once and no request is sent; success resets it. Log lines name the source by the
fetcher's ``description`` and never hold a token: fetchers raise TokenError with log-safe messages, and any other
exception is logged by its type name only (its text might quote a reply body).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from pfxhttp.backend.auth.store import TokenStore
from pfxhttp.backend.auth.tokens import Token, TokenFetcher
from pfxhttp.errors import TokenError

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
# A safety net over the fetcher's own httpx timeouts: a hung request would otherwise hold every waiter forever.
FETCH_TIMEOUT = 60.0
# Never renew sooner than this after installing a token, so a token whose renew_at is already past (a short
# lifetime, a skewed obtained_at) cannot turn every lookup into a new request.
MIN_RENEW_INTERVAL = 1.0


def _backoff(failures: int) -> float:
    """BACKOFF_FIRST after no failure, doubling per failure, at most BACKOFF_MAX."""
    return min(BACKOFF_FIRST * 2.0 ** min(failures, 16), BACKOFF_MAX)


@dataclass(eq=False)
class _Flight:
    """One token request in progress; whoever needs its outcome waits on ``done``."""

    done: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    error: str | None = None  # log-safe, set when the request failed


class TokenSource:
    """Hands out ``Bearer <token>`` for one fetcher (one token endpoint and client).

    ``store``, ``http`` and ``log`` are shared and owned by the caller. ``clock`` gives unix seconds (the scale
    of Token times). ``on_fetch(success)`` is called once per token request, for metrics."""

    def __init__(
        self,
        fetcher: TokenFetcher,
        store: TokenStore,
        http: httpx.AsyncClient,
        log: Any,
        *,
        clock: Callable[[], float] = time.time,
        on_fetch: Callable[[bool], None] | None = None,
        fetch_timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self._fetcher = fetcher
        self._store = store
        self._http = http
        self._log = log
        self._clock = clock
        self._on_fetch = on_fetch
        self._fetch_timeout = fetch_timeout
        self._key = fetcher.store_key
        self._description = fetcher.description
        self._token: Token | None = None  # the token handed out; None before the first and after a 401
        self._header = ""
        self._fresh_until = -math.inf  # the fast path holds before this: min(renewal point, expiry)
        self._last: Token | None = None  # newest token seen, even refused or expired: the fetcher's `current`
        self._refused: str | None = None  # the access string of the token the backend last refused
        self._flight: _Flight | None = None
        self._failures = 0
        self._retry_at = -math.inf
        # Forced renewals (after a 401): the next installed token goes on probation while ``_forcing``; the
        # header of the token on probation; renewals that did not help, and when the next one may start.
        self._forcing = False
        self._probation: str | None = None
        self._forced_failures = 0
        self._force_at = -math.inf
        self._closed = False

    async def authorization(self) -> str:
        """``Bearer <token>`` for the backend request. Raises TokenError when no usable token can be had."""
        if self._clock() < self._fresh_until:
            return self._header
        return await self._slow()

    def refused(self, authorization: str) -> bool:
        """The backend answered 401 to a request sent with ``authorization``. True: send the request once more
        with :meth:`authorization` (a newer token is here or on its way); False: the 401 is the answer.

        A 401 for an older token leaves a newer one alone, and many 401s for one token drop it once. The current
        token is dropped (forced renewal) unless it is the fresh token of a forced renewal (the renewal did not
        help: the back-off doubles) or the back-off since the last forced renewal has not passed. The fetcher
        sees a dropped token as ``current`` (it may still hold a usable refresh token); the store forgets it too,
        so a restart does not reuse it."""
        token = self._token
        if token is None or authorization != self._header:
            return True
        now = self._clock()
        if authorization == self._probation:
            self._probation = None
            self._forced_failures += 1
            self._force_at = now + _backoff(self._forced_failures)
            self._log.warning(
                "backend refused a freshly renewed bearer token too; its 401 is the answer",
                source=self._description,
                renew_on_401_in=_backoff(self._forced_failures),
            )
            return False
        if now < self._force_at:
            return False
        self._force_at = now + _backoff(self._forced_failures)
        self._forcing = True
        self._token = None
        self._header = ""
        self._fresh_until = -math.inf
        self._refused = token.access
        self._log.info(
            "backend refused its bearer token, a new one will be requested", source=self._description
        )
        trio.lowlevel.spawn_system_task(self._forget, token, name=f"token store delete ({self._description})")
        return True

    def accepted(self, authorization: str) -> None:
        """The request sent once more after :meth:`refused` was not refused: a renewal it forced helped, so the
        back-off of forced renewals starts over."""
        if authorization == self._probation:
            self._probation = None
            self._forced_failures = 0
            self._force_at = min(self._force_at, self._clock() + BACKOFF_FIRST)

    async def aclose(self) -> None:
        """Stop: cancel a request in progress (its waiters get TokenError); later calls raise TokenError. The
        store and the HTTP client are the caller's to close."""
        self._closed = True
        if self._flight is not None:
            self._flight.scope.cancel()

    async def _slow(self) -> str:
        now = self._clock()
        token = self._token
        if token is not None and token.usable(now):
            # Renewal time: hand out the current token now, get the next one in the background (unless one is
            # on its way or a failure is being backed off; the current token serves until it expires).
            if self._flight is None and now >= self._retry_at and not self._closed:
                self._launch()
            return self._header
        flight = self._flight
        if flight is None:
            if self._closed:
                raise TokenError(f"{self._description}: token source closed")
            if now < self._retry_at:
                raise TokenError(
                    f"{self._description}: backing off after a failed token request "
                    f"({self._retry_at - now:.1f} s left)"
                )
            flight = self._launch()
        await flight.done.wait()
        token = self._token
        if token is not None and token.usable(self._clock()):
            return self._header
        raise TokenError(f"{self._description}: {flight.error or 'no usable token'}")

    def _launch(self) -> _Flight:
        flight = _Flight()
        self._flight = flight
        trio.lowlevel.spawn_system_task(self._fly, flight, name=f"token request ({self._description})")
        return flight

    async def _fly(self, flight: _Flight) -> None:
        try:
            with flight.scope:
                await self._request(flight)
            if flight.scope.cancelled_caught:
                flight.error = "token source closed"
        except Exception as exc:  # noqa: BLE001 - an exception out of a system task would abort the daemon
            flight.error = "internal error while getting a token"
            self._log.error("token request crashed", source=self._description, error=type(exc).__name__)
        finally:
            if self._flight is flight:
                self._flight = None
            flight.done.set()

    async def _request(self, flight: _Flight) -> None:
        stored = await self._store.load(self._key)
        if stored is not None and self._adoptable(stored, self._clock()):
            self._install(stored)
            return
        try:
            with trio.fail_after(self._fetch_timeout):
                token = await self._fetcher.fetch(self._http, self._last)
        except TokenError as exc:
            message = str(exc)
        except trio.TooSlowError:
            message = f"no token within {self._fetch_timeout:g} s"
        except Exception as exc:  # noqa: BLE001 - a fetcher bug still means "no token", never a raw exception
            message = f"unexpected {type(exc).__name__} from the token fetcher"
        else:
            if not token.sendable():
                message = "the token endpoint answered a token that is not a valid HTTP field value"
            elif token.usable(self._clock()):
                self._failures = 0
                self._retry_at = -math.inf
                await self._store.save(self._key, token)
                self._install(token)
                self._log.info(
                    "bearer token obtained",
                    source=self._description,
                    expires_in=round(token.expires_at - self._clock()),
                )
                self._count(True)
                return
            else:
                message = "the token endpoint answered an expired token"
        self._failures += 1
        delay = _backoff(self._failures - 1)
        self._retry_at = self._clock() + delay
        flight.error = message
        self._log.error("token request failed", source=self._description, error=message, retry_in=delay)
        self._count(False)

    def _adoptable(self, stored: Token, now: float) -> bool:
        """A stored token is taken instead of a request when it is usable, not the refused one, and we have
        nothing usable or it is newer than ours (another process renewed first)."""
        if not stored.usable(now) or not stored.sendable() or stored.access == self._refused:
            return False
        current = self._token
        return current is None or not current.usable(now) or stored.expires_at > current.expires_at

    def _install(self, token: Token) -> None:
        self._token = token
        self._last = token
        self._header = f"Bearer {token.access}"
        if self._forcing:
            self._forcing = False
            self._probation = self._header
        self._fresh_until = min(token.expires_at, max(token.renew_at, self._clock() + MIN_RENEW_INTERVAL))

    def _count(self, success: bool) -> None:
        if self._on_fetch is not None:
            self._on_fetch(success)

    async def _forget(self, token: Token) -> None:
        try:
            await self._store.delete(self._key, token)
        except Exception as exc:  # noqa: BLE001 - a system task must not raise (see the module docstring)
            self._log.error("token store update crashed", source=self._description, error=type(exc).__name__)
