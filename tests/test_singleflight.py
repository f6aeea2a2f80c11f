"""SingleFlight (pfxhttp.backend.cache): concurrent lookups of one key share one backend call; an exception
reaches every caller; cancelling the leader or a follower disturbs no one else.

The tests gate ``fn`` on events and use ``wait_all_tasks_blocked`` so that who leads and who follows is
decided, not timed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
import trio.testing

from pfxhttp.backend.cache import (
    SingleFlight,
)
from pfxhttp.errors import BackendTimeout


class Gated:
    """An ``fn`` that counts its calls and waits for the test to release it."""

    def __init__(self, result: str = "value", error: Exception | None = None) -> None:
        self.calls = 0
        self.leaders: list[trio.lowlevel.Task] = []
        self.gate = trio.Event()
        self.result = result
        self.error = error

    async def __call__(self) -> str:
        self.calls += 1
        self.leaders.append(trio.lowlevel.current_task())
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.result


async def collect(
    flight: SingleFlight[str], key: object, fn: Callable[[], Awaitable[str]], into: list[object]
) -> None:
    try:
        into.append(await flight.run(("k", key), fn))
    except BackendTimeout as exc:
        into.append(exc)


async def test_one_thousand_identical_calls_run_fn_once() -> None:
    flight: SingleFlight[str] = SingleFlight()
    fn = Gated("shared")
    results: list[object] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(1_000):
                nursery.start_soon(collect, flight, 1, fn, results)
            await trio.testing.wait_all_tasks_blocked()
            assert len(flight) == 1
            fn.gate.set()
    assert fn.calls == 1
    assert results == ["shared"] * 1_000
    assert len(flight) == 0


async def test_sequential_calls_each_run_fn() -> None:
    flight: SingleFlight[str] = SingleFlight()
    fn = Gated()
    fn.gate.set()
    with trio.fail_after(5):
        for _ in range(3):
            assert await flight.run("k", fn) == "value"
    assert fn.calls == 3  # single-flight shares a call in progress; it is not a cache
    assert len(flight) == 0


async def test_distinct_keys_run_in_parallel() -> None:
    flight: SingleFlight[str] = SingleFlight()
    started = 0
    both_started = trio.Event()

    async def fn() -> str:
        # Each call waits until the other one has started too: serialised calls would never finish.
        nonlocal started
        started += 1
        if started == 2:
            both_started.set()
        await both_started.wait()
        return "ok"

    results: list[object] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, flight, "a", fn, results)
            nursery.start_soon(collect, flight, "b", fn, results)
    assert results == ["ok", "ok"]
    assert len(flight) == 0


async def test_an_exception_reaches_every_caller() -> None:
    flight: SingleFlight[str] = SingleFlight()
    error = BackendTimeout("backend did not answer in 1s")
    fn = Gated(error=error)
    results: list[object] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(collect, flight, 1, fn, results)
            await trio.testing.wait_all_tasks_blocked()
            fn.gate.set()
    assert fn.calls == 1
    assert len(results) == 50
    assert all(r is error for r in results)
    assert len(flight) == 0


async def test_followers_complete_when_the_leader_is_cancelled() -> None:
    flight: SingleFlight[str] = SingleFlight()
    fn = Gated("after takeover")
    results: list[object] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            leader_scope = trio.CancelScope()

            async def leader() -> None:
                with leader_scope:
                    await collect(flight, 1, fn, results)

            nursery.start_soon(leader)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(10):
                nursery.start_soon(collect, flight, 1, fn, results)
            await trio.testing.wait_all_tasks_blocked()
            leader_scope.cancel()  # e.g. the leader's Postfix client closed its connection
            await trio.testing.wait_all_tasks_blocked()
            assert fn.calls == 2  # one follower took over; the other nine follow it
            assert len(flight) == 1
            fn.gate.set()
    assert leader_scope.cancelled_caught
    assert results == ["after takeover"] * 10
    assert len(flight) == 0


async def test_repeated_leader_cancellation_still_completes() -> None:
    flight: SingleFlight[str] = SingleFlight()
    fn = Gated("third time")
    results: list[object] = []
    scope_of: dict[trio.lowlevel.Task, trio.CancelScope] = {}
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def caller() -> None:
                with trio.CancelScope() as scope:
                    scope_of[trio.lowlevel.current_task()] = scope
                    await collect(flight, 1, fn, results)

            for _ in range(3):
                nursery.start_soon(caller)
                await trio.testing.wait_all_tasks_blocked()
            for expected_calls in (2, 3):
                # Whichever follower woke first leads now: cancel exactly that one.
                scope_of[fn.leaders[-1]].cancel()
                await trio.testing.wait_all_tasks_blocked()
                assert fn.calls == expected_calls
            assert len(set(fn.leaders)) == 3
            fn.gate.set()
    assert results == ["third time"]
    assert len(flight) == 0


async def test_a_cancelled_follower_does_not_disturb_the_others() -> None:
    flight: SingleFlight[str] = SingleFlight()
    fn = Gated("shared")
    results: list[object] = []
    follower_scope = trio.CancelScope()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def follower() -> None:
                with follower_scope:
                    await collect(flight, 1, fn, results)

            nursery.start_soon(collect, flight, 1, fn, results)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(follower)
            for _ in range(3):
                nursery.start_soon(collect, flight, 1, fn, results)
            await trio.testing.wait_all_tasks_blocked()
            follower_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert len(flight) == 1
            fn.gate.set()
    assert follower_scope.cancelled_caught
    assert fn.calls == 1
    assert results == ["shared"] * 4
    assert len(flight) == 0


async def test_a_leader_cancelled_alone_leaves_nothing_behind() -> None:
    flight: SingleFlight[str] = SingleFlight()
    fn = Gated()
    with trio.move_on_after(0.01) as scope:
        await flight.run("k", fn)
    assert scope.cancelled_caught
    assert len(flight) == 0
