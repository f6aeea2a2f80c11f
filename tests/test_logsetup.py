"""Logging set-up: JSON and console output, sd-daemon prefixes, level filtering, secret redaction."""

from __future__ import annotations

import io

import orjson
import structlog

from pfxhttp.config.model import LoggingConfig, LogLevel
from pfxhttp.logsetup import configure_logging, get_logger


def emit(config: LoggingConfig) -> list[str]:
    stream = io.StringIO()
    configure_logging(config, stream=stream)
    log = get_logger(session="s-1")
    log.debug("debug line", request=1)
    log.info("info line", password="hunter2", detail="Authorization: Bearer abcdefghijkl")
    log.error("error line", token="t0k3n")
    structlog.reset_defaults()
    return stream.getvalue().splitlines()


def test_json_lines_are_json_and_redacted() -> None:
    lines = [orjson.loads(line) for line in emit(LoggingConfig(json=True, level=LogLevel.DEBUG))]
    assert [e["event"] for e in lines] == ["debug line", "info line", "error line"]
    assert all(e["session"] == "s-1" and "timestamp" in e for e in lines)
    assert lines[1]["password"] == "<redacted>" and lines[2]["token"] == "<redacted>"
    assert "abcdefghijkl" not in lines[1]["detail"] and "Bearer <redacted>" in lines[1]["detail"]


def test_levels_filter() -> None:
    # "none" is silent (structlog itself cannot filter above CRITICAL: this once crashed the start-up)
    assert len(emit(LoggingConfig(level=LogLevel.INFO))) == 2
    assert len(emit(LoggingConfig(level=LogLevel.ERROR))) == 1
    assert emit(LoggingConfig(level=LogLevel.NONE)) == []


def test_systemd_prefixes_and_no_timestamp() -> None:
    lines = emit(LoggingConfig(use_systemd=True, level=LogLevel.DEBUG))
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<3>"]
    assert "hunter2" not in "".join(lines)
    json_lines = emit(LoggingConfig(use_systemd=True, json=True, level=LogLevel.DEBUG))
    assert json_lines[2].startswith("<3>{")
    assert "timestamp" not in orjson.loads(json_lines[2][3:])
