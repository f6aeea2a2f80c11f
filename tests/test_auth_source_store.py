"""The token source beyond one process's memory and its failure edges: tokens shared through the store (a restart,
another process), unexpected fetcher exceptions, expired or hung token requests, aclose, and no token or refresh
token in any log line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from pfxhttp.backend.auth.store import open_token_store
from pfxhttp.backend.auth.tokens import Token
from pfxhttp.errors import TokenError
from tests.conftest import Captured
from tests.test_auth_source import T0, bearer, gather, rig


# The fixture of test_auth_source.py, restated: imported, ruff would report each use as a redefinition.
@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:  # handed to the fetcher, never used by the scripted one
        yield client


async def test_a_restarted_daemon_reuses_the_stored_token(
    http: httpx.AsyncClient, captured: Captured, tmp_path: Path
) -> None:
    path = str(tmp_path / "tokens.db")
    with trio.fail_after(10):
        before = rig(http, captured.log, store=open_token_store(path, captured.log))
        assert await before.source.authorization() == bearer(1)
        await before.source.aclose()
        await before.store.aclose()

        after = rig(http, captured.log, store=open_token_store(path, captured.log))
        after.clock.now = T0 + 600
        assert await after.source.authorization() == bearer(1)
        assert after.fetcher.calls == 0 and after.outcomes == []

        # After a 401 the stored token is gone: the next restart logs in again.
        assert after.source.refused(bearer(1))
        while await after.store.load(after.fetcher.store_key) is not None:
            await trio.sleep(0.01)  # the store is updated in the background; the fail_after bounds this
        await after.store.aclose()
        again = rig(http, captured.log, store=open_token_store(path, captured.log))
        assert await again.source.authorization() == bearer(1)  # from its own fetcher: a new login
        assert again.fetcher.calls == 1
        await again.store.aclose()
    assert captured.errors() == []


async def test_a_newer_token_from_another_process_is_taken_instead_of_a_request(
    http: httpx.AsyncClient, captured: Captured, tmp_path: Path
) -> None:
    path = str(tmp_path / "tokens.db")
    other = open_token_store(path, captured.log)  # another worker process's store on the same file
    r = rig(http, captured.log, store=open_token_store(path, captured.log), lifetime=100)
    key = r.fetcher.store_key
    with trio.fail_after(10):
        assert await r.source.authorization() == bearer(1)
        await other.save(key, Token("access-secret-other-1", T0 + 200, T0))
        r.clock.now = T0 + 100  # ours expired; the other process's is good
        assert await r.source.authorization() == "Bearer access-secret-other-1"

        await other.save(key, Token("access-secret-other-2", T0 + 400, T0 + 170))
        r.clock.now = T0 + 175  # ours is due for renewal: the background renewal finds the newer one
        assert await r.source.authorization() == "Bearer access-secret-other-1"
        while await r.source.authorization() != "Bearer access-secret-other-2":
            await trio.sleep(0.01)  # bounded by fail_after
    assert r.fetcher.calls == 1 and r.outcomes == [True]
    await r.store.aclose()
    await other.aclose()


async def test_unexpected_fetcher_exceptions_become_token_errors(
    http: httpx.AsyncClient, captured: Captured
) -> None:
    r = rig(http, captured.log, fail=ValueError("body was {'access_token': 'access-secret-leak'}"))
    with pytest.raises(TokenError, match="unexpected ValueError") as caught:
        await r.source.authorization()
    assert "access-secret-leak" not in str(caught.value)
    assert caught.value.reason == "backend token unavailable"
    errors = captured.errors()
    assert len(errors) == 1 and errors[0]["source"] == r.fetcher.description
    assert "access-secret-leak" not in captured.stream.getvalue()


async def test_an_expired_token_from_the_endpoint_is_a_failure(
    http: httpx.AsyncClient, captured: Captured
) -> None:
    r = rig(http, captured.log, lifetime=-5)
    with pytest.raises(TokenError, match="expired"):
        await r.source.authorization()
    assert r.outcomes == [False]


async def test_a_hung_request_times_out(
    http: httpx.AsyncClient, captured: Captured, autojump_clock: trio.testing.MockClock
) -> None:
    r = rig(http, captured.log, gate=trio.Event())  # never opened
    with pytest.raises(TokenError, match="no token within 60 s"):
        await r.source.authorization()
    assert r.fetcher.calls == 1 and r.outcomes == [False]


async def test_aclose_cancels_the_request_and_refuses_later_calls(
    http: httpx.AsyncClient, captured: Captured
) -> None:
    r = rig(http, captured.log, gate=trio.Event())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            done: list[list[str | BaseException]] = []

            async def callers() -> None:
                done.append(await gather(3, r.source.authorization))

            nursery.start_soon(callers)
            await trio.testing.wait_all_tasks_blocked()
            await r.source.aclose()
    assert all(isinstance(x, TokenError) and "closed" in str(x) for x in done[0]) and len(done[0]) == 3
    with pytest.raises(TokenError, match="closed"):
        await r.source.authorization()
    assert r.fetcher.calls == 1


async def test_no_token_or_refresh_token_in_any_log_line(http: httpx.AsyncClient, captured: Captured) -> None:
    r = rig(http, captured.log, lifetime=100)
    assert await r.source.authorization() == bearer(1)
    r.clock.now = T0 + 80  # background renewal
    await r.source.authorization()
    await trio.testing.wait_all_tasks_blocked()
    assert r.source.refused(bearer(2))  # a background renewal's token is on no probation
    r.fetcher.fail = RuntimeError("refresh-secret-2 was refused")
    with pytest.raises(TokenError):
        await r.source.authorization()
    r.clock.now += 1
    r.fetcher.fail = TokenError("login refused (401)")
    with pytest.raises(TokenError):
        await r.source.authorization()
    text = captured.stream.getvalue()
    events = [e["event"] for e in captured.events()]
    assert events.count("bearer token obtained") == 2 and events.count("token request failed") == 2
    assert "login refused (401)" in text
    assert "access-secret" not in text and "refresh-secret" not in text
