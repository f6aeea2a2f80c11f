"""The worker pool (pfxhttp.backend.guard.WorkerPool): never more than max_workers inside under load, FIFO order,
back-pressure when the queue is full, cancellation safety, nested pools without deadlock."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from pfxhttp.backend.guard import WorkerPool
from pfxhttp.config.model import WorkerPoolConfig
from pfxhttp.errors import BackendBusy, BackendError
from tests.test_guard import LIMIT


def make_pool(max_workers: int, max_queue: int) -> WorkerPool:
    return WorkerPool(WorkerPoolConfig(max_workers=max_workers, max_queue=max_queue))


async def test_never_more_than_max_workers_inside_under_load() -> None:
    with trio.fail_after(LIMIT):
        pool = make_pool(max_workers=7, max_queue=200)
        inside = 0
        peak = 0
        done = 0

        async def request(i: int) -> None:
            nonlocal inside, peak, done
            async with pool.slot():
                inside += 1
                try:
                    peak = max(peak, inside)
                    assert inside <= 7
                    # A slot just handed to a waiter that has not resumed yet counts as in flight.
                    assert inside <= pool.in_flight <= 7
                    for _ in range(i % 4 + 1):  # hold the slot across a few scheduling rounds
                        await trio.lowlevel.checkpoint()
                        assert inside <= 7
                finally:
                    inside -= 1
            done += 1

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(request, i)
        assert done == 200
        assert peak == 7  # the limit was actually reached, so the bound was tested
        assert pool.in_flight == 0
        assert pool.waiting == 0


async def queue_up(nursery: trio.Nursery, pool: WorkerPool, name: str, order: list[str]) -> trio.CancelScope:
    """Start a task that waits for a slot, records its name inside, and returns once it is parked."""

    async def request(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            async with pool.slot():
                order.append(name)
                await trio.lowlevel.checkpoint()

    scope: trio.CancelScope = await nursery.start(request)
    await trio.testing.wait_all_tasks_blocked()
    return scope


async def test_waiters_enter_in_fifo_order_and_newcomers_do_not_overtake() -> None:
    with trio.fail_after(LIMIT):
        pool = make_pool(max_workers=1, max_queue=10)
        order: list[str] = []
        async with trio.open_nursery() as nursery:
            async with pool.slot():
                for i in range(6):
                    await queue_up(nursery, pool, str(i), order)
                    assert pool.waiting == i + 1
            # The release handed the slot straight to waiter 0: there was no free slot to grab.
            assert pool.in_flight == 1
            assert pool.waiting == 5
            nursery.start_soon(queue_up, nursery, pool, "late", order)
        assert order == ["0", "1", "2", "3", "4", "5", "late"]
        assert pool.in_flight == 0


async def test_busy_when_the_queue_is_full() -> None:
    with trio.fail_after(LIMIT):
        pool = make_pool(max_workers=1, max_queue=2)
        order: list[str] = []
        async with trio.open_nursery() as nursery:
            async with pool.slot():
                await queue_up(nursery, pool, "a", order)
                await queue_up(nursery, pool, "b", order)
                with pytest.raises(BackendBusy) as caught:
                    async with pool.slot():
                        pytest.fail("entered a full pool")
                assert caught.value.reason == "server busy"
                assert isinstance(caught.value, BackendError)
                assert (pool.in_flight, pool.waiting) == (1, 2)  # the refusal left no trace
        assert order == ["a", "b"]
        async with pool.slot():  # drained: usable again
            assert pool.in_flight == 1


async def test_cancellation_while_queued_leaves_no_trace() -> None:
    with trio.fail_after(LIMIT):
        pool = make_pool(max_workers=1, max_queue=3)
        order: list[str] = []
        async with trio.open_nursery() as nursery:
            async with pool.slot():
                await queue_up(nursery, pool, "a", order)
                b = await queue_up(nursery, pool, "b", order)
                await queue_up(nursery, pool, "c", order)
                b.cancel()
                await trio.testing.wait_all_tasks_blocked()
                assert (pool.in_flight, pool.waiting) == (1, 2)
                await queue_up(nursery, pool, "d", order)  # b's place in the queue is free again
                assert pool.waiting == 3
        assert order == ["a", "c", "d"]
        assert (pool.in_flight, pool.waiting) == (0, 0)


async def test_cancellation_just_after_the_handoff_passes_the_slot_on() -> None:
    with trio.fail_after(LIMIT):
        pool = make_pool(max_workers=1, max_queue=2)
        order: list[str] = []
        async with trio.open_nursery() as nursery:
            async with pool.slot():
                a = await queue_up(nursery, pool, "a", order)
                await queue_up(nursery, pool, "b", order)
            a.cancel()  # the slot was already handed to a, which has not resumed yet
        assert "b" in order  # a's slot, whatever a did with it, reached b
        assert (pool.in_flight, pool.waiting) == (0, 0)


async def test_max_queue_zero_means_no_waiting() -> None:
    with trio.fail_after(LIMIT):
        pool = make_pool(max_workers=2, max_queue=0)
        release = trio.Event()

        async def holder(task_status: trio.TaskStatus[None]) -> None:
            async with pool.slot():
                task_status.started()
                await release.wait()

        async with trio.open_nursery() as nursery:
            await nursery.start(holder)
            await nursery.start(holder)
            with pytest.raises(BackendBusy):
                async with pool.slot():
                    pytest.fail("entered a full pool")
            assert (pool.in_flight, pool.waiting) == (2, 0)
            release.set()
        async with pool.slot():
            assert pool.in_flight == 1


async def test_nested_listener_and_server_pools_do_not_deadlock() -> None:
    with trio.fail_after(LIMIT):
        server = make_pool(max_workers=3, max_queue=200)
        listeners = [make_pool(max_workers=2, max_queue=200) for _ in range(3)]
        inside_server = 0
        done = 0

        async def request(i: int) -> None:
            nonlocal inside_server, done
            listener = listeners[i % len(listeners)]
            async with listener.slot(), server.slot():  # the order the runtime uses
                inside_server += 1
                assert inside_server <= 3
                assert listener.in_flight <= 2
                await trio.lowlevel.checkpoint()
                inside_server -= 1
            done += 1

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(request, i)
        assert done == 200
        assert all(p.in_flight == 0 and p.waiting == 0 for p in (server, *listeners))


def test_pool_rejects_impossible_config() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        make_pool(max_workers=0, max_queue=1)
    with pytest.raises(ValueError, match="max_queue"):
        make_pool(max_workers=1, max_queue=-1)
