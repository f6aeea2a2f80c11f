"""SIGHUP: load the configuration file again and switch to it without dropping a request.

The new file is read, parsed, validated and compiled completely (in a worker thread: file reads, TLS trust
stores) before anything changes; if any of it fails, every problem is logged and the running configuration keeps
serving. Otherwise ``Server.apply`` swaps the runtime and adjusts the listeners. systemd hears RELOADING=1
before and READY=1 after, also when the reload failed.

What a reload does not change (logged when the file changed them): the metrics endpoint and run_as_user /
run_as_group, which are set up once at start; restart the service for those.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

import trio

from pfxhttp.backend.compile import check_entry
from pfxhttp.backend.runtime import LookupMetrics, Runtime
from pfxhttp.config import load_config
from pfxhttp.config.model import Config
from pfxhttp.errors import ConfigError, ConfigErrors
from pfxhttp.logsetup import configure_logging, get_logger
from pfxhttp.server.app import Server


def _build(path: Path, environ: Mapping[str, str], metrics: LookupMetrics | None) -> Runtime:
    config = load_config(path, entry_check=check_entry, environ=environ)
    return Runtime(config, metrics=metrics)


def _needs_restart(old: Config, new: Config) -> list[str]:
    keys = []
    if old.server.metrics != new.server.metrics:
        keys.append("server.metrics")
    if (old.server.run_as_user, old.server.run_as_group) != (new.server.run_as_user, new.server.run_as_group):
        keys.append("server.run_as_user/run_as_group")
    return keys


async def reload_configuration(server: Server, path: Path, environ: Mapping[str, str]) -> bool:
    """Reload from ``path``; True if the new configuration now serves, False if the old one stays."""
    log = server.log
    log.info("reloading configuration", config=str(path))
    with server.systemd_reloading():
        try:
            runtime = await trio.to_thread.run_sync(partial(_build, path, environ, server.runtime.metrics))
        except ConfigError as exc:
            problems = exc.errors if isinstance(exc, ConfigErrors) else [exc]
            for problem in problems:
                log.error(
                    "configuration reload failed, the running configuration stays", problem=problem.render()
                )
            return False
        except Exception:  # a reload must never take the running daemon down
            log.exception("configuration reload failed, the running configuration stays")
            return False
        config = runtime.config
        configure_logging(config.server.logging)
        log = get_logger()
        server.log = server.context.log = log  # new connections log at the new level
        await server.apply(runtime)
    for key in _needs_restart(server.started_config, config):
        log.error("changed by the reload but applied only at start: restart to apply", key=key)
    log.info("configuration reloaded", config=str(path), warnings=list(config.warnings) or None)
    return True
