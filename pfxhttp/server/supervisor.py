"""``server.workers: N`` (N > 1): a supervisor process and N worker processes on the same listening sockets.

The started process becomes the supervisor. It binds every listener (as root, if started so), drops privileges
(server.run_as_user) right after, exactly as a single process would, and only then starts the workers: they
inherit the identity, and a reload binds new listeners with the same rights as a single process's reload.
Workers are fresh interpreters (``python -m pfxhttp run --internal-worker``, worker.py; forking a running trio
loop is not an option) that inherit the bound sockets and serve them with the normal Server. The kernel hands
each new connection to one of the processes waiting in accept() on a socket; a worker that exits takes only
its own connections with it. The supervisor never accepts and keeps the sockets open, so a listening socket
outlives any worker. Binding all or none, the privilege drop, the signal loop and a reload's reading and
"restart to apply" checks are the single process's own (daemon.py).

N workers started together are a generation (generation.py). systemd hears READY=1 once every worker of the
first generation serves, RELOADING=1 / READY=1 around a reload and STOPPING=1 at a stop, all from the
supervisor (NotifyAccess=main); workers never notify. SIGHUP: the file is validated first (invalid: every
problem logged, the running workers serve on); then a new generation of the new file's ``workers`` count
starts on the new file's listeners - sockets it shares with the running generation are passed on, new ones
are bound, sockets it no longer has are closed once no generation uses them - and only once all of it serves
does the old generation get SIGTERM and finish its requests in flight. A new generation that cannot start is
stopped and the old one serves on. SIGTERM/SIGINT: every worker gets SIGTERM, the supervisor waits for them
and exits 0. The supervisor never exits because a worker crashed: generation.py restarts it.

The metrics endpoint is refused with workers (the config loader refuses the combination; a reload to workers: 1
with metrics is refused here): each process would count only its own requests.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio

from pfxhttp.backend.compile import check_entry
from pfxhttp.config import load_config
from pfxhttp.config.model import Config
from pfxhttp.logsetup import configure_logging, get_logger
from pfxhttp.server import systemd
from pfxhttp.server.daemon import (
    drop_privileges,
    load_for_reload,
    log_restart_keys,
    open_signals,
    restart_keys,
    watch_signals,
)
from pfxhttp.server.generation import Generation
from pfxhttp.server.listeners import BoundListener, bind_all, close_bound, remove_unix_socket
from pfxhttp.server.listeners import bind as bind_listener
from pfxhttp.server.worker import socket_key


class Supervisor:
    """Runs generations of workers until SIGTERM/SIGINT; ``run`` returns the exit status."""

    def __init__(
        self,
        config: Config,
        log: Any,
        *,
        inherited: Mapping[str, Sequence[int]] | None = None,  # systemd socket activation
        environ: Mapping[str, str],  # PFXHTTP_* overrides for reloads, NOTIFY_SOCKET; workers get the rest
        command: Sequence[str] = (sys.executable, "-m", "pfxhttp", "run"),
    ) -> None:
        self.config = config
        self.log = log
        self.inherited: Mapping[str, Sequence[int]] = inherited or {}
        self.environ = environ
        self.command = tuple(command)
        self.worker_environ = {
            k: v for k, v in environ.items() if k != "NOTIFY_SOCKET" and k not in systemd.LISTEN_VARIABLES
        }
        self.current: Generation | None = None
        self.generations: list[Generation] = []  # every generation with a worker alive or starting
        self.opened: list[BoundListener] = []  # every socket the supervisor holds
        self.stopping = trio.Event()
        self.exit_code = 0
        self._generations_started = 0
        self._nursery: trio.Nursery | None = None
        self._scopes: list[trio.CancelScope] = []  # the signal and reload tasks, cancelled at stop
        self._reloads_send, self._reloads_receive = trio.open_memory_channel[None](1)

    # --- running ---------------------------------------------------------------------------------------

    async def run(self) -> int:
        with open_signals() as signals:
            bound = await self._bind_all(self.config)  # BindError reaches the caller: exit 71
            try:
                await drop_privileges(self.config, self.log)  # before any worker starts: they inherit it
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    watch = partial(
                        watch_signals,
                        signals,
                        log=lambda: self.log,
                        stop=self.request_stop,
                        hangup=self._hangup,
                    )
                    nursery.start_soon(self._in_scope, watch)
                    first = self._launch(self.config, bound)
                    if await self._wait_started(first):
                        self.current = first
                        self.log.info("workers ready", workers=first.size, generation=first.number)
                        self.notify(self.ready_state())
                        nursery.start_soon(self._in_scope, self._reloader)  # a SIGHUP until now waited
                    elif not self.stopping.is_set():
                        self.log.error("workers could not start", reason=first.failure)
                        self.exit_code = first.exit_code if first.exit_code and first.exit_code > 0 else 1
                        self.request_stop()
                    await self.stopping.wait()
            finally:
                for b in self.opened:
                    close_bound(b)
                self.opened.clear()
        self.log.info("stopped")
        return self.exit_code

    async def _in_scope(self, task: Callable[[], Awaitable[None]]) -> None:
        with trio.CancelScope() as scope:
            self._scopes.append(scope)
            await task()

    def request_stop(self) -> None:
        """Stop every generation (SIGTERM to each worker); ``run`` returns once all of them exited."""
        if self.stopping.is_set():
            return
        self.notify(systemd.STOPPING)
        self.stopping.set()
        for scope in self._scopes:
            scope.cancel()
        for generation in self.generations:
            generation.stop()

    def request_reload(self) -> None:
        """Reload soon; requests while one runs are coalesced into one more."""
        try:
            self._reloads_send.send_nowait(None)
        except trio.WouldBlock:
            pass

    async def _hangup(self) -> None:
        self.request_reload()  # without waiting: a signal during a reload must still reach watch_signals

    async def _reloader(self) -> None:
        async for _ in self._reloads_receive:
            if self.config.source is None:
                self.log.error("SIGHUP: no configuration file to reload")
                continue
            await self.reload(Path(self.config.source))

    # --- listeners -------------------------------------------------------------------------------------

    async def _bind_all(self, config: Config) -> list[BoundListener]:
        bound = await bind_all(config.server.listen, self.inherited)
        self.opened += bound
        self._log_listening(bound)
        return bound

    def _log_listening(self, bound: Sequence[BoundListener]) -> None:
        for b in bound:
            self.log.info("listening", kind=b.config.kind.value, name=b.config.name, addresses=b.addresses)

    async def _rebind(self, config: Config, running: Sequence[BoundListener]) -> list[BoundListener]:
        """The new file's listeners: the running sockets it keeps, new ones bound (a failure is logged and
        that listener left out, as a single process does)."""
        have = {socket_key(b.config): b for b in running}
        result: list[BoundListener] = []
        added: list[BoundListener] = []
        try:
            for listen in config.server.listen:
                kept = have.get(socket_key(listen))
                if kept is not None:
                    result.append(kept)
                    continue
                try:
                    new = await bind_listener(listen, self.inherited)
                except OSError as exc:  # BindError, or the socket file could not be replaced
                    self.log.error("cannot add listener", listener=listen.describe(), error=str(exc))
                    continue
                added.append(new)
                result.append(new)
        except BaseException:
            for b in added:
                close_bound(b)
            raise
        self.opened += added
        self._log_listening(added)
        return result

    def _retire(self, generation: Generation) -> None:
        """Close the sockets of a generation whose workers are all gone, unless another one still uses them."""
        if generation in self.generations:
            self.generations.remove(generation)
        in_use = [b for g in self.generations for b in g.bound]
        if self.current is not None and self.current is not generation:
            in_use += self.current.bound
        paths = {b.config.address for b in in_use}
        for b in generation.bound:
            if any(b is other for other in in_use) or not any(b is other for other in self.opened):
                continue
            self.opened = [other for other in self.opened if other is not b]
            for lst in b.listeners:
                lst.socket.close()
            if b.config.address not in paths:  # a rebound unix socket at the same path is not ours to remove
                remove_unix_socket(b)
            if not self.stopping.is_set():
                self.log.info("listener removed", kind=b.config.kind.value, addresses=b.addresses)

    # --- generations -----------------------------------------------------------------------------------

    def _launch(self, config: Config, bound: list[BoundListener]) -> Generation:
        assert self._nursery is not None
        self._generations_started += 1
        generation = Generation(
            self._generations_started, config, bound, self.command, self.worker_environ, self.log
        )
        self.generations.append(generation)
        if self.stopping.is_set():
            generation.stop()
        self._nursery.start_soon(self._run_generation, generation)
        self.log.info("starting workers", workers=generation.size, generation=generation.number)
        return generation

    async def _wait_started(self, generation: Generation) -> bool:
        return await generation.wait_started() and not self.stopping.is_set()

    async def _run_generation(self, generation: Generation) -> None:
        try:
            await generation.run()
        finally:
            self._retire(generation)

    # --- reload ----------------------------------------------------------------------------------------

    async def reload(self, path: Path) -> bool:
        """SIGHUP: True if a new generation serves the file at ``path`` now, False if the running one stays."""
        self.log.info("reloading configuration", config=str(path))
        with systemd.reloading(self.notify, lambda: None if self.stopping.is_set() else self.ready_state()):
            return await self._reload(path)

    async def _reload(self, path: Path) -> bool:
        running = self.current
        assert running is not None  # the reloader starts once the first generation is ready
        config = await load_for_reload(
            path, self.log, partial(load_config, entry_check=check_entry, environ=self.environ)
        )
        if config is None:
            return False
        if config.server.metrics.enabled:
            self.log.error("configuration reload failed: server.metrics needs server.workers: 1")
            return False
        bound = await self._rebind(config, running.bound)
        generation = self._launch(config, bound)
        if not await self._wait_started(generation):
            if not self.stopping.is_set():
                self.log.error(
                    "configuration reload failed: the new workers did not start, the running ones stay",
                    reason=generation.failure,
                )
            generation.stop()
            return False
        self.current, self.config = generation, config
        running.stop()  # after the switch: _retire then keeps the sockets the new generation shares
        configure_logging(config.server.logging)
        self.log = get_logger()
        log_restart_keys(self.log, restart_keys(running.config, config, supervised=True))
        self.log.info("configuration reloaded", config=str(path), workers=generation.size)
        return True

    # --- systemd ---------------------------------------------------------------------------------------

    def notify(self, state: str) -> None:
        """sd_notify(3) from the supervisor only (NotifyAccess=main); a failure is logged, never raised."""
        systemd.send(state, self.environ, self.log)

    def ready_state(self) -> str:
        generation = self.current
        if generation is None:
            return systemd.ready_state()
        count = sum(len(b.listeners) for b in generation.bound)
        return systemd.ready_state(f"{generation.size} workers serving on {count} socket(s)")
