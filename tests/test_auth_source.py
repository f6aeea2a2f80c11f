"""The token source: single-flight requests, background renewal, back-off and 401 invalidation (sharing through
the store and failure edges: test_auth_source_store.py). A scripted fetcher counts requests; a settable clock
stands in for time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from pfxhttp.backend.auth.source import BACKOFF_MAX, TokenSource
from pfxhttp.backend.auth.store import TokenStore, open_token_store
from pfxhttp.backend.auth.tokens import Token
from pfxhttp.errors import TokenError
from tests.conftest import Captured

T0 = 1_700_000_000.0


@dataclass
class Clock:
    """Unix time as the source sees it; tests move it by hand."""

    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class ScriptedFetcher:
    """A TokenFetcher: each call records the ``current`` it got, may wait for ``gate``, then raises ``fail`` or
    returns a token named after the call number."""

    clock: Clock
    lifetime: float = 3600.0
    fail: Exception | None = None
    gate: trio.Event | None = None
    currents: list[Token | None] = field(default_factory=list)
    store_key: str = "jwt|https://auth.example/token|client|0123abcd"
    description: str = "jwt_auth https://auth.example/token"

    @property
    def calls(self) -> int:
        return len(self.currents)

    async def fetch(self, http: httpx.AsyncClient, current: Token | None) -> Token:
        self.currents.append(current)
        number = self.calls
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        now = self.clock()
        return Token(f"access-secret-{number}", now + self.lifetime, now, refresh=f"refresh-secret-{number}")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:  # handed to the fetcher, never used by the scripted one
        yield client


@dataclass
class Rig:
    clock: Clock
    fetcher: ScriptedFetcher
    store: TokenStore
    source: TokenSource
    outcomes: list[bool]


def rig(http: httpx.AsyncClient, log: Any, store: TokenStore | None = None, **fetcher: Any) -> Rig:
    clock = Clock()
    scripted = ScriptedFetcher(clock, **fetcher)
    store = store or open_token_store(None, log)
    outcomes: list[bool] = []
    source = TokenSource(scripted, store, http, log, clock=clock, on_fetch=outcomes.append)
    return Rig(clock, scripted, store, source, outcomes)


def bearer(number: int) -> str:
    return f"Bearer access-secret-{number}"


async def gather(count: int, call: Any) -> list[str | BaseException]:
    """Run ``call`` in ``count`` concurrent tasks once the fetcher is known to be waiting; collect outcomes."""
    results: list[str | BaseException] = []

    async def one() -> None:
        try:
            results.append(await call())
        except TokenError as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return results


@pytest.mark.parametrize("fails", [False, True])
async def test_a_thousand_callers_share_one_request(
    http: httpx.AsyncClient, captured: Captured, fails: bool
) -> None:
    r = rig(http, captured.log, gate=trio.Event(), fail=TokenError("login refused (401)") if fails else None)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            done: list[list[str | BaseException]] = []

            async def callers() -> None:
                done.append(await gather(1000, r.source.authorization))

            nursery.start_soon(callers)
            await trio.testing.wait_all_tasks_blocked()
            assert r.fetcher.calls == 1  # everyone else waits for that one request
            assert r.fetcher.gate is not None
            r.fetcher.gate.set()
    assert r.fetcher.currents == [None]
    results = done[0]
    assert len(results) == 1000
    if fails:
        assert all(isinstance(x, TokenError) and "login refused" in str(x) for x in results)
        assert r.outcomes == [False] and len(captured.errors()) == 1
    else:
        assert set(results) == {bearer(1)}
        assert r.outcomes == [True]
        assert await r.source.authorization() == bearer(1)  # then the fast path: no further request
        assert r.fetcher.calls == 1


async def test_renewal_serves_the_current_token_and_renews_once_in_the_background(
    http: httpx.AsyncClient, captured: Captured
) -> None:
    r = rig(http, captured.log)
    with trio.fail_after(10):
        assert await r.source.authorization() == bearer(1)
        r.fetcher.gate = trio.Event()
        r.clock.now = T0 + 3590  # renew_at is 30 s before expiry
        results = await gather(1000, r.source.authorization)  # none of them waits for the renewal
        assert set(results) == {bearer(1)}
        await trio.testing.wait_all_tasks_blocked()
        assert r.fetcher.calls == 2
        assert r.fetcher.currents[1] is not None and r.fetcher.currents[1].access == "access-secret-1"
        r.fetcher.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert await r.source.authorization() == bearer(2)
    assert r.fetcher.calls == 2 and r.outcomes == [True, True]
    assert await r.store.load(r.fetcher.store_key) == Token(
        "access-secret-2", T0 + 3590 + 3600, T0 + 3590, "refresh-secret-2"
    )


async def test_failed_renewal_keeps_the_current_token_until_it_expires(
    http: httpx.AsyncClient, captured: Captured
) -> None:
    r = rig(http, captured.log)
    with trio.fail_after(10):
        assert await r.source.authorization() == bearer(1)
        r.fetcher.fail = TokenError("token endpoint answered 503")
        r.clock.now = T0 + 3590
        assert await r.source.authorization() == bearer(1)
        await trio.testing.wait_all_tasks_blocked()
        assert r.fetcher.calls == 2
        assert await r.source.authorization() == bearer(1)  # backing off for 1 s: no request
        await trio.testing.wait_all_tasks_blocked()
        assert r.fetcher.calls == 2
        r.clock.now = T0 + 3591
        assert await r.source.authorization() == bearer(1)
        await trio.testing.wait_all_tasks_blocked()
        assert r.fetcher.calls == 3  # the next try; this one backs off for 2 s
        r.clock.now = T0 + 3592.5
        assert await r.source.authorization() == bearer(1)
        await trio.testing.wait_all_tasks_blocked()
        assert r.fetcher.calls == 3
        r.fetcher.fail = None
        r.clock.now = T0 + 3600  # expired: now callers wait for a new token
        assert await r.source.authorization() == bearer(4)
    assert r.outcomes == [True, False, False, True]
    assert len(captured.errors()) == 2


async def test_an_expired_token_is_replaced_before_answering(
    http: httpx.AsyncClient, captured: Captured
) -> None:
    r = rig(http, captured.log, lifetime=100)
    assert await r.source.authorization() == bearer(1)
    r.clock.now = T0 + 100
    assert await r.source.authorization() == bearer(2)
    current = r.fetcher.currents[1]
    assert current is not None and current.refresh == "refresh-secret-1"  # the fetcher may refresh with it


async def test_failures_back_off_1_2_4_up_to_60_seconds_and_reset_on_success(
    http: httpx.AsyncClient, captured: Captured
) -> None:
    r = rig(http, captured.log, lifetime=10, fail=TokenError("connection refused"))
    windows = [1, 2, 4, 8, 16, 32, 60, 60]
    assert windows[-1] == BACKOFF_MAX
    for attempt, window in enumerate(windows, start=1):
        with pytest.raises(TokenError, match="connection refused"):
            await r.source.authorization()
        assert r.fetcher.calls == attempt
        r.clock.now += window - 0.01
        with pytest.raises(TokenError, match="backing off"):
            await r.source.authorization()
        assert r.fetcher.calls == attempt  # refused at once, without a request
        r.clock.now += 0.01
    assert [e["retry_in"] for e in captured.errors()] == windows
    r.fetcher.fail = None
    assert await r.source.authorization() == bearer(9)
    r.fetcher.fail = TokenError("connection refused")
    r.clock.now += 10  # expired
    with pytest.raises(TokenError):
        await r.source.authorization()
    r.clock.now += 1  # the window started again at 1 s
    with pytest.raises(TokenError, match="connection refused"):
        await r.source.authorization()
    assert r.fetcher.calls == 11
    assert r.outcomes == [False] * 8 + [True, False, False]


async def test_a_401_drops_only_the_current_token(http: httpx.AsyncClient, captured: Captured) -> None:
    r = rig(http, captured.log)
    key = r.fetcher.store_key
    with trio.fail_after(10):
        first = await r.source.authorization()
        assert r.source.refused("Bearer something-else")  # not ours: retry with the current token
        assert await r.source.authorization() == first and r.fetcher.calls == 1
        r.fetcher.gate = trio.Event()
        assert r.source.refused(first)
        await trio.testing.wait_all_tasks_blocked()
        assert await r.store.load(key) is None  # a restart would not reuse it
        r.fetcher.gate.set()
        assert await r.source.authorization() == bearer(2)
        current = r.fetcher.currents[1]
        assert current is not None and current.access == "access-secret-1"  # may still refresh with it
        assert r.source.refused(first)  # a late 401 for the old token: retry, leaving the new one alone
        assert await r.source.authorization() == bearer(2)
        assert r.fetcher.calls == 2
        r.source.accepted(bearer(2))  # the retry went through: the renewal helped

        # 1,000 lookups get a 401 for the same token, drop it and ask again: one request between them.
        r.clock.now += 1  # past the 1 s between two forced renewals
        r.fetcher.gate = trio.Event()

        async def refused_then_retry() -> str:
            assert r.source.refused(bearer(2))
            return await r.source.authorization()

        async with trio.open_nursery() as nursery:
            done: list[list[str | BaseException]] = []

            async def callers() -> None:
                done.append(await gather(1000, refused_then_retry))

            nursery.start_soon(callers)
            await trio.testing.wait_all_tasks_blocked()
            r.fetcher.gate.set()
    assert set(done[0]) == {bearer(3)}
    assert r.fetcher.calls == 3
    assert await r.store.load(key) == Token("access-secret-3", T0 + 1 + 3600, T0 + 1, "refresh-secret-3")


async def test_at_most_one_forced_renewal_per_token_then_the_401_is_the_answer(
    http: httpx.AsyncClient, captured: Captured
) -> None:
    """A backend that refuses every token (or one key whatever the token): the 401 of the fresh token is the
    answer; forced renewals then wait 2, 4, 8 ... up to 60 s; a renewal that helps starts the back-off over."""
    r = rig(http, captured.log)
    with trio.fail_after(10):
        assert await r.source.authorization() == bearer(1)
        assert r.source.refused(bearer(1))  # forced renewal: bearer(2) is on probation
        assert await r.source.authorization() == bearer(2)
        assert not r.source.refused(bearer(2))  # refused too: the renewal did not help
        for window in [2, 4, 8, 16, 32, 60, 60]:
            for _ in range(20):  # 20 more lookups, 20 more 401s: no request
                assert not r.source.refused(await r.source.authorization())
            r.clock.now += window - 0.01
            assert not r.source.refused(await r.source.authorization())
            r.clock.now += 0.01
            calls = r.fetcher.calls
            assert r.source.refused(await r.source.authorization())  # the window has passed: one renewal
            fresh = await r.source.authorization()
            assert r.fetcher.calls == calls + 1 and fresh == bearer(calls + 1)
            assert not r.source.refused(fresh)
        assert r.fetcher.calls == 9  # 1 + 8 forced renewals for 8 windows and 169 401s
        warnings = [
            e for e in captured.events() if e["event"].startswith("backend refused a freshly renewed")
        ]
        assert [e["renew_on_401_in"] for e in warnings] == [2, 4, 8, 16, 32, 60, 60, 60]

        # The token is revoked for real later: the renewal helps, the back-off starts over at 1 s.
        r.clock.now += 60
        assert r.source.refused(bearer(9))
        r.source.accepted(await r.source.authorization())
        r.clock.now += 1
        assert r.source.refused(bearer(10))
        assert await r.source.authorization() == bearer(11)
        assert r.outcomes == [True] * 11
