"""The server: bind every listener, accept connections, stop gracefully.

Shape (after hypercorn's trio server): ``Server.serve`` binds all listeners first (a bind error is raised before
anything is served), reports the bound addresses through ``task_status.started``, runs one accept loop per
socket, and on ``request_stop``: stops accepting, closes idle connections, lets busy connections finish their
current request until the grace deadline, then cancels what is left. Concurrency is never limited per
connection: an idle Postfix connection is one parked task and costs active ones nothing.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any

import trio

from pfxhttp.backend.runtime import Runtime
from pfxhttp.config.model import ListenConfig, ListenKind
from pfxhttp.server.connection import ServerContext, serve_connection
from pfxhttp.server.listeners import BoundListener, remove_unix_socket
from pfxhttp.server.listeners import bind as bind_listener

DEFAULT_GRACE = 10.0
# accept() failures that mean "out of resources right now": back off instead of dying.
_TRANSIENT_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class Server:
    """Serves one Runtime on its configured listeners until ``request_stop``."""

    def __init__(
        self,
        runtime: Runtime,
        log: Any,
        *,
        grace: float = DEFAULT_GRACE,
        idle_timeouts: Mapping[ListenKind, float] | None = None,
    ) -> None:
        self.runtime = runtime
        self.log = log
        self.grace = grace
        self.context = ServerContext(runtime, log, idle_timeouts)
        # Sweep often enough that a connection never stays much past its idle timeout.
        self.reap_interval = min(1.0, min(self.context.idle_timeouts.values()) / 4)
        self.bound: list[BoundListener] = []
        self._stop = trio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def bind(self) -> list[BoundListener]:
        """Bind every configured listener (all or none); ``serve`` calls it if the caller did not."""
        if self.bound:
            return self.bound
        bound: list[BoundListener] = []
        try:
            for listen in self.runtime.config.server.listen:
                bound.append(await bind_listener(listen))
        except BaseException:
            for b in bound:
                for lst in b.listeners:
                    lst.socket.close()
                remove_unix_socket(b)
            raise
        self.bound = bound
        return bound

    async def _reap_idle(self) -> None:
        registry = self.context.registry
        while True:
            await trio.sleep(self.reap_interval)
            registry.reap(trio.current_time())

    async def _accept_loop(
        self, listener: trio.SocketListener, config: ListenConfig, nursery: trio.Nursery
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _TRANSIENT_ACCEPT_ERRORS:
                    raise
                self.log.error("accept failed, backing off", listener=config.describe(), error=str(exc))
                await trio.sleep(0.1)
                continue
            nursery.start_soon(serve_connection, stream, self.context, config)

    def _close_listeners(self) -> None:
        # Synchronous on purpose: an awaiting close would raise Cancelled at the first listener during a
        # cancellation and leave the others open. Closing twice is harmless.
        for b in self.bound:
            for lst in b.listeners:
                lst.socket.close()

    async def serve(
        self, *, task_status: trio.TaskStatus[list[BoundListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.bind()
        try:
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as acceptors:
                    acceptors.start_soon(self._reap_idle)
                    for b in self.bound:
                        for lst in b.listeners:
                            acceptors.start_soon(self._accept_loop, lst, b.config, connections)
                        self.log.info(
                            "listening", kind=b.config.kind.value, name=b.config.name, addresses=b.addresses
                        )
                    task_status.started(self.bound)
                    await self._stop.wait()
                    acceptors.cancel_scope.cancel()
                self._close_listeners()
                self.log.info(
                    "stopping", open_connections=len(self.context.registry), grace_seconds=self.grace
                )
                self.context.registry.stop()
                connections.cancel_scope.deadline = trio.current_time() + self.grace
        finally:
            self._close_listeners()
            for b in self.bound:
                remove_unix_socket(b)
            with trio.CancelScope(shield=True):
                await self.runtime.aclose()
        self.log.info("stopped")
