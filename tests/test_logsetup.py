"""Logging set-up: JSON and console output, sd-daemon prefixes, level filtering, secret redaction, control
characters escaped, tracebacks without locals."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
import structlog
import trio

from pfxhttp.config.model import LoggingConfig, LogLevel
from pfxhttp.logsetup import configure_logging, get_logger
from tests.conftest import Backend, daemon_config, socketmap_query, start_daemon


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


# What a client can put into a map name or key to act on an administrator's terminal: ESC sequences (clear
# screen, set title), BS, BEL, DEL, the C1 CSI and NEL, a line break forging a log line.
# TERMINAL has nothing that makes structlog quote a value (blank, '=', quotes, CR, LF), so it was written raw.
TERMINAL = "x\x1b[2J\x1b]0;owned\x07\x08\x7f\x9b31m\x85"
HOSTILE = TERMINAL + "\r\nforged=1"
CONTROLS = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]


def raw_controls(text: str, allowed: str = "\n") -> list[str]:
    return [c for c in text if c in CONTROLS and c not in allowed]


async def test_daemon_console_log_escapes_client_chosen_names_and_keys(
    nursery: trio.Nursery, backend: Backend, sock_dir: Path
) -> None:
    daemon = await start_daemon(nursery, daemon_config(backend.url, sock_dir))  # console lines, debug level
    address = daemon.address("socket_map")
    with trio.fail_after(10):
        for name in ("n" + TERMINAL, "n" + HOSTILE):
            assert (await socketmap_query(address, name, "k")).startswith("PERM ")
        for key in (TERMINAL, HOSTILE):
            assert (await socketmap_query(address, "echo", key)).startswith("OK ")
    text = daemon.log.getvalue()
    assert raw_controls(text) == []
    # The unknown maps' names, escaped (by repr where the value needs quotes), not lost.
    first, second = (line for line in text.splitlines() if "unknown socketmap name" in line)
    assert first.endswith(" name=nx\\x1b[2J\\x1b]0;owned\\x07\\x08\\x7f\\x9b31m\\x85")
    assert second.endswith(" name='nx\\x1b[2J\\x1b]0;owned\\x07\\x08\\x7f\\x9b31m\\x85\\r\\nforged=1'")
    assert not any(line.startswith("forged") for line in text.splitlines())


def test_console_escapes_keys_and_event_too() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(level=LogLevel.DEBUG), stream=stream)
    get_logger().info("event " + HOSTILE, **{"key" + HOSTILE.replace(" ", ""): "v", "plain": "a\x1bb"})
    structlog.reset_defaults()
    [line] = stream.getvalue().splitlines()
    assert raw_controls(line) == [] and "a\\x1bb" in line and "event x\\x1b[2J" in line


def test_json_lines_escape_every_control_and_keep_the_value() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(json=True, level=LogLevel.DEBUG), stream=stream)
    get_logger().info(HOSTILE, name=HOSTILE, nested=[HOSTILE], **{HOSTILE: 1})
    structlog.reset_defaults()
    [line] = stream.getvalue().splitlines()
    assert raw_controls(line, allowed="") == []  # json.dumps escapes DEL too (JSON would allow it raw)
    event = orjson.loads(line)
    assert event["event"] == event["name"] == event["nested"][0] == HOSTILE and event[HOSTILE] == 1


def fail_with_a_secret_local() -> None:
    api_key = "sk-live-0123456789abcdef"  # a custom_headers value, say
    raise ValueError("backend said " + HOSTILE + api_key[:0])


@pytest.mark.parametrize("json_lines", [False, True])
def test_tracebacks_are_plain_without_locals_and_escaped(json_lines: bool) -> None:
    # structlog renders tracebacks with rich (which prints every frame's locals) when it is importable, as it
    # is in the test environment.
    pytest.importorskip("rich")
    stream = io.StringIO()
    configure_logging(LoggingConfig(json=json_lines, level=LogLevel.DEBUG), stream=stream)
    try:
        fail_with_a_secret_local()
    except ValueError:
        get_logger().exception("unexpected error, closing connection")
    structlog.reset_defaults()
    text = stream.getvalue()
    assert "sk-live-0123456789abcdef" not in text
    assert "fail_with_a_secret_local" in text and "ValueError: backend said x" in text
    if json_lines:
        [line] = text.splitlines()  # one line, the traceback inside it escaped
        assert raw_controls(line, allowed="") == []
    else:
        assert raw_controls(text) == []
        assert "Traceback (most recent call last):" in text
