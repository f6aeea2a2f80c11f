"""Hostile backend bodies through the whole daemon: real Postfix lookups (``postmap -q``) and peak memory.

The daemon runs in-process in front of tests/firehose.py (endless trailers; 1-byte chunks sent faster than
it parses) and of a scripted server (a body at the cap and one byte over it). Postfix must see TEMP or
TIMEOUT for each fault, never NOTFOUND or a value, and the daemon keeps answering afterwards.

The memory test runs the daemon as a process of its own and reads its peak RSS (VmHWM) around one lookup
whose JSON body, at the default cap, is of the costliest shape known for its size: the parsed document must
fit the headroom systemd/pfxhttp.service leaves (MemoryMax=50M for a daemon of about 40 MB). bench/body_rss.py
prints the same figure for any size.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from pfxhttp.config import DEFAULT_MAX_RESPONSE_BODY_SIZE
from tests.conftest import pfxhttp_process, socketmap_query, start_daemon, unused_port
from tests.firehose import Firehose
from tests.httpd_scripted import ScriptedConnection, response_bytes, scripted_server
from tests.postfix_harness import PostmapOutcome, make_postfix_config_dir, postfix_available, postmap_query

CAP = DEFAULT_MAX_RESPONSE_BODY_SIZE
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
# MemoryMax=50M of the unit minus the ~40 MB an idle daemon holds (the unit's comment): what one lookup may add.
HEADROOM_KIB = 10 * 1024


def padded(size: int, pad: bytes = b"0") -> bytes:
    """A JSON document of exactly ``size`` bytes whose ``v`` is "ok", padded with ``pad`` units."""
    start, end = b'{"v":"ok","pad":[', b"]}"
    units = (size - len(start) - len(end) + 1) // (len(pad) + 1)
    body = start + b",".join([pad] * units) + end
    return body + b" " * (size - len(body))


def costliest(size: int) -> bytes:
    """``[{}]`` repeated: about 40 bytes of Python objects per byte of JSON (orjson, CPython 3.11)."""
    return padded(size, b"[{}]")


def config(port: int, urls: dict[str, str]) -> str:
    lines = [
        "server:",
        f"  listen: [{{kind: socket_map, type: tcp, address: 127.0.0.1, port: {port}}}]",
        "  http_client: {timeout: 1s}",
        "socket_maps:",
        '  defaults: {payload: \'{"key": "{{ .Key }}"}\', value_field: v}',
        *(f"  {name}: {{target: '{url}'}}" for name, url in urls.items()),
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.postfix
@pytest.mark.skipif(
    not postfix_available(), reason="Debian's postfix is not installed (./dev test installs it)"
)
async def test_postfix_sees_temp_or_timeout_for_hostile_bodies(nursery: trio.Nursery, tmp_path: Path) -> None:
    at_cap = padded(CAP)

    async def cap_script(conn: ScriptedConnection) -> None:
        while (request := await conn.read_request()) is not None:
            over = request.target == "/over"
            await conn.send(response_bytes(200, at_cap + b" " if over else at_cap))

    trailers = Firehose(
        CHUNKED_HEAD + b'4\r\n{"v"\r\n0\r\n', b"X-T: a\r\n" * 1024, total=8 << 20, tail=b"\r\n"
    )
    # One body byte per 60 KB of chunk extension: within every budget, never near the body cap, and far
    # more than a second of parsing (the stream is bounded at 1 GiB): only the deadline can stop it.
    trickle = Firehose(CHUNKED_HEAD, b"1;" + b"e" * 60000 + b"\r\n \r\n", total=1 << 30, tail=b"0\r\n\r\n")
    postfix_dir = make_postfix_config_dir(tmp_path)
    with trailers, trickle:
        async with scripted_server(cap_script) as cap_server:
            port = unused_port()
            urls = {
                "trailers": trailers.url(),
                "trickle": trickle.url(),
                "atcap": cap_server.url("/at"),
                "overcap": cap_server.url("/over"),
            }
            await start_daemon(nursery, config(port, urls))
            spec = f"socketmap:inet:127.0.0.1:{port}:"
            with trio.fail_after(60):
                for name, stderr in [
                    ("trailers", "temporary error: invalid HTTP response"),
                    ("trickle", "timeout error: backend timeout"),
                    ("overcap", "temporary error: response too large"),
                ]:
                    result = await postmap_query("k", spec + name, config_dir=postfix_dir)
                    assert result.outcome is PostmapOutcome.ERROR, (name, result)
                    assert stderr in result.stderr, (name, result)
                # The daemon is alive and a body of exactly the cap is an answer.
                result = await postmap_query("k", spec + "atcap", config_dir=postfix_dir)
                assert (result.outcome, result.value) == (PostmapOutcome.FOUND, "ok"), result
    assert trailers.sent < 8 << 20 and trailers.finished == 0
    assert trickle.finished == 0


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


async def test_peak_memory_of_a_body_at_the_default_cap(tmp_path: Path) -> None:
    """Before: the fixed 16 MiB cap let one lookup add about 640 MiB (bench/body_rss.py)."""
    body = costliest(CAP)

    async def script(conn: ScriptedConnection) -> None:
        while (request := await conn.read_request()) is not None:
            await conn.send(response_bytes(200, body if request.target == "/big" else b'{"v":"ok"}'))

    async with scripted_server(script) as server:
        port = unused_port()
        path = tmp_path / "pfxhttp.yml"
        path.write_text(config(port, {"small": server.url("/small"), "big": server.url("/big")}))
        address = f"127.0.0.1:{port}"
        with trio.fail_after(60):
            async with pfxhttp_process("run", "--config", str(path), output=tmp_path / "log") as daemon:
                for _ in range(200):  # bounded: the daemon binds within a second or two
                    try:
                        assert await socketmap_query(address, "small", "k") == "OK ok"
                        break
                    except OSError:
                        await trio.sleep(0.05)
                idle = _status_kib(daemon.pid, "VmRSS")
                assert await socketmap_query(address, "big", "k") == "OK ok"
                peak = _status_kib(daemon.pid, "VmHWM")
                daemon.send_signal(signal.SIGTERM)
                assert await daemon.wait() == 0
    assert len(body) == CAP
    assert peak - idle < HEADROOM_KIB, f"idle {idle} KiB, peak {peak} KiB"
