"""The command line as an administrator uses it: real subprocesses, real sockets, real signals."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.conftest import Backend, daemon_config, pfxhttp_process, policy_query, socketmap_query, unused_port

ROOT = Path(__file__).resolve().parent.parent
PFXHTTP = [sys.executable, "-m", "pfxhttp"]


async def run(*args: str, stdin: bytes = b"", timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [*PFXHTTP, *args], stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
        )


def unix_config(backend_url: str, sock_dir: Path) -> str:
    """The integration config, listening on unix sockets only (a subprocess cannot report port 0)."""
    text = daemon_config(backend_url, sock_dir)
    return "\n".join(line for line in text.splitlines() if "type: tcp" not in line) + "\n"


def unused_port_pair() -> int:
    """A port P such that P and P+1 are both free (the demo's socketmap and policy ports)."""
    import socket

    for _ in range(50):
        port = unused_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free loopback ports")


async def wait_for(path: Path, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while not path.exists():
            await trio.sleep(0.02)


async def test_check_accepts_the_example_configs(tmp_path: Path) -> None:
    result = await run("check", "--config", str(ROOT / "etc" / "pfxhttp.yml"))
    assert result.returncode == 0, result.stderr
    assert b"OK" in result.stdout


async def test_check_reports_every_problem_with_location(tmp_path: Path) -> None:
    config = tmp_path / "pfxhttp.yml"
    config.write_text(
        "server:\n"
        "  listen:\n"
        "    - {kind: socket_map, type: tcp, address: 127.0.0.1, port: 23450}\n"
        "  http_client:\n"
        "    timout: 5s\n"
        "socket_maps:\n"
        "  demo:\n"
        "    target: http://127.0.0.1:1/x\n"
        "    payload: '{\"key\": {{ .Key }}}'\n"
        "    value_field: data.result\n"
    )
    result = await run("check", "--config", str(config))
    assert result.returncode == 78
    err = result.stderr.decode()
    assert f"{config}:5:5" in err and "server.http_client.timout" in err and "'timeout'" in err
    assert f"{config}:9:14" in err and "socket_maps.demo.payload" in err


async def test_missing_config_is_a_config_error(tmp_path: Path) -> None:
    result = await run("check", "--config", str(tmp_path / "nope.yml"))
    assert result.returncode == 78
    assert b"nope.yml" in result.stderr


async def test_query_and_policy_run_the_full_pipeline(
    backend: Backend, sock_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "pfxhttp.yml"
    config.write_text(daemon_config(backend.url, sock_dir))
    found = await run("--config", str(config), "query", "echo", "a b@example.com")
    assert (found.returncode, found.stdout) == (0, b"OK a b@example.com\n")
    missing = await run("query", "--config", str(config), "absent", "x")
    assert (missing.returncode, missing.stdout) == (1, b"NOTFOUND \n")
    failing = await run("query", "--config", str(config), "fivehundred", "x")
    assert (failing.returncode, failing.stdout) == (75, b"TEMP backend status 500\n")
    attrs = b"request=smtpd_access_policy\nrecipient=reject@example.com\n"  # no final empty line: tolerated
    policy = await run("policy", "--config", str(config), "policy", stdin=attrs)
    assert (policy.returncode, policy.stdout) == (0, b"action=REJECT 5.7.1 rejected by policy\n\n")
    unknown = await run("policy", "--config", str(config), "nosuch", stdin=attrs)
    assert unknown.returncode == 2 and b"policy" in unknown.stderr


async def test_daemon_serves_and_stops_cleanly_on_sigterm(
    backend: Backend, sock_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "pfxhttp.yml"
    config.write_text(unix_config(backend.url, sock_dir))
    log = tmp_path / "daemon.log"
    with trio.fail_after(30):
        async with pfxhttp_process("--config", str(config), output=log) as process:
            await wait_for(sock_dir / "policy.sock")
            assert await socketmap_query(str(sock_dir / "map.sock"), "echo", "x@y") == "OK x@y"
            reply = await policy_query(str(sock_dir / "policy.sock"), {"recipient": "dunno@y"})
            assert reply == "action=DUNNO\n\n"
            process.send_signal(signal.SIGHUP)  # reload of the unchanged file: the daemon keeps serving
            await trio.sleep(0.1)
            assert await socketmap_query(str(sock_dir / "map.sock"), "echo", "still") == "OK still"
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    text = log.read_text()
    assert "listening" in text and "stopped" in text and "configuration reloaded" in text
    assert not (sock_dir / "map.sock").exists()  # our socket files are removed on exit


async def test_bind_failure_exits_71(backend: Backend, tmp_path: Path) -> None:
    blocker = trio.socket.socket()
    await blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    config = tmp_path / "pfxhttp.yml"
    config.write_text(daemon_config(backend.url).replace("port: 0}", f"port: {port}}}", 1))
    try:
        result = await run("--config", str(config))
    finally:
        blocker.close()
    assert result.returncode == 71
    assert b"address already in use" in result.stderr


async def test_stale_regular_file_is_not_replaced(backend: Backend, sock_dir: Path, tmp_path: Path) -> None:
    (sock_dir / "map.sock").write_text("precious")
    config = tmp_path / "pfxhttp.yml"
    config.write_text(unix_config(backend.url, sock_dir))
    result = await run("--config", str(config))
    assert result.returncode == 71 and b"not a socket" in result.stderr
    assert (sock_dir / "map.sock").read_text() == "precious"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_demo_answers_and_stops(tmp_path: Path, sig: signal.Signals) -> None:
    port = unused_port_pair()
    out = tmp_path / "demo.out"
    with trio.fail_after(40):
        async with pfxhttp_process("demo", "--port", str(port), output=out, merge_stdout=True) as process:
            with trio.fail_after(20):
                while b"Press Ctrl-C" not in out.read_bytes():
                    assert process.poll() is None, out.read_text()  # exited early (e.g. port taken)
                    await trio.sleep(0.05)
            address = f"127.0.0.1:{port}"
            assert (
                await socketmap_query(address, "aliases", "office@example.com")
                == "OK alice@example.com,bob@example.com"
            )
            assert await socketmap_query(address, "aliases", "nobody@example.com") == "NOTFOUND "
            assert await socketmap_query(address, "domains", "example.org") == "OK example.org"
            # The printed command works as printed (./dev demo runs pfxhttp from .venv, not from PATH).
            printed = next(line for line in out.read_text().splitlines() if "query aliases office" in line)
            shown = await trio.run_process(
                shlex.split(printed.split("#")[0]), capture_stdout=True, check=False
            )
            assert shown.stdout == b"OK alice@example.com,bob@example.com\n"
            reject = await policy_query(
                f"127.0.0.1:{port + 1}", {"sasl_username": "alice@example.com", "sender": "carol@example.org"}
            )
            assert reject.startswith("action=REJECT 5.7.1")
            process.send_signal(sig)
            assert await process.wait() == 0
    text = out.read_text()
    assert "-q office@example.com socketmap:inet:" in text and "stopped" in text
    config_line = next(line for line in text.splitlines() if "Config in use:" in line)
    assert not os.path.exists(config_line.rsplit(" ", 1)[1])  # the demo's temporary config is removed


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
async def test_daemon_drops_privileges_after_binding(
    backend: Backend, sock_dir: Path, tmp_path: Path
) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    config = tmp_path / "pfxhttp.yml"
    text = unix_config(backend.url, sock_dir).replace(
        "server:\n", "server:\n  run_as_user: nobody\n  run_as_group: nogroup\n", 1
    )
    config.write_text(text)
    log = tmp_path / "daemon.log"
    with trio.fail_after(30):
        async with pfxhttp_process("--config", str(config), output=log) as process:
            await wait_for(sock_dir / "policy.sock")
            # Bound as root (the socket files belong to root), then running as nobody with no extra groups.
            assert await socketmap_query(str(sock_dir / "map.sock"), "echo", "x@y") == "OK x@y"
            status = Path(f"/proc/{process.pid}/status").read_text()
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            groups_line = next(line for line in status.splitlines() if line.startswith("Groups:"))
            assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
            assert groups_line.split()[1:] == []
            assert (sock_dir / "map.sock").stat().st_uid == 0
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    assert "privileges dropped" in log.read_text()
