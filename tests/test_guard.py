"""Circuit breaker (pfxhttp.backend.guard.CircuitBreaker): state transitions at exact boundaries, one probe at a
time, cancellation safety, driven through attempt() as the runtime does. The worker pool: test_guard_pool.py."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import trio
import trio.lowlevel
import trio.testing

from pfxhttp.backend.guard import Attempt, BreakerState, CircuitBreaker
from pfxhttp.config.model import CircuitBreakerConfig
from pfxhttp.errors import BackendBusy

LIMIT = 5  # seconds; every test that awaits runs under trio.fail_after(LIMIT); the rest never block


class FakeClock:
    """An injected clock the test moves by hand; values chosen exactly representable as floats."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_breaker(failures: int = 3, cooldown: float = 10.0) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(CircuitBreakerConfig(failures=failures, cooldown=cooldown), clock=clock), clock


def state_of(breaker: CircuitBreaker) -> BreakerState:
    # A call, so that mypy does not narrow `breaker.state` across the transitions a test drives.
    return breaker.state


def open_breaker(breaker: CircuitBreaker, failures: int) -> None:
    for _ in range(failures):
        with breaker.attempt() as attempt:
            assert attempt.admitted
            attempt.failure()
    assert state_of(breaker) is BreakerState.OPEN


def fail(breaker: CircuitBreaker) -> None:
    with breaker.attempt() as attempt:
        assert attempt.admitted
        attempt.failure()


def succeed(breaker: CircuitBreaker) -> None:
    with breaker.attempt() as attempt:
        assert attempt.admitted
        attempt.success()


def admits(breaker: CircuitBreaker) -> bool:
    """Would a request go to the backend now? Asked as the runtime asks, through an attempt left without a
    verdict, which frees a half-open probe slot again."""
    with breaker.attempt() as attempt:
        admitted = attempt.admitted
    return admitted


def is_probe(breaker: CircuitBreaker, attempt: Attempt) -> bool:
    # The one request a half-open breaker lets through.
    return attempt.admitted and state_of(breaker) is BreakerState.HALF_OPEN


# -- circuit breaker ----------------------------------------------------------------------------------------


def test_opens_at_exactly_the_configured_consecutive_failures() -> None:
    breaker, _ = make_breaker(failures=3)
    for expected in (1, 2):
        fail(breaker)
        assert state_of(breaker) is BreakerState.CLOSED, expected
        assert admits(breaker)
    fail(breaker)
    assert state_of(breaker) is BreakerState.OPEN
    assert breaker.opened_count == 1
    assert not admits(breaker)
    assert breaker.rejected_count == 1


def test_success_resets_the_consecutive_failure_count() -> None:
    breaker, _ = make_breaker(failures=3)
    fail(breaker)
    fail(breaker)
    succeed(breaker)
    fail(breaker)
    fail(breaker)
    assert state_of(breaker) is BreakerState.CLOSED
    fail(breaker)
    assert state_of(breaker) is BreakerState.OPEN


def test_stays_open_until_exactly_cooldown_then_admits_one_probe() -> None:
    breaker, clock = make_breaker(failures=2, cooldown=10.0)
    open_breaker(breaker, 2)  # opened at t=100
    clock.now = 109.75
    assert not admits(breaker)
    assert state_of(breaker) is BreakerState.OPEN
    clock.now = 110.0
    with breaker.attempt() as probe:
        assert is_probe(breaker, probe)
        for _ in range(3):  # everyone else is refused while the probe runs
            with breaker.attempt() as other:
                assert not other.admitted
            assert not admits(breaker)
        probe.success()
    assert state_of(breaker) is BreakerState.CLOSED
    assert breaker.rejected_count == 7


def test_successful_probe_closes_and_forgets_failures() -> None:
    breaker, clock = make_breaker(failures=2, cooldown=1.0)
    open_breaker(breaker, 2)
    clock.now += 1.0
    with breaker.attempt() as probe:
        probe.success()
    assert state_of(breaker) is BreakerState.CLOSED
    assert all(admits(breaker) for _ in range(5))
    fail(breaker)  # one failure after closing is not enough to re-open
    assert state_of(breaker) is BreakerState.CLOSED


def test_failed_probe_reopens_for_a_full_cooldown_from_the_failure() -> None:
    breaker, clock = make_breaker(failures=1, cooldown=10.0)
    open_breaker(breaker, 1)  # t=100
    clock.now = 110.0
    with breaker.attempt() as probe:
        assert is_probe(breaker, probe)
        clock.now = 112.0  # the probe takes two seconds to fail
        probe.failure()
    assert state_of(breaker) is BreakerState.OPEN
    assert breaker.opened_count == 2
    clock.now = 121.75
    assert not admits(breaker)
    clock.now = 122.0
    assert admits(breaker)
    assert state_of(breaker) is BreakerState.HALF_OPEN


async def test_cancelled_probe_releases_the_probe_slot() -> None:
    with trio.fail_after(LIMIT):
        breaker, clock = make_breaker(failures=1, cooldown=5.0)
        open_breaker(breaker, 1)
        clock.now += 5.0
        started = trio.Event()

        async def probe() -> None:
            with breaker.attempt() as attempt:
                assert is_probe(breaker, attempt)
                started.set()
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe)
            await started.wait()
            assert not admits(breaker)  # the probe is running
            nursery.cancel_scope.cancel()
        assert state_of(breaker) is BreakerState.HALF_OPEN  # cancelled: neither success nor failure
        assert breaker.opened_count == 1
        with breaker.attempt() as again:
            assert is_probe(breaker, again)


def test_exception_in_the_probe_block_is_no_verdict() -> None:
    breaker, clock = make_breaker(failures=1, cooldown=5.0)
    open_breaker(breaker, 1)
    clock.now += 5.0
    with pytest.raises(BackendBusy), breaker.attempt() as attempt:
        assert is_probe(breaker, attempt)
        raise BackendBusy("queue full")  # not the backend's fault: must not count either way
    assert state_of(breaker) is BreakerState.HALF_OPEN
    assert breaker.opened_count == 1
    assert admits(breaker)


async def test_exactly_one_probe_among_concurrent_tasks() -> None:
    with trio.fail_after(LIMIT):
        breaker, clock = make_breaker(failures=1, cooldown=5.0)
        open_breaker(breaker, 1)
        clock.now += 5.0
        admitted: list[int] = []
        finish = trio.Event()

        async def request(i: int) -> None:
            with breaker.attempt() as attempt:
                if attempt.admitted:
                    admitted.append(i)
                    await finish.wait()
                    attempt.success()

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(request, i)
            await trio.testing.wait_all_tasks_blocked()
            assert len(admitted) == 1
            finish.set()
        assert state_of(breaker) is BreakerState.CLOSED
        assert breaker.rejected_count == 49


def test_late_failures_of_requests_admitted_before_opening_are_ignored() -> None:
    with ExitStack() as stack:
        breaker, clock = make_breaker(failures=1, cooldown=10.0)
        first = stack.enter_context(breaker.attempt())
        slow = stack.enter_context(breaker.attempt())
        slower = stack.enter_context(breaker.attempt())
        assert first.admitted and slow.admitted and slower.admitted
        first.failure()  # opens at t=100
        clock.now = 105.0
        slow.failure()  # while OPEN: must not push the cooldown to t=115
        assert breaker.opened_count == 1
        clock.now = 110.0
        probe = stack.enter_context(breaker.attempt())
        assert is_probe(breaker, probe)
        slower.failure()  # while HALF_OPEN, not the probe: must not fail the probe
        assert state_of(breaker) is BreakerState.HALF_OPEN
        assert not admits(breaker)  # the probe still holds its slot
        probe.success()
        assert state_of(breaker) is BreakerState.CLOSED


def test_stale_probe_does_not_release_its_successors_slot() -> None:
    with ExitStack() as stack:
        breaker, clock = make_breaker(failures=1, cooldown=1.0)
        straggler = stack.enter_context(breaker.attempt())  # admitted before the circuit opened
        assert straggler.admitted
        open_breaker(breaker, 1)
        clock.now += 1.0
        old_probe = stack.enter_context(breaker.attempt())
        assert is_probe(breaker, old_probe)
        straggler.success()  # the straggler's success closed the circuit meanwhile
        open_breaker(breaker, 1)
        clock.now += 1.0
        with breaker.attempt() as new_probe:
            assert is_probe(breaker, new_probe)
            stack.close()  # the old probe leaves without a verdict
            assert not admits(breaker)
            new_probe.failure()
        assert state_of(breaker) is BreakerState.OPEN


def test_a_probe_holds_its_slot_until_its_verdict() -> None:
    breaker, clock = make_breaker(failures=1, cooldown=2.0)
    fail(breaker)
    clock.now += 2.0
    with breaker.attempt() as probe:
        assert is_probe(breaker, probe)
        assert not admits(breaker)
        probe.failure()
    assert state_of(breaker) is BreakerState.OPEN
    assert breaker.opened_count == 2
    clock.now += 2.0
    with breaker.attempt() as probe:
        assert is_probe(breaker, probe)
        probe.success()
    assert state_of(breaker) is BreakerState.CLOSED


def test_verdict_misuse_raises() -> None:
    breaker, _ = make_breaker(failures=1)
    with breaker.attempt() as attempt:
        attempt.failure()
        with pytest.raises(RuntimeError):
            attempt.success()  # second verdict
    with breaker.attempt() as rejected:
        assert not rejected.admitted
        with pytest.raises(RuntimeError):
            rejected.success()
    with breaker.attempt() as late:
        pass
    with pytest.raises(RuntimeError):
        late.failure()  # after the block
    assert breaker.opened_count == 1


async def test_default_clock_is_trios(mock_clock: trio.testing.MockClock) -> None:
    # Async only to run under trio's (mock) clock; it never awaits, so it cannot block.
    breaker = CircuitBreaker(CircuitBreakerConfig(failures=1, cooldown=10.0))
    fail(breaker)
    mock_clock.jump(9.5)
    assert not admits(breaker)
    mock_clock.jump(0.5)
    assert admits(breaker)


def test_breaker_rejects_impossible_config() -> None:
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker(CircuitBreakerConfig(failures=0, cooldown=1.0))
    with pytest.raises(ValueError, match="cooldown"):
        CircuitBreaker(CircuitBreakerConfig(failures=1, cooldown=-1.0))


# -- worker pool --------------------------------------------------------------------------------------------
