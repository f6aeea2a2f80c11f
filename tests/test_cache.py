"""The answer cache and the policy cache key (pfxhttp.backend.cache); single-flight: test_singleflight.py.

TTL windows are checked with an injected clock (no sleeping), at exact float boundaries: a window is half
open, so an answer stored at 0 with ttl 8 is fresh at 7.75 and gone at 8.0.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from pfxhttp.backend.cache import (
    DEFAULT_RESPONSE_CACHE_ENTRIES,
    AnswerCache,
    policy_cache_key,
)
from pfxhttp.backend.mapping import Outcome, OutcomeKind
from pfxhttp.config.model import CacheConfig, ResponseCacheConfig

FOUND = Outcome(OutcomeKind.FOUND, value="user@example.org")
NOT_FOUND = Outcome(OutcomeKind.NOT_FOUND, detail="HTTP 404")
FAILURES = (
    Outcome(OutcomeKind.ERROR, reason="backend status 400"),
    Outcome(OutcomeKind.TEMP, reason="backend status 503"),
    Outcome(OutcomeKind.TIMEOUT, reason="backend timeout"),
)
KEY = ("virtual", "alice@example.org")


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_cache(
    ttl: float = 8.0, negative_ttl: float = 4.0, stale_if_error: float = 4.0, max_entries: int = 100
) -> tuple[AnswerCache, FakeClock]:
    clock = FakeClock()
    return AnswerCache(ttl, negative_ttl, stale_if_error, max_entries, clock=clock), clock


# --- windows ---------------------------------------------------------------------------------------------


def test_found_is_fresh_strictly_within_ttl() -> None:
    cache, clock = make_cache(ttl=8.0, stale_if_error=0.0)
    cache.store(KEY, FOUND)
    assert cache.fresh(KEY) is FOUND
    clock.now = 7.75
    assert cache.fresh(KEY) is FOUND
    clock.now = 8.0
    assert cache.fresh(KEY) is None
    assert len(cache) == 0  # past every window: dropped on the lookup that found it expired
    assert cache.stats.expired == 1


def test_not_found_is_fresh_strictly_within_negative_ttl_and_never_stale() -> None:
    cache, clock = make_cache(ttl=8.0, negative_ttl=4.0, stale_if_error=100.0)
    cache.store(KEY, NOT_FOUND)
    clock.now = 3.75
    assert cache.fresh(KEY) is NOT_FOUND
    assert cache.stale(KEY) is None  # even inside its window: a stale NOTFOUND would bounce mail
    clock.now = 4.0
    assert cache.fresh(KEY) is None
    assert cache.stale(KEY) is None
    assert len(cache) == 0


def test_found_is_stale_until_ttl_plus_stale_if_error() -> None:
    cache, clock = make_cache(ttl=8.0, stale_if_error=4.0)
    cache.store(KEY, FOUND)
    clock.now = 8.0
    assert cache.fresh(KEY) is None
    assert len(cache) == 1  # no longer fresh, still kept for a failing backend
    assert cache.stale(KEY) is FOUND
    clock.now = 11.75
    assert cache.stale(KEY) is FOUND
    clock.now = 12.0
    assert cache.stale(KEY) is None
    assert len(cache) == 0
    assert cache.stats.stale_served == 2


def test_stale_also_serves_a_still_fresh_found() -> None:
    cache, clock = make_cache(ttl=8.0, stale_if_error=0.0)
    cache.store(KEY, FOUND)
    clock.now = 7.75
    assert cache.stale(KEY) is FOUND
    clock.now = 8.0
    assert cache.stale(KEY) is None


def test_zero_windows_mean_never() -> None:
    cache, _clock = make_cache(ttl=0.0, negative_ttl=0.0, stale_if_error=0.0)
    cache.store(KEY, FOUND)
    cache.store(("virtual", "bob@example.org"), NOT_FOUND)
    assert len(cache) == 0
    assert cache.fresh(KEY) is None
    assert cache.stale(KEY) is None


def test_ttl_zero_with_stale_window_is_never_fresh() -> None:
    cache, clock = make_cache(ttl=0.0, stale_if_error=5.0)
    cache.store(KEY, FOUND)
    assert cache.fresh(KEY) is None
    clock.now = 4.75
    assert cache.stale(KEY) is FOUND


@pytest.mark.parametrize("failure", FAILURES, ids=lambda o: o.kind.value)
def test_failures_are_never_stored(failure: Outcome) -> None:
    cache, _clock = make_cache()
    cache.store(KEY, failure)
    assert len(cache) == 0
    assert cache.fresh(KEY) is None
    assert cache.stale(KEY) is None


@pytest.mark.parametrize("failure", FAILURES, ids=lambda o: o.kind.value)
def test_a_failure_keeps_the_last_good_answer(failure: Outcome) -> None:
    cache, clock = make_cache(ttl=8.0, stale_if_error=4.0)
    cache.store(KEY, FOUND)
    clock.now = 9.0
    cache.store(KEY, failure)
    assert cache.stale(KEY) is FOUND


def test_an_uncacheable_not_found_removes_an_older_found() -> None:
    cache, clock = make_cache(ttl=0.0, negative_ttl=0.0, stale_if_error=60.0)
    cache.store(KEY, FOUND)
    clock.now = 1.0
    cache.store(KEY, NOT_FOUND)  # the backend now says "no such key": an outage must not resurrect FOUND
    assert cache.stale(KEY) is None
    assert len(cache) == 0


def test_a_newer_answer_replaces_the_older_one() -> None:
    cache, clock = make_cache(ttl=8.0, negative_ttl=4.0)
    cache.store(KEY, FOUND)
    clock.now = 1.0
    cache.store(KEY, NOT_FOUND)
    assert cache.fresh(KEY) is NOT_FOUND
    assert cache.stale(KEY) is None
    newer = Outcome(OutcomeKind.FOUND, value="new")
    cache.store(KEY, newer)
    assert cache.fresh(KEY) is newer
    assert len(cache) == 1


def test_restoring_the_served_object_does_not_renew_its_age() -> None:
    cache, clock = make_cache(ttl=8.0, stale_if_error=4.0)
    cache.store(KEY, FOUND)
    clock.now = 10.0
    served = cache.stale(KEY)
    assert served is FOUND
    cache.store(KEY, served)
    clock.now = 12.0
    assert cache.stale(KEY) is None
    # An equal answer fetched anew from the backend is a new answer and does renew it.
    cache.store(KEY, Outcome(OutcomeKind.FOUND, value=FOUND.value))
    assert cache.fresh(KEY) == FOUND


def test_stats_count_hits_misses_and_flush_keeps_them() -> None:
    cache, _clock = make_cache()
    assert cache.fresh(KEY) is None
    cache.store(KEY, FOUND)
    assert cache.fresh(KEY) is FOUND
    assert cache.fresh(KEY) is FOUND
    cache.flush()
    assert len(cache) == 0
    assert cache.fresh(KEY) is None
    assert (cache.stats.hits, cache.stats.misses, cache.stats.stale_served) == (2, 2, 0)


@pytest.mark.parametrize(
    ("ttl", "negative_ttl", "stale_if_error", "max_entries"),
    [(-1.0, 0.0, 0.0, 10), (1.0, -1.0, 0.0, 10), (1.0, 0.0, float("nan"), 10), (1.0, 0.0, 0.0, 0)],
)
def test_invalid_parameters_are_refused(
    ttl: float, negative_ttl: float, stale_if_error: float, max_entries: int
) -> None:
    with pytest.raises(ValueError, match="must be"):
        AnswerCache(ttl, negative_ttl, stale_if_error, max_entries, clock=FakeClock())


async def test_default_clock_is_trio_time(autojump_clock: trio.testing.MockClock) -> None:
    cache = AnswerCache(ttl=10.0, negative_ttl=0.0, stale_if_error=0.0, max_entries=10)
    cache.store(KEY, FOUND)
    await trio.sleep(9.5)
    assert cache.fresh(KEY) is FOUND
    await trio.sleep(0.5)
    assert cache.fresh(KEY) is None


# --- constructors from configuration ---------------------------------------------------------------------


def test_the_entry_cache_block_alone() -> None:
    config = CacheConfig(ttl=30.0, negative_ttl=5.0, stale_if_error=60.0, max_entries=7)
    cache = AnswerCache.for_entry(config, ResponseCacheConfig(), clock=FakeClock())
    assert cache is not None
    assert (cache.ttl, cache.negative_ttl, cache.stale_if_error, cache.max_entries) == (30.0, 5.0, 60.0, 7)


def test_response_cache_serves_only_the_last_good_found_for_its_ttl() -> None:
    clock = FakeClock()
    cache = AnswerCache.from_response_cache(ResponseCacheConfig(enabled=True, ttl=60.0), clock=clock)
    assert cache.max_entries == DEFAULT_RESPONSE_CACHE_ENTRIES
    cache.store(KEY, FOUND)
    cache.store(("virtual", "nobody@example.org"), NOT_FOUND)
    assert len(cache) == 1
    assert cache.fresh(KEY) is None  # never a substitute for asking the backend
    clock.now = 59.75
    assert cache.stale(KEY) is FOUND
    assert cache.stale(("virtual", "nobody@example.org")) is None
    clock.now = 60.0
    assert cache.stale(KEY) is None


def test_for_entry_combines_the_entry_cache_and_the_response_cache() -> None:
    off = ResponseCacheConfig(enabled=False, ttl=3600.0)
    on = ResponseCacheConfig(enabled=True, ttl=3600.0)
    own = CacheConfig(ttl=60.0, negative_ttl=10.0, stale_if_error=120.0, max_entries=50)
    assert AnswerCache.for_entry(None, off) is None
    only_response = AnswerCache.for_entry(None, on, clock=FakeClock())
    assert only_response is not None
    assert (only_response.ttl, only_response.negative_ttl, only_response.stale_if_error) == (0.0, 0.0, 3600.0)
    only_own = AnswerCache.for_entry(own, off, clock=FakeClock())
    assert only_own is not None
    assert (only_own.ttl, only_own.stale_if_error, only_own.max_entries) == (60.0, 120.0, 50)
    both = AnswerCache.for_entry(own, on, clock=FakeClock())
    assert both is not None
    assert (both.ttl, both.negative_ttl, both.stale_if_error) == (60.0, 10.0, 3540.0)  # stale until 3600
    longer_own = AnswerCache.for_entry(
        CacheConfig(ttl=60.0, stale_if_error=7200.0), ResponseCacheConfig(enabled=True, ttl=600.0)
    )
    assert longer_own is not None
    assert longer_own.stale_if_error == 7200.0


# --- LRU bound -------------------------------------------------------------------------------------------


def test_lru_bound_holds_under_10000_inserts() -> None:
    cache, _clock = make_cache(max_entries=100)
    for i in range(10_000):
        cache.store(("m", str(i)), FOUND)
        assert len(cache) <= 100
    assert len(cache) == 100
    assert cache.stats.evictions == 9_900
    assert cache.fresh(("m", "9899")) is None
    assert all(cache.fresh(("m", str(i))) is FOUND for i in range(9_900, 10_000))


def test_lru_evicts_the_least_recently_used_first() -> None:
    cache, _clock = make_cache(max_entries=3)
    for name in ("a", "b", "c"):
        cache.store((name,), FOUND)
    assert cache.fresh(("a",)) is FOUND  # a is now the most recently used; b the least
    cache.store(("d",), FOUND)
    assert cache.fresh(("b",)) is None
    assert cache.stale(("c",)) is FOUND  # stale use refreshes recency too; a is now the least recent
    cache.store(("e",), FOUND)
    assert cache.fresh(("a",)) is None
    assert [cache.fresh((n,)) is FOUND for n in ("c", "d", "e")] == [True, True, True]
    cache.store(("c",), Outcome(OutcomeKind.FOUND, value="again"))  # re-storing refreshes recency
    cache.store(("f",), FOUND)
    assert cache.fresh(("d",)) is None
    assert cache.stats.evictions == 3


# --- single-flight ---------------------------------------------------------------------------------------


# --- policy cache key ------------------------------------------------------------------------------------

ATTRS = {
    "request": "smtpd_access_policy",
    "protocol_state": "RCPT",
    "sender": "a@example.org",
    "recipient": "b@example.net",
    "client_address": "192.0.2.1",
    "instance": "123.456.7",
    "queue_id": "8045F2AB23",
}


def test_policy_key_ignores_per_message_attributes() -> None:
    keys = ("sender", "recipient")
    other_message = {**ATTRS, "instance": "999.888.1", "queue_id": "1234ABCDEF"}
    assert policy_cache_key("policy", ATTRS, keys) == policy_cache_key("policy", other_message, keys)
    assert policy_cache_key("policy", ATTRS, keys) == ("policy", "a@example.org", "b@example.net")


def test_policy_key_follows_the_configured_order_and_fills_missing_with_empty() -> None:
    assert policy_cache_key("p", ATTRS, ("recipient", "sender")) == ("p", "b@example.net", "a@example.org")
    assert policy_cache_key("p", ATTRS, ("helo_name", "sender")) == ("p", "", "a@example.org")
    assert policy_cache_key("p", ATTRS, ("sender",)) != policy_cache_key("q", ATTRS, ("sender",))
    assert policy_cache_key("p", ATTRS, ("sender",)) != policy_cache_key(
        "p", {**ATTRS, "sender": "c@example.org"}, ("sender",)
    )


def test_policy_key_needs_key_attributes() -> None:
    with pytest.raises(ValueError, match="at least one"):
        policy_cache_key("p", ATTRS, ())
