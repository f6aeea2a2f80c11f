"""The server: bind every listener, accept connections, stop gracefully.

Shape (after hypercorn's trio server): ``Server.serve`` binds all listeners first (a bind error is raised before
anything is served), reports the bound addresses through ``task_status.started``, runs one accept loop per
socket, and on ``request_stop``: stops accepting, closes idle connections, lets busy connections finish their
current request until the grace deadline, then cancels what is left. Concurrency is never limited per
connection: an idle Postfix connection is one parked task and costs active ones nothing.

The number of open connections is limited (``server.max_connections``, a listener's ``max_connections``, and
never above what RLIMIT_NOFILE leaves, pfxhttp.server.limits). An accept loop makes room for each new
connection (pfxhttp.server.registry: at a limit the longest-waiting connection is closed) before it serves
one; it pauses while no connection can be closed, leaving new ones in the listen backlog.
"""

from __future__ import annotations

import contextlib
import errno
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import trio

from pfxhttp.backend.runtime import Runtime
from pfxhttp.config.model import ListenKind
from pfxhttp.server import systemd
from pfxhttp.server.connection import ServerContext, serve_connection
from pfxhttp.server.limits import connection_cap
from pfxhttp.server.listeners import BindError, BoundListener, bind_all, close_bound
from pfxhttp.server.listeners import bind as bind_listener
from pfxhttp.server.registry import FRAME_TIMEOUT, WRITE_TIMEOUT

if TYPE_CHECKING:
    from pfxhttp.server.metrics import Metrics
    from pfxhttp.server.metrics_http import MetricsEndpoint

DEFAULT_GRACE = 10.0
# accept() failures that mean "out of resources right now": back off instead of dying.
_TRANSIENT_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF = 0.1
# At most one log line per this many seconds about accept failures and about connections closed at the
# limit: under a flood, one line per event would flood the log instead.
REPORT_INTERVAL = 60.0


class Server:
    """Serves one Runtime on its configured listeners until ``request_stop``."""

    def __init__(
        self,
        runtime: Runtime,
        log: Any,
        *,
        grace: float = DEFAULT_GRACE,
        idle_timeouts: Mapping[ListenKind, float] | None = None,
        inherited: Mapping[str, Sequence[int]] | None = None,  # systemd: socket activation (systemd.py)
        notify_environ: Mapping[str, str] | None = None,  # systemd: $NOTIFY_SOCKET; None: no sd_notify
        frame_timeout: float = FRAME_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self.runtime = runtime
        self.started_config = runtime.config  # what start-time settings (metrics, run_as_*) came from
        self.log = log
        self.grace = grace
        self.context = ServerContext(
            runtime, log, idle_timeouts, frame_timeout=frame_timeout, write_timeout=write_timeout
        )
        # Sweep often enough that a connection never stays much past one of its deadlines.
        shortest = min(*self.context.idle_timeouts.values(), frame_timeout, write_timeout)
        self.reap_interval = min(1.0, shortest / 4)
        self.fd_cap = connection_cap()  # RLIMIT_NOFILE as it is now (cli raised it at start)
        self._accept_failures = 0  # since the last report (REPORT_INTERVAL)
        self._accept_reported = -math.inf
        self.bound: list[BoundListener] = []
        self._stop = trio.Event()
        self._acceptors: trio.Nursery | None = None  # while serving: the accept loops (reload adds to it)
        self._connections: trio.Nursery | None = None
        self._accept_scopes: dict[int, trio.CancelScope] = {}
        self.inherited: Mapping[str, Sequence[int]] = inherited or {}  # systemd
        self.notify_environ = notify_environ  # systemd
        # --- metrics: the Runtime's Metrics (Runtime(config, metrics=Metrics.for_config(config))) ---
        # prometheus-client is imported only when metrics are enabled: it costs a few MB of a 50 MB budget.
        self.metrics = cast("Metrics | None", runtime.metrics)
        self.metrics_endpoint: MetricsEndpoint | None = None
        metrics_config = runtime.config.server.metrics
        if metrics_config.enabled:
            from pfxhttp.server.metrics_http import MetricsEndpoint

            if self.metrics is None:
                raise ValueError("server.metrics is enabled but the Runtime was built without metrics")
            self.metrics_endpoint = MetricsEndpoint(self.metrics, metrics_config, log)
        if self.metrics is not None:
            self.context.metrics = self.metrics
            self.metrics.attach(self.context.runtime, self.context.registry.busy)
        # --- end metrics ---

    def request_stop(self) -> None:
        if not self._stop.is_set():  # systemd
            self.sd_notify(systemd.STOPPING)  # systemd
        self._stop.set()

    def stop_accepting(self) -> None:
        """Take no new connections, serve the open ones on (``request_stop`` follows). A worker being replaced
        calls it first (pfxhttp.server.worker): its sockets are shared, so new connections go to the others."""
        for scope in self._accept_scopes.values():
            scope.cancel()

    async def bind(self) -> list[BoundListener]:
        """Bind every configured listener (all or none); ``serve`` calls it if the caller did not."""
        if self.bound:
            return self.bound
        bound = await bind_all(self.runtime.config.server.listen, self.inherited)
        try:
            if self.metrics_endpoint is not None:  # metrics
                await self.metrics_endpoint.bind()
        except BaseException:
            for b in bound:
                close_bound(b)
            raise
        self.bound = bound
        return bound

    def max_connections(self) -> int:
        """server.max_connections as in force: the configured one, below what RLIMIT_NOFILE allows."""
        return min(self.runtime.config.server.max_connections, self.fd_cap)

    def _check_fd_cap(self) -> None:
        configured = self.runtime.config.server.max_connections
        if configured > self.fd_cap:
            self.log.error(
                "server.max_connections is above what RLIMIT_NOFILE allows; raise LimitNOFILE= (ulimit -n)",
                max_connections=configured,
                applied=self.fd_cap,
            )

    async def _reap_idle(self) -> None:
        registry = self.context.registry
        reported_evictions = 0
        next_report = trio.current_time() + REPORT_INTERVAL
        while True:
            await trio.sleep(self.reap_interval)
            now = trio.current_time()
            registry.reap(now)
            if now >= next_report:
                next_report = now + REPORT_INTERVAL
                if registry.evictions > reported_evictions:
                    self.log.error(
                        "connection limit reached: connections waiting on their client were closed to make room",
                        closed=registry.evictions - reported_evictions,
                        max_connections=self.max_connections(),
                    )
                    reported_evictions = registry.evictions

    async def _accept_loop(
        self, listener: trio.SocketListener, bound: BoundListener, nursery: trio.Nursery
    ) -> None:
        registry = self.context.registry
        identity = bound.config.identity()
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _TRANSIENT_ACCEPT_ERRORS:
                    raise
                self._accept_failed(bound, exc)
                registry.evict_longest_waiting()  # frees a descriptor unless every connection is busy
                await trio.sleep(ACCEPT_BACKOFF)
                continue
            # Room for it: at a limit the longest-waiting connection is closed; while none can be, accepting
            # pauses with this one held (its request waits in its socket, as the next ones in the backlog).
            # Making room before accepting would close a connection before one arrives (or cost an epoll
            # wait for readiness per accept, which under a flood kept Postfix's connections in the backlog).
            try:
                await registry.wait_for_room(
                    identity, lambda: bound.config.max_connections, self.max_connections
                )
            except BaseException:
                stream.socket.close()  # synchronous: safe under cancellation (stop_accepting, shutdown)
                raise
            # bound.config, read per connection: a reload may replace it with the new file's (same identity).
            # Registered here, not in its task: the next accept may come before that task first runs.
            conn = self.context.register(bound.config)
            try:
                nursery.start_soon(serve_connection, stream, self.context, bound.config, conn)
            except BaseException:
                registry.discard(conn)
                stream.socket.close()
                raise

    def _accept_failed(self, bound: BoundListener, exc: OSError) -> None:
        self._accept_failures += 1
        now = trio.current_time()
        if now - self._accept_reported >= REPORT_INTERVAL:
            self.log.error(
                "accept failed, backing off",
                listener=bound.config.describe(),
                error=str(exc),
                failures=self._accept_failures,
            )
            self._accept_reported = now
            self._accept_failures = 0

    def _start_accepting(self, bound: BoundListener) -> None:
        assert self._acceptors is not None and self._connections is not None
        scope = trio.CancelScope()
        self._accept_scopes[id(bound)] = scope
        self._acceptors.start_soon(self._accept_all, bound, scope, self._connections)
        self.log.info(
            "listening", kind=bound.config.kind.value, name=bound.config.name, addresses=bound.addresses
        )

    async def _accept_all(
        self, bound: BoundListener, scope: trio.CancelScope, connections: trio.Nursery
    ) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                for lst in bound.listeners:
                    nursery.start_soon(self._accept_loop, lst, bound, connections)

    def _close_listeners(self) -> None:
        # Synchronous on purpose: an awaiting close would raise Cancelled at the first listener during a
        # cancellation and leave the others open. Closing twice is harmless.
        for b in self.bound:
            for lst in b.listeners:
                lst.socket.close()
        if self.metrics_endpoint is not None:  # metrics
            self.metrics_endpoint.close()

    async def serve(
        self, *, task_status: trio.TaskStatus[list[BoundListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.bind()
        try:
            async with trio.open_nursery() as connections:
                self._connections = connections
                async with trio.open_nursery() as acceptors:
                    self._acceptors = acceptors
                    acceptors.start_soon(self._reap_idle)
                    for b in self.bound:
                        self._start_accepting(b)
                    if self.metrics_endpoint is not None:  # metrics
                        acceptors.start_soon(self.metrics_endpoint.serve)
                        endpoint = self.metrics_endpoint
                        self.log.info(
                            "listening",
                            kind="metrics",
                            name=endpoint.config.path,
                            addresses=endpoint.addresses,
                        )
                    self._check_fd_cap()
                    task_status.started(self.bound)
                    self.sd_notify(self.ready_state())  # systemd
                    await self._stop.wait()
                    acceptors.cancel_scope.cancel()
                self._acceptors = None
                self._close_listeners()
                self.log.info(
                    "stopping", open_connections=len(self.context.registry), grace_seconds=self.grace
                )
                self.context.registry.stop()
                connections.cancel_scope.deadline = trio.current_time() + self.grace
        finally:
            self._acceptors = self._connections = None
            self._close_listeners()
            for b in self.bound:
                close_bound(b)
            with trio.CancelScope(shield=True):
                await self.runtime.aclose()
        self.log.info("stopped")

    async def apply(self, runtime: Runtime) -> None:
        """A reload: serve ``runtime`` from now on. Listeners the new file no longer has (or binds differently)
        stop accepting and their connections close after their current request; new ones are bound (a bind
        failure is logged, the rest goes on); kept listeners serve on, uninterrupted. Requests already running
        finish on the old runtime, which is then closed. Caches belong to a runtime, so a reload starts with
        empty caches: answers cached under the old backend definitions are never served by the new ones."""
        if self._acceptors is None:
            raise RuntimeError("apply() needs a serving server")
        wanted = {listen.binding(): listen for listen in runtime.config.server.listen}
        kept: list[BoundListener] = []
        for bound in self.bound:
            listen = wanted.pop(bound.config.binding(), None)
            if listen is None:
                self._accept_scopes.pop(id(bound)).cancel()
                close_bound(bound)
                self.context.registry.stop_listener(bound.config.identity())
                self.log.info("listener removed", kind=bound.config.kind.value, addresses=bound.addresses)
            else:
                bound.config = listen  # same socket, the new file's settings (e.g. its worker_pool)
                kept.append(bound)
        self.bound = kept
        for listen in wanted.values():  # in file order
            try:
                bound = await bind_listener(listen, self.inherited)
            except BindError as exc:
                self.log.error("cannot add listener", listener=listen.describe(), error=str(exc))
                continue
            self.bound.append(bound)
            self._start_accepting(bound)
        previous = self.context.swap(runtime)
        self.runtime = runtime
        self._check_fd_cap()
        assert self._connections is not None
        self._connections.start_soon(previous.retire, runtime.config.server.http_client.timeout + 5.0)

    # --- systemd: sd_notify(3) (socket activation is in listeners.py; see systemd.py) ---

    def sd_notify(self, state: str) -> None:
        """Tell systemd ``state`` when started with ``notify_environ`` (systemd.send: never raises)."""
        systemd.send(state, self.notify_environ, self.log)

    def ready_state(self) -> str:
        """``READY=1`` with a STATUS= line for ``systemctl status``."""
        count = sum(len(b.listeners) for b in self.bound)
        return systemd.ready_state(f"serving on {count} socket(s)")

    def systemd_reloading(self) -> contextlib.AbstractContextManager[None]:
        """Wrap a configuration reload in RELOADING=1 ... READY=1 (systemd.reloading)."""
        return systemd.reloading(self.sd_notify, self.ready_state)
