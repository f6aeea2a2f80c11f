"""structlog set-up, done once at start: JSON or console lines on stderr, secrets redacted.

Levels follow the pfxhttp YAML: ``none`` (silent), ``error``, ``info`` (the default: never silent by default),
``debug`` (every connection and request). Filtering happens in the bound logger itself
(``make_filtering_bound_logger``), so a debug call below the level costs one method call and nothing else.

With ``use_systemd`` each line starts with an sd-daemon(3) priority prefix (``<3>`` error, ``<6>`` info,
``<7>`` debug) and carries no timestamp: journald adds its own.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from pfxhttp.config.model import LoggingConfig, LogLevel

_LEVELS = {
    LogLevel.NONE: logging.CRITICAL,  # and every event dropped, see configure_logging
    LogLevel.ERROR: logging.ERROR,
    LogLevel.INFO: logging.INFO,
    LogLevel.DEBUG: logging.DEBUG,
}
_SD_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}

# Event keys whose values are never written, whatever logs them.
_SECRET_KEYS = re.compile(r"(authorization|password|passwd|secret|token|credential|cookie)", re.IGNORECASE)
# "Authorization: Basic xxx" or "Bearer xxx" inside free text (exception messages, header dumps).
_SECRET_TEXT = re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9._~+/=-]{6,}")


def redact_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: blank values of secret-looking keys and credentials inside text."""
    for key, value in event.items():
        if _SECRET_KEYS.search(key):
            event[key] = "<redacted>"
        elif isinstance(value, str) and ("asic " in value or "earer " in value):
            event[key] = _SECRET_TEXT.sub(r"\1 <redacted>", value)
    return event


def _sd_prefix(_logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["_sd"] = _SD_PRIORITY.get(method, 6)
    return event


class _SdRenderer:
    """Wrap a renderer so the sd-daemon priority prefix comes first on the line."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        priority = event.pop("_sd", 6)
        return f"<{priority}>{self._inner(logger, method, event)}"


def _drop(_logger: Any, _method: str, _event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    raise structlog.DropEvent


def configure_logging(config: LoggingConfig, stream: TextIO | None = None) -> None:
    """Configure structlog for the process (structlog's configuration is process-wide by design)."""
    if config.level is LogLevel.NONE:
        # structlog filters at most at CRITICAL; pfxhttp never logs critical, and this drops even that.
        structlog.configure(
            processors=[_drop],
            wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[config.level]),
            logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),
            cache_logger_on_first_use=False,
        )
        return
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        redact_secrets,
    ]
    if not config.use_systemd:
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    processors.append(structlog.processors.format_exc_info if config.json else structlog.dev.set_exc_info)
    renderer: Any
    if config.json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)
    if config.use_systemd:
        processors.append(_sd_prefix)
        renderer = _SdRenderer(renderer)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[config.level]),
        # WriteLogger writes each line with its newline in one write(): print() writes the text and the
        # newline apart, and with server.workers several processes share stderr, so another process's line
        # could land between them (seen in tests/test_workers.py: two log lines run together).
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**initial: Any) -> Any:
    """A logger bound to ``initial`` values (e.g. ``listener=...``).

    Lazy: it takes the configuration in force when it logs (or is bound further), not the one in force when
    it was made, so a logger made while a configuration is loaded (before configure_logging) logs as
    configured."""
    return structlog.get_logger("pfxhttp", **initial)
