"""The daemon's lifecycle, written once for its three shapes: a single process, the supervisor of
``server.workers > 1`` (supervisor.py) and its workers (worker.py).

Every shape starts the same way: bind every listener, all or none (``listeners.bind_all``; a BindError reaches
the CLI, exit 71), THEN drop privileges (``drop_privileges``: binding a port below 1024 or a socket in /run may
need root, serving never does), then serve until a signal. One signal loop (``watch_signals``) serves all three:
SIGTERM/SIGINT stop gracefully, SIGHUP is each shape's own (a single process reloads in place, the supervisor
starts a new generation of workers, a worker ignores it). A reload reads the file in a thread and logs every
problem while the running configuration serves on (``load_for_reload``); what a reload cannot apply is named
once (``restart_keys``). sd_notify is ``systemd.send``/``systemd.reloading``: only the single process and the
supervisor talk to systemd (NotifyAccess=main).

The single process itself is here too: ``serve_until_signal`` (the CLI's ``run`` and the demo) and its SIGHUP,
``reload_configuration``: the new file is read, parsed, validated and compiled completely before anything
changes; then ``Server.apply`` swaps the runtime and adjusts the listeners. systemd hears RELOADING=1 before and
READY=1 after, also when the reload failed. The metrics endpoint, run_as_user/run_as_group and the number of
workers are set up once at start: a reload that changes them says so, and a restart applies them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from pfxhttp.backend.compile import check_entry
from pfxhttp.backend.runtime import LookupMetrics, Runtime
from pfxhttp.config import load_config
from pfxhttp.config.model import Config
from pfxhttp.errors import ConfigError, ConfigErrors
from pfxhttp.logsetup import configure_logging, get_logger
from pfxhttp.server import privileges
from pfxhttp.server.app import Server

T = TypeVar("T")

# Received from before the first bind to the end, in every shape, SIGHUP included where it does nothing: its
# default action kills the process. A listener's socket file appearing is how a client (or `systemctl reload`
# from a script) learns the daemon is up; a SIGHUP sent then, while the daemon still drops privileges, must
# reload, not kill it (the reload waits until serving starts). A worker would die of a stray HUP too.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def open_signals() -> AbstractContextManager[AsyncIterator[int]]:
    """The daemon's signals (SIGNALS), received by ``watch_signals`` from now on."""
    return trio.open_signal_receiver(*SIGNALS)


async def watch_signals(
    signals: AsyncIterator[int],
    *,
    log: Callable[[], Any],
    stop: Callable[[], None],
    hangup: Callable[[], Awaitable[None]],
) -> None:
    """SIGHUP: await ``hangup()`` and go on; SIGTERM/SIGINT: log, ``stop()`` and return. ``log`` is read per
    signal: a reload replaces the logger (its level and format come from the file)."""
    async for signum in signals:
        if signum == signal.SIGHUP:
            await hangup()
            continue
        log().info("signal received, shutting down", signal=signal.Signals(signum).name)
        stop()
        return


async def drop_privileges(config: Config, log: Any, *, quiet_if_unset: bool = False) -> None:
    """Apply server.run_as_user/run_as_group (after binding, before serving); PrivilegeError: exit 77.

    The user lookup (NSS) blocks, so it runs in a thread. ``quiet_if_unset``: a worker, started by a supervisor
    that dropped already (or warned that it runs as root), says nothing when none is configured."""
    settings = config.server
    identity = await trio.to_thread.run_sync(privileges.resolve, settings.run_as_user, settings.run_as_group)
    if identity is None and quiet_if_unset:
        return
    privileges.apply(identity, log)


async def load_for_reload(path: Path, log: Any, build: Callable[[Path], T]) -> T | None:
    """``build(path)`` in a thread (file reads, TLS trust stores); None, with every problem logged, when it
    fails: a reload must never take the running daemon down."""
    try:
        return await trio.to_thread.run_sync(build, path)
    except ConfigError as exc:
        for problem in exc.errors if isinstance(exc, ConfigErrors) else [exc]:
            log.error(
                "configuration reload failed, the running configuration stays", problem=problem.render()
            )
    except Exception:
        log.exception("configuration reload failed, the running configuration stays")
    return None


def restart_keys(old: Config, new: Config, *, supervised: bool) -> list[str]:
    """The keys ``new`` changes that a reload does not apply: they are set up once, at start.

    The supervisor applies ``server.workers`` (a new generation has the new count) and refuses a reload that
    enables metrics (no metrics with workers); a single process can do neither without a restart."""
    keys = []
    if not supervised and old.server.metrics != new.server.metrics:
        keys.append("server.metrics")
    if (old.server.run_as_user, old.server.run_as_group) != (new.server.run_as_user, new.server.run_as_group):
        keys.append("server.run_as_user/run_as_group")
    if not supervised and old.server.workers != new.server.workers:
        keys.append("server.workers")
    return keys


def log_restart_keys(log: Any, keys: Sequence[str]) -> None:
    for key in keys:
        log.error("changed by the reload but applied only at start: restart to apply", key=key)


# --- the single process ----------------------------------------------------------------------------------


def _build(path: Path, environ: Mapping[str, str], metrics: LookupMetrics | None) -> Runtime:
    config = load_config(path, entry_check=check_entry, environ=environ)
    return Runtime(config, metrics=metrics)


async def reload_configuration(server: Server, path: Path, environ: Mapping[str, str]) -> bool:
    """SIGHUP: reload from ``path``; True if the new configuration now serves, False if the old one stays."""
    log = server.log
    log.info("reloading configuration", config=str(path))
    with server.systemd_reloading():
        runtime = await load_for_reload(
            path, log, partial(_build, environ=environ, metrics=server.runtime.metrics)
        )
        if runtime is None:
            return False
        config = runtime.config
        configure_logging(config.server.logging)
        log = get_logger()
        server.log = server.context.log = log  # new connections log at the new level
        await server.apply(runtime)
    log_restart_keys(log, restart_keys(server.started_config, config, supervised=False))
    log.info("configuration reloaded", config=str(path), warnings=list(config.warnings) or None)
    return True


async def serve_until_signal(
    runtime: Runtime,
    log: Any,
    inherited: Mapping[str, Sequence[int]] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> None:
    """Run one process until SIGTERM/SIGINT (graceful stop); SIGHUP reloads the configuration file.

    ``inherited``: systemd's sockets; ``environ``: PFXHTTP_* overrides for reloads, and readiness goes to its
    $NOTIFY_SOCKET when set."""
    server = Server(runtime, log, inherited=inherited, notify_environ=environ)

    async def hangup() -> None:
        source = server.runtime.config.source
        if source is None:
            server.log.error("SIGHUP: no configuration file to reload")
            return
        await reload_configuration(server, Path(source), environ)

    with open_signals() as signals:  # before binding: see SIGNALS
        await server.bind()  # outside any nursery, so a BindError reaches the caller unwrapped
        await drop_privileges(runtime.config, log)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            await watch_signals(signals, log=lambda: server.log, stop=server.request_stop, hangup=hangup)
