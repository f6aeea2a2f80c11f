"""The answer cache of one entry, single-flight for identical backend requests, and the policy cache key.

Mail is at stake: a wrong NOTFOUND bounces mail and a wrong DUNNO may let it through, so the rules are narrow.

* Only answers the backend meant (``FOUND``, ``NOT_FOUND``) are stored; a failure (``ERROR``, ``TEMP``,
  ``TIMEOUT``) is never stored and never displaces the last good answer.
* ``fresh`` answers stand in for a backend call; ``stale`` answers (the ``stale-if-error`` idea of RFC 5861,
  section 4) only stand in for a backend call that has just failed, and only if the answer is ``FOUND``.
* Every window is half open: an answer stored at ``t`` is usable while ``now - t < window``. A window of 0
  therefore means "never", which is what ``ttl: 0`` / ``negative_ttl: 0`` say in the configuration.

pfxhttp's ``server.response_cache`` ("serve the last good answer for the same name and key when the backend
fails") is the same class with no fresh window at all: see :meth:`AnswerCache.from_response_cache`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar, cast

import trio

from pfxhttp.backend.mapping import Outcome, OutcomeKind
from pfxhttp.config.model import CacheConfig, ResponseCacheConfig

T = TypeVar("T")

# server.response_cache has no size key of its own; it still must not grow without bound with the
# number of distinct keys Postfix asks for (one entry per recipient address, say).
DEFAULT_RESPONSE_CACHE_ENTRIES = 10_000

_STORABLE = frozenset({OutcomeKind.FOUND, OutcomeKind.NOT_FOUND})


@dataclass(slots=True)
class CacheStats:
    """Counters for metrics; plain ints, only ever increased (``flush`` keeps them)."""

    hits: int = 0  # fresh() answered
    misses: int = 0  # fresh() had nothing usable
    stale_served: int = 0  # stale() answered for a failed backend call
    evictions: int = 0  # least recently used entries dropped to stay within max_entries
    expired: int = 0  # entries found past their last usable moment and dropped


@dataclass(frozen=True, slots=True)
class _Entry:
    outcome: Outcome
    stored_at: float
    dies_at: float  # the first moment at which neither fresh() nor stale() may return it


class AnswerCache:
    """A bounded LRU of backend answers keyed by caller-built hashable tuples.

    Why ``stale`` never serves ``NOT_FOUND``: a stale answer is used exactly when the backend cannot be
    asked. Serving an old ``NOT_FOUND`` then turns a backend outage into a permanent reply: a recipient
    created minutes ago is rejected as unknown (a 5xx) and the sender gets a non-delivery report for mail
    that would have been delivered. Not serving it costs only a ``TEMP`` / the policy error action (a 4xx by
    default), and the sending MTA retries later, when the backend may be back. A stale ``FOUND`` errs the other
    way (mail for a just-deleted address is accepted and later bounced by the mailbox layer, or a policy
    decision up to ``ttl + stale_if_error`` old is applied), which the operator opted into by setting
    ``stale_if_error``. So a ``NOT_FOUND`` lives only for ``negative_ttl``, and it also removes any older
    ``FOUND`` for its key: after the backend said "no such key", an outage must not resurrect "found".

    Expired entries are dropped lazily when looked up (or pushed out by the LRU bound), never returned;
    ``len()`` therefore counts entries that may already be past their time.

    The clock must be monotonic; the default, :func:`trio.current_time`, needs a running trio loop.
    """

    __slots__ = ("_clock", "_entries", "max_entries", "negative_ttl", "stale_if_error", "stats", "ttl")

    def __init__(
        self,
        ttl: float,
        negative_ttl: float,
        stale_if_error: float,
        max_entries: int,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        for label, value in (
            ("ttl", ttl),
            ("negative_ttl", negative_ttl),
            ("stale_if_error", stale_if_error),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{label} must be a finite number >= 0, not {value!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, not {max_entries!r}")
        self.ttl = float(ttl)
        self.negative_ttl = float(negative_ttl)
        self.stale_if_error = float(stale_if_error)
        self.max_entries = max_entries
        self.stats = CacheStats()
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    @classmethod
    def from_response_cache(
        cls,
        config: ResponseCacheConfig,
        max_entries: int = DEFAULT_RESPONSE_CACHE_ENTRIES,
        clock: Callable[[], float] = trio.current_time,
    ) -> AnswerCache:
        """``server.response_cache``: never fresh, a ``FOUND`` stands in for a failed call for ``ttl``.

        The caller builds one only when ``config.enabled``; ``enabled`` is not looked at here.
        """
        return cls(0.0, 0.0, config.ttl, max_entries, clock)

    @classmethod
    def for_entry(
        cls,
        cache: CacheConfig | None,
        response_cache: ResponseCacheConfig,
        clock: Callable[[], float] = trio.current_time,
    ) -> AnswerCache | None:
        """The one cache an entry needs: its own ``cache:`` block, widened by an enabled response cache.

        With both, the stale window (measured from the store) is the longer of ``ttl + stale_if_error`` and
        the response cache's ``ttl``, so one lookup covers both and no answer is stored twice. ``None`` when
        neither is configured.
        """
        if cache is None:
            return cls.from_response_cache(response_cache, clock=clock) if response_cache.enabled else None
        stale = cache.stale_if_error
        if response_cache.enabled:
            stale = max(stale, response_cache.ttl - cache.ttl)
        return cls(cache.ttl, cache.negative_ttl, stale, cache.max_entries, clock)

    def __len__(self) -> int:
        return len(self._entries)

    def _lifetime(self, kind: OutcomeKind) -> float:
        """How long after storing an answer of this kind it may be returned at all (0: never store it)."""
        if kind is OutcomeKind.FOUND:
            return self.ttl + self.stale_if_error
        if kind is OutcomeKind.NOT_FOUND:
            return self.negative_ttl  # never served stale: see the class docstring
        return 0.0

    def _live(self, key: Hashable, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.dies_at:
            del self._entries[key]
            self.stats.expired += 1
            return None
        return entry

    def fresh(self, key: Hashable) -> Outcome | None:
        """A ``FOUND`` stored less than ``ttl`` ago or a ``NOT_FOUND`` stored less than ``negative_ttl`` ago."""
        now = self._clock()
        entry = self._live(key, now)
        if entry is not None:
            window = self.ttl if entry.outcome.kind is OutcomeKind.FOUND else self.negative_ttl
            if now - entry.stored_at < window:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return entry.outcome
        self.stats.misses += 1
        return None

    def stale(self, key: Hashable) -> Outcome | None:
        """For a backend call that just failed: a ``FOUND`` stored less than ``ttl + stale_if_error`` ago.

        Never a ``NOT_FOUND`` (see the class docstring); the caller then answers with the failure.
        """
        entry = self._live(key, self._clock())
        if entry is None or entry.outcome.kind is not OutcomeKind.FOUND:
            return None
        self._entries.move_to_end(key)
        self.stats.stale_served += 1
        return entry.outcome

    def store(self, key: Hashable, outcome: Outcome) -> None:
        """Remember the backend's answer for ``key``; failures are ignored and keep the last good answer.

        Store only what the backend just answered. Storing the very object this cache handed out does not
        renew its age, so an answer served stale cannot keep itself alive forever.
        """
        if outcome.kind not in _STORABLE:
            return
        now = self._clock()
        current = self._entries.get(key)
        if current is not None and current.outcome is outcome:
            return
        lifetime = self._lifetime(outcome.kind)
        if lifetime <= 0:
            # Not cacheable, but it is newer than whatever is stored: the old answer must not outlive it.
            self._entries.pop(key, None)
            return
        self._entries[key] = _Entry(outcome, now, now + lifetime)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.stats.evictions += 1

    def flush(self) -> None:
        """Forget every answer (counters are kept)."""
        self._entries.clear()


class _Call(Generic[T]):
    """One execution of ``fn`` shared by a leader and its followers."""

    __slots__ = ("abandoned", "done", "error", "error_tb", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: T | None = None
        self.error: Exception | None = None
        self.error_tb: TracebackType | None = None
        self.abandoned = False  # the leader left without a result (cancelled): followers take over


class SingleFlight(Generic[T]):
    """Run one ``fn`` for all concurrent callers of the same key (a burst of lookups for one address).

    The first caller is the leader and runs ``fn`` in its own task; the others wait for its result or
    exception. An ``Exception`` from ``fn`` reaches every waiter (raised with the leader's traceback, so
    re-raising the shared object does not grow it per follower).

    When the leader leaves without a result (``trio.Cancelled``: its Postfix client went away or its deadline
    hit; or any other ``BaseException``), the call is marked abandoned and its key removed; each waiting
    follower then loops: the first to get there becomes the new leader and the rest follow it. This is
    simpler than running ``fn`` in a task owned by this object (which would need a nursery outliving every
    caller, and would keep a backend request alive that nobody may want), and, unlike "every follower runs
    ``fn`` itself", does not turn one cancelled leader into a burst of identical backend requests. A
    follower's own cancellation only ends its wait; the call and its other waiters are untouched.

    The in-flight map holds a key exactly while its leader is inside ``fn``: the leader removes it on every
    exit path, before waking the followers.
    """

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[Hashable, _Call[T]] = {}

    def __len__(self) -> int:
        """Calls in flight."""
        return len(self._calls)

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        # Bounded in practice: each further round needs a leader that was cancelled after taking over.
        while True:
            call = self._calls.get(key)
            if call is None:
                return await self._lead(key, fn)
            await call.done.wait()
            if call.abandoned:
                continue
            if call.error is not None:
                raise call.error.with_traceback(call.error_tb)
            return cast(T, call.value)

    async def _lead(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        call: _Call[T] = _Call()
        self._calls[key] = call
        try:
            value = await fn()
        except Exception as exc:
            call.error = exc
            call.error_tb = exc.__traceback__
            raise
        except BaseException:
            call.abandoned = True
            raise
        else:
            call.value = value
            return value
        finally:
            # Only the leader ever removes its key, and nothing replaces a key while it is present.
            if self._calls.get(key) is call:
                del self._calls[key]
            call.done.set()


def policy_cache_key(name: str, attrs: Mapping[str, str], key_attributes: Sequence[str]) -> tuple[str, ...]:
    """The cache key of a policy request: the service name, then each key attribute's value in order.

    Built only from ``key_attributes``: attributes such as ``instance`` and ``queue_id`` differ per message
    (Postfix SMTPD_POLICY_README, "Protocol description"), so keying on them would never hit. A missing
    attribute counts as "" (Postfix sends empty values for unknown ones too). Without key attributes every
    request would share one answer, so an empty ``key_attributes`` is refused.
    """
    if not key_attributes:
        raise ValueError("a policy cache key needs at least one key attribute")
    return (name, *(attrs.get(attribute, "") for attribute in key_attributes))
