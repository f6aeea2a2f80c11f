"""The open Postfix connections of one server process: what each is doing, its deadlines, the connection limits.

A connection is always in one ``ConnState``. Three of them wait on the client, and each has a deadline:

- IDLE, waiting for the first byte of the next request: the idle timeout of its listener kind, longer than
  Postfix's own, so that it is Postfix that normally closes, at a request boundary;
- READING, a request begun and waiting for its rest: ``frame_timeout`` from the request's first byte. Postfix
  writes a request whole, so only a client trickling bytes (to hold a connection past the idle timeout) meets
  it;
- WRITING, a reply blocked because the client does not read: ``write_timeout``. Postfix reads its reply at
  once; a client that pipelines requests and never reads is what meets it.

ANSWERING (the request is with the backend) has no deadline here: the HTTP client's timeout bounds it.

The deadlines are enforced by one periodic sweep (``reap``) rather than a deadline per receive or send: moving
a cancel-scope deadline twice per request cost more than parsing the request.

Limits: ``server.max_connections`` (all listeners) and a listener's own ``max_connections``. At a limit, a new
connection is not refused: the connection that has waited on its client the longest (in any of the three
waiting states, by the time that state began) is closed to make room. For Postfix that is harmless: it
reconnects transparently after an idle close, and retries once after a close without a reply. So a flood of
connections, however held open, cannot lock Postfix out: each new connection displaces the stalest one.
Accepting pauses only while every connection of the limit is being answered, which the HTTP client's timeout
bounds; the pending connections wait in the listen backlog meanwhile (no accept/EMFILE spin).
"""

from __future__ import annotations

import enum
import heapq
from collections import Counter
from collections.abc import Callable, Iterable

import trio

# A request must arrive whole within this many seconds of its first byte. Postfix writes each request at once
# (socketmap, policy and tcp_table requests are a few KB at most), so on any working network it takes
# milliseconds; Postfix's own limit on a whole socketmap exchange is 100 s.
FRAME_TIMEOUT = 10.0
# A reply must be taken by the client within this many seconds. Postfix waits for its reply and reads it at
# once; the largest reply (100 KB by default) takes a fraction of a second even on a slow link.
WRITE_TIMEOUT = 10.0
# While accepting pauses (every connection busy with a request), look again this often: a connection that
# finished its request and now waits on its client can be closed to make room, and that change is not
# signalled (it happens on every request: too hot a path to wake waiters from).
PAUSE_POLL = 0.05
# Finding the longest-waiting connection is a scan of them all; under a flood it would run for every accept.
# One scan picks this many, oldest first, to be closed by the next accepts: each is closed only if it has
# waited on since (a connection that got a request meanwhile is skipped), so they are still the oldest.
EVICTION_BATCH = 32


class ConnState(enum.Enum):
    IDLE = "idle"  # waiting for the first byte of the next request
    READING = "reading"  # a request begun, waiting for its rest
    ANSWERING = "answering"  # the request is being answered (backend call, local processing)
    WRITING = "writing"  # sending the reply


# The states in which a connection waits on its client: it may be closed to make room.
WAITING = frozenset({ConnState.IDLE, ConnState.READING, ConnState.WRITING})
# The states in which a stop closes a connection at once (no request of it is being answered).
_STOPPABLE = frozenset({ConnState.IDLE, ConnState.READING})


class Connection:
    """Per-connection state the server needs to see (deadline sweep, limits, shutdown)."""

    __slots__ = ("evicted", "idle_timeout", "listener", "scope", "since", "state", "stopping")

    def __init__(self, idle_timeout: float, listener: tuple[object, ...] = ()) -> None:
        self.scope = trio.CancelScope()
        self.state = ConnState.IDLE  # a new connection waits for its first request
        self.since = trio.current_time()  # when the current waiting state began (its deadline counts from it)
        self.idle_timeout = idle_timeout
        self.listener = listener  # ListenConfig.identity() of the listener that accepted it
        self.stopping = False  # close after the current request (shutdown, or its listener was removed)
        self.evicted = False  # closed to make room for a new connection (no longer counted)


class ConnectionRegistry:
    """The server's view of its open connections: the deadline sweep, the limits, shutdown."""

    def __init__(self, frame_timeout: float = FRAME_TIMEOUT, write_timeout: float = WRITE_TIMEOUT) -> None:
        self._connections: set[Connection] = set()
        self._counted: Counter[tuple[object, ...]] = Counter()  # per listener, evicted ones left out
        self._room = trio.lowlevel.ParkingLot()  # accept loops waiting for a connection to end
        self.frame_timeout = frame_timeout
        self.write_timeout = write_timeout
        self.stopping = False
        self.evictions = 0  # connections closed to make room, since start (logged, and read by tests)
        # The server-wide limit's next victims, oldest last (popped): (since, connection) as chosen.
        self._candidates: list[tuple[float, Connection]] = []

    def __len__(self) -> int:
        return len(self._connections)

    def counted(self, listener: tuple[object, ...] | None = None) -> int:
        """Open connections held against the limits (of one listener, or all)."""
        if listener is not None:
            return self._counted[listener]
        return self._counted.total()

    def add(self, conn: Connection) -> None:
        self._connections.add(conn)
        self._counted[conn.listener] += 1

    def discard(self, conn: Connection) -> None:
        if conn in self._connections:
            self._connections.remove(conn)
            if not conn.evicted:
                self._uncount(conn)
            self._room.unpark_all()

    def _uncount(self, conn: Connection) -> None:
        self._counted[conn.listener] -= 1
        if self._counted[conn.listener] <= 0:
            del self._counted[conn.listener]

    def busy(self) -> int:
        """metrics: connections answering a request now, its reply included (seen from another task: between
        two checkpoints a connection is idle or reading exactly when it waits for the client's next bytes)."""
        return sum(1 for conn in self._connections if conn.state not in _STOPPABLE)

    def reap(self, now: float) -> None:
        """Close connections past the deadline of the state they wait in (see the module docstring)."""
        frame, write = self.frame_timeout, self.write_timeout
        for conn in self._connections:
            state = conn.state
            if state is ConnState.IDLE:
                limit = conn.idle_timeout
            elif state is ConnState.READING:
                limit = frame
            elif state is ConnState.WRITING:
                limit = write
            else:
                continue
            if now - conn.since > limit:
                conn.scope.cancel()

    def make_room(self, listener: tuple[object, ...], listener_limit: int | None, server_limit: int) -> bool:
        """Before accepting a connection for ``listener``: close the longest-waiting connections until both
        limits leave room for one more. False when a limit is full of connections being answered (accepting
        must pause)."""
        if listener_limit is not None:
            while self._counted[listener] >= listener_limit:
                if not self._evict_one(c for c in self._connections if c.listener == listener):
                    return False
        while self._counted.total() >= server_limit:
            if not self._evict_candidate():
                return False
        return True

    def _evict_candidate(self) -> bool:
        """Close the longest-waiting connection of all, through the batch of candidates (EVICTION_BATCH)."""
        for _ in range(2):  # the batch at hand, else one fresh scan
            while self._candidates:
                since, conn = self._candidates.pop()
                if conn.evicted or conn.state not in WAITING or conn.since != since:
                    continue  # closed, or busy, or it has been active since it was chosen
                if conn in self._connections:
                    self._evict(conn)
                    return True
            waiting = [
                (conn.since, conn) for conn in self._connections if conn.state in WAITING and not conn.evicted
            ]
            self._candidates = heapq.nsmallest(EVICTION_BATCH, waiting, key=lambda pair: pair[0])
            self._candidates.reverse()  # oldest last: popped first
        return False

    async def wait_for_room(
        self,
        listener: tuple[object, ...],
        listener_limit: Callable[[], int | None],
        server_limit: Callable[[], int],
    ) -> None:
        """``make_room``, waiting while it cannot (a reload may change the limits meanwhile: read each time)."""
        while not self.make_room(listener, listener_limit(), server_limit()):
            with trio.move_on_after(PAUSE_POLL):
                await self._room.park()

    def evict_longest_waiting(self) -> bool:
        """Close the connection that has waited on its client the longest (to free a descriptor)."""
        return self._evict_candidate()

    def _evict_one(self, candidates: Iterable[Connection]) -> bool:
        victim: Connection | None = None
        for conn in candidates:
            if not conn.evicted and conn.state in WAITING and (victim is None or conn.since < victim.since):
                victim = conn
        if victim is None:
            return False
        self._evict(victim)
        return True

    def _evict(self, victim: Connection) -> None:
        victim.evicted = True
        self._uncount(victim)
        self.evictions += 1
        victim.scope.cancel()

    def stop(self) -> None:
        """Close connections waiting for a request now; busy ones close after their current reply."""
        self.stopping = True
        self._stop_where(lambda conn: True)

    def stop_listener(self, identity: tuple[object, ...]) -> None:
        """A reload removed this listener: close its connections like at shutdown, the others serve on."""
        self._stop_where(lambda conn: conn.listener == identity)

    def _stop_where(self, chosen: Callable[[Connection], bool]) -> None:
        for conn in self._connections:
            if chosen(conn):
                conn.stopping = True
                if conn.state in _STOPPABLE:
                    conn.scope.cancel()
