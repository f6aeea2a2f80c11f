"""One worker process of ``server.workers > 1``: serve the supervisor's listening sockets with the normal Server.

The supervisor (supervisor.py) binds every listener and starts each worker as ``python -m pfxhttp run --config FILE
--internal-worker SPEC``. SPEC (JSON, see ``WorkerSpec``) is internal, not for operators: it names the
descriptors the worker inherited (``pass_fds``) by ``socket_key`` and the descriptor of its channel to the
supervisor. The worker reads the same file with the same environment (PFXHTTP_* overrides included) and adopts
each listener's socket exactly as socket activation does (listeners.py): the listener is given the socket's key
as its ``systemd_socket_name`` and the descriptors are handed in as ``inherited``.

The channel is one end of a socketpair. The worker writes one byte once it serves (the supervisor tells systemd
READY=1 when every worker has), and never writes again; reading end-of-file from it means the supervisor is
gone (killed, say), and the worker then stops as on SIGTERM instead of serving on unsupervised. Workers never
talk to $NOTIFY_SOCKET (``NotifyAccess=main``: only the supervisor may) and ignore SIGHUP: a reload is a new
generation of workers, started by the supervisor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from pfxhttp.backend.runtime import Runtime
from pfxhttp.config.model import Config, ListenConfig, ListenType
from pfxhttp.server.app import Server
from pfxhttp.server.daemon import drop_privileges, open_signals, watch_signals

READY_BYTE = b"1"
# A worker asked to stop first stops accepting, then waits this long before closing its idle connections: one
# it accepted a moment ago belongs to a client that is about to send its request (the shutdown closes idle
# connections at once), and during a reload that client must get its answer, not an early end-of-file.
HANDOVER = 0.5


def socket_key(listen: ListenConfig) -> str:
    """Which listening socket a listener is served on, as a short stable name.

    Everything that needs a different socket is in it (type, address, port, systemd socket, and mode/user/group
    of a unix socket), but not the listener's kind or name: a reload that renames a tcp_table listener keeps
    its socket instead of failing to bind a port still held by the old generation. Port 0 ("any free port")
    is a fresh port per listener, so there kind and name do count.
    """
    parts: tuple[object, ...] = (
        listen.type.value,
        listen.address,
        listen.port,
        listen.systemd_socket_name,
        listen.mode,
        listen.user,
        listen.group,
    )
    if listen.type is not ListenType.UNIX and not listen.port:
        parts += (listen.kind.value, listen.name)
    return "pfxhttp-" + hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the supervisor tells a worker (``--internal-worker``, JSON)."""

    channel: int  # descriptor: the socketpair end to the supervisor
    slot: int  # 0 .. workers-1, for the log
    generation: int  # 1 at start, +1 per reload, for the log
    listeners: Mapping[str, tuple[int, ...]]  # socket_key -> inherited descriptors

    def encode(self) -> str:
        return json.dumps(
            {
                "channel": self.channel,
                "slot": self.slot,
                "generation": self.generation,
                "listeners": {key: list(fds) for key, fds in self.listeners.items()},
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str) -> WorkerSpec:
        """Parse SPEC; ValueError when it is not what the supervisor writes."""
        try:
            data = json.loads(text)
            listeners = {
                str(key): tuple(_descriptor(fd) for fd in fds) for key, fds in data["listeners"].items()
            }
            return cls(_descriptor(data["channel"]), int(data["slot"]), int(data["generation"]), listeners)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"invalid worker specification: {exc}") from exc

    def descriptors(self) -> list[int]:
        return [fd for fds in self.listeners.values() for fd in fds]


def _descriptor(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 3:
        raise ValueError(f"invalid worker specification: descriptor {value!r}")
    return value


def worker_config(config: Config, spec: WorkerSpec) -> tuple[Config, list[ListenConfig]]:
    """``config`` with each listener set to adopt its inherited socket, and the listeners left out because the
    supervisor passed no socket for them (it could not bind them: it logged why)."""
    kept: list[ListenConfig] = []
    missing: list[ListenConfig] = []
    for listen in config.server.listen:
        key = socket_key(listen)
        if key in spec.listeners:
            kept.append(dataclasses.replace(listen, systemd_socket_name=key))
        else:
            missing.append(listen)
    server = dataclasses.replace(config.server, listen=tuple(kept))
    return dataclasses.replace(config, server=server), missing


async def serve_worker(runtime: Runtime, log: Any, spec: WorkerSpec) -> None:
    """Serve until SIGTERM/SIGINT or until the supervisor is gone; SIGHUP is ignored."""
    channel = trio.socket.from_stdlib_socket(socket.socket(fileno=spec.channel))
    with channel:
        server = Server(runtime, log, inherited=spec.listeners, notify_environ=None)

        async def hangup() -> None:
            log.info("SIGHUP ignored by a worker: the supervisor reloads by starting new workers")

        with open_signals() as signals:  # before binding (daemon.SIGNALS)
            try:
                await server.bind()  # adopts duplicates of the inherited descriptors
            finally:
                for fd in set(spec.descriptors()):  # the duplicates are all this process needs from now on
                    os.close(fd)
            # Normally a no-op: the supervisor dropped before starting us (and warned if it runs as root).
            await drop_privileges(runtime.config, log, quiet_if_unset=True)
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                async with trio.open_nursery() as watchers:
                    stopping = trio.Event()
                    watchers.start_soon(_lifeline, channel, log, stopping)
                    watchers.start_soon(
                        partial(watch_signals, signals, log=lambda: log, stop=stopping.set, hangup=hangup)
                    )
                    await stopping.wait()
                    server.stop_accepting()
                    await trio.sleep(HANDOVER)
                    server.request_stop()
                    watchers.cancel_scope.cancel()


async def _lifeline(channel: trio.socket.SocketType, log: Any, stop: trio.Event) -> None:
    try:
        await channel.send(READY_BYTE)
        data = await channel.recv(1)  # the supervisor never writes: this returns at its end only
    except OSError:
        data = b""
    if not data:
        log.error("the supervisor is gone, stopping")
        stop.set()
