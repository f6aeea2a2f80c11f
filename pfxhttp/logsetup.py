"""structlog set-up, done once at start: JSON or console lines on stderr, secrets redacted.

Levels follow the pfxhttp YAML: ``none`` (silent), ``error``, ``info`` (the default: never silent by default),
``debug`` (every connection and request). Filtering happens in the bound logger itself
(``make_filtering_bound_logger``), so a debug call below the level costs one method call and nothing else.

With ``use_systemd`` each line starts with an sd-daemon(3) priority prefix (``<3>`` error, ``<6>`` info,
``<7>`` debug) and carries no timestamp: journald adds its own.

Log lines carry text that clients choose (map names, keys, policy attributes), so no control character reaches
the terminal or the journal raw: the console line is escaped as a whole once rendered (C0, DEL and C1 become
``\\xNN``; keys, the event and every value alike); JSON lines need nothing more, since json.dumps writes
ASCII and escapes every control (DEL included). Tracebacks are rendered plainly, without local variables:
structlog would pick ``rich`` or ``better_exceptions`` when importable, and both print locals, where API keys
and tokens live.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
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


# C0 controls, DEL and C1 controls: what a terminal may act on (ESC starts a sequence, BS erases, C1 CSI ...).
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
# A traceback keeps its line breaks; every other control is escaped.
_TRACEBACK_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """``text`` with every C0, DEL and C1 control written as ``\\xNN`` (unchanged, and cheap, without one)."""
    return text.translate(_ESCAPES) if _CONTROLS.search(text) else text


def _escape_traceback(text: str) -> str:
    return _TRACEBACK_CONTROLS.sub(lambda match: _ESCAPES[ord(match.group())], text)


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


class _EscapingConsole:
    """structlog's ConsoleRenderer, the rendered line escaped as a whole, the traceback (if any) below it,
    plain and escaped but for its line breaks."""

    def __init__(self) -> None:
        self._inner = structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        exc_info = event.pop("exc_info", None)
        line = escape_controls(self._inner(logger, method, event))
        error = _exception_of(exc_info)
        if error is None:
            return line
        # Plain: no frame locals (rich and better_exceptions print them, API keys included).
        return line + "\n" + _escape_traceback("".join(traceback.format_exception(error)).rstrip("\n"))


def _exception_of(exc_info: Any) -> BaseException | None:
    """The exception an ``exc_info`` event value names (True: the one being handled)."""
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and isinstance(exc_info[1], BaseException):
        return exc_info[1]
    if exc_info is True:
        return sys.exception()
    return None


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
    renderer: Any
    if config.json:
        # format_exc_info renders plain tracebacks (no locals) into the "exception" string.
        processors.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = _EscapingConsole()
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
