"""Fault-tolerance primitives between a Postfix request and its HTTP backend.

:class:`CircuitBreaker` stops calling a backend that keeps failing: after ``failures`` consecutive failures it
*opens* and every lookup is answered TEMP / the policy error action at once, without a connect attempt, for
``cooldown`` seconds. Then it is *half-open*: exactly one probe request goes through at a time; its success
closes the circuit, its failure opens it for another full cooldown. Postfix retries a temporary lookup
failure on its own (socketmap_table(5): TEMP; access(5): DEFER_IF_PERMIT), so answering at once is cheaper for
everyone than letting each smtpd process wait for a dead backend's timeout.

:class:`WorkerPool` bounds the backend requests in flight (never the client connections): at most
``max_workers`` inside, up to ``max_queue`` more waiting in FIFO order, and beyond that :class:`BackendBusy` at
once. That is back-pressure: under overload Postfix gets a quick temporary answer instead of a growing queue
of requests whose clients have long given up.

Intended use by the runtime, breaker outside and pool inside, so that an open circuit rejects a request
before it occupies a place in the queue, and so that a :class:`BackendBusy` leaves the block without a
verdict and therefore counts as neither success nor failure of the backend::

    with breaker.attempt() as attempt:
        if not attempt.admitted:
            ...answer TEMP / the error action...
        async with listener_pool.slot(), server_pool.slot():
            try:
                response = await backend_request(...)
            except BackendError:
                attempt.failure()
                raise
            attempt.success()

Nested pools cannot deadlock. A deadlock needs a cycle of tasks, each holding a slot and waiting for a slot
another one holds. Here every task takes its slots in one fixed order (its listener's pool, then the
server-wide pool), and a task holding a server-wide slot waits for no slot at all: it only runs its backend
request, whose total deadline bounds it, and then releases both slots. So every waiter on the server-wide pool
waits for tasks that make progress, and every waiter on a listener pool waits for tasks that either hold a
server-wide slot or wait for one; there is no cycle. The rule for callers is therefore: acquire pool slots
only in the order listener -> server, and never acquire a listener slot while holding the server-wide one.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import trio

from pfxhttp.config.model import CircuitBreakerConfig, WorkerPoolConfig
from pfxhttp.errors import BackendBusy

Clock = Callable[[], float]


class BreakerState(enum.Enum):
    CLOSED = "closed"  # requests go to the backend; consecutive failures are counted
    OPEN = "open"  # requests are rejected at once until the cooldown has passed
    HALF_OPEN = "half_open"  # one probe request at a time decides between CLOSED and OPEN


class Attempt:
    """One request's passage through a :class:`CircuitBreaker`; created by :meth:`CircuitBreaker.attempt`.

    ``admitted`` says whether the request may go to the backend. An admitted attempt takes at most one
    verdict, :meth:`success` or :meth:`failure`, inside the ``with`` block; leaving the block without one
    (cancellation, an exception that is not the backend's fault) counts as neither, and frees the probe slot
    if this attempt was the half-open probe.
    """

    __slots__ = ("_breaker", "_done", "_probe_id", "admitted")

    def __init__(self, breaker: CircuitBreaker, *, admitted: bool, probe_id: int | None) -> None:
        self._breaker = breaker
        self._probe_id = probe_id
        self._done = False
        self.admitted = admitted

    def success(self) -> None:
        """The backend answered as configured: close the circuit."""
        self._take_verdict()
        self._breaker._on_success()

    def failure(self) -> None:
        """The backend failed (timeout, transport, bad status...): count it; a failed probe re-opens."""
        self._take_verdict()
        self._breaker._on_failure(self._probe_id)

    def _take_verdict(self) -> None:
        # Both are bugs in the caller; failing loudly keeps the counters honest.
        if not self.admitted:
            raise RuntimeError("verdict on a request the circuit breaker rejected")
        if self._done:
            raise RuntimeError("a circuit breaker attempt takes one verdict, inside its block")
        self._done = True

    def _leave(self) -> None:
        if not self._done:
            self._done = True
            self._breaker._release_probe(self._probe_id)


class CircuitBreaker:
    """Per-backend circuit breaker (see the module docstring); not thread-safe, one trio run only.

    ``clock`` returns seconds on a monotonic scale; the default is trio's clock, so tests can use
    ``trio.testing.MockClock``. ``state`` is the stored state: an OPEN breaker whose cooldown has passed
    reports OPEN until the next :meth:`attempt` turns it HALF_OPEN.
    """

    def __init__(self, config: CircuitBreakerConfig, clock: Clock = trio.current_time) -> None:
        # The configuration layer rejects these with a file location; this guards direct construction.
        if config.failures < 1:
            raise ValueError(f"circuit breaker failures must be >= 1, got {config.failures}")
        if config.cooldown < 0:
            raise ValueError(f"circuit breaker cooldown must be >= 0, got {config.cooldown}")
        self._config = config
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_id: int | None = None  # the half-open probe in flight, if any
        self._next_probe_id = 0
        self.opened_count = 0  # transitions into OPEN, including re-opens after a failed probe
        self.rejected_count = 0  # requests refused without calling the backend

    @property
    def state(self) -> BreakerState:
        return self._state

    @contextmanager
    def attempt(self) -> Iterator[Attempt]:
        """Ask to call the backend. The verdict is given on the attempt inside the block, so a cancellation
        between admission and verdict still frees the half-open probe slot."""
        admitted, probe_id = self._admit()
        attempt = Attempt(self, admitted=admitted, probe_id=probe_id)
        try:
            yield attempt
        finally:
            attempt._leave()

    # -- state machine ------------------------------------------------------------------------------------

    def _admit(self) -> tuple[bool, int | None]:
        if self._state is BreakerState.OPEN:
            # ">=": the circuit stays open for exactly `cooldown` seconds, not a tick more or less.
            if self._clock() - self._opened_at >= self._config.cooldown:
                self._state = BreakerState.HALF_OPEN
        if self._state is BreakerState.CLOSED:
            return True, None
        if self._state is BreakerState.HALF_OPEN and self._probe_id is None:
            self._next_probe_id += 1
            self._probe_id = self._next_probe_id
            return True, self._probe_id
        self.rejected_count += 1
        return False, None

    def _on_success(self) -> None:
        # Any success closes, even from a request admitted before the circuit opened: the backend answered.
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probe_id = None

    def _on_failure(self, probe_id: int | None) -> None:
        if self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self._config.failures:
                self._open()
        elif self._state is BreakerState.HALF_OPEN and probe_id is not None and probe_id == self._probe_id:
            self._open()
        # Otherwise a request admitted before the circuit opened failed late. The circuit is already open
        # for that reason; extending the cooldown or failing the probe on its account would be double
        # counting one outage.

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self._probe_id = None
        self.opened_count += 1

    def _release_probe(self, probe_id: int | None) -> None:
        # Only the current probe frees the slot: a stale one (the circuit closed and half-opened again
        # meanwhile) must not free the slot of its successor.
        if probe_id is not None and probe_id == self._probe_id:
            self._probe_id = None


class WorkerPool:
    """At most ``max_workers`` backend requests in flight, ``max_queue`` more waiting (FIFO), then
    :class:`BackendBusy`. See the module docstring for nesting two pools."""

    def __init__(self, config: WorkerPoolConfig) -> None:
        # The configuration layer rejects these with a file location; this guards direct construction.
        if config.max_workers < 1:
            raise ValueError(f"worker pool max_workers must be >= 1, got {config.max_workers}")
        if config.max_queue < 0:
            raise ValueError(f"worker pool max_queue must be >= 0, got {config.max_queue}")
        self._config = config
        # trio.Semaphore gives what the pool needs: waiters park in a FIFO ParkingLot, a release hands the
        # slot directly to the first waiter (so a newcomer cannot overtake the queue), and a cancelled
        # waiter is removed from the lot before it is ever handed a slot. max_value catches double releases.
        self._slots = trio.Semaphore(config.max_workers, max_value=config.max_workers)

    @property
    def max_workers(self) -> int:
        return self._config.max_workers

    @property
    def max_queue(self) -> int:
        return self._config.max_queue

    @property
    def in_flight(self) -> int:
        """Slots taken, including one just handed to a waiter that has not resumed yet."""
        return self._config.max_workers - self._slots.value

    @property
    def waiting(self) -> int:
        return self._slots.statistics().tasks_waiting

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block; wait in line if all are taken; :class:`BackendBusy` if the line is full."""
        # No checkpoint between this test and the acquire below, so the test still holds when acquiring.
        if self._slots.value == 0 and self.waiting >= self._config.max_queue:
            # Checkpoint anyway so that a caller retrying in a loop cannot starve the other tasks.
            await trio.lowlevel.checkpoint()
            raise BackendBusy(f"worker pool full: {self.in_flight} in flight, {self.waiting} waiting")
        async with self._slots:
            yield
