"""A stray ``PFXHTTP_*`` variable (one that names no configuration key, such as a wrapper script's
``PFXHTTP_BIN``) does not stop the real daemon: it starts, serves and warns with the nearest variable that
names a key; ``pfxhttp check`` reports the same variable as an error."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from tests.conftest import Backend, daemon_config, pfxhttp_check, pfxhttp_process, socketmap_query

WARNING = (
    "environment variable PFXHTTP_BIN: names no configuration key; ignored "
    "(the nearest that does: PFXHTTP_SERVER__LOGGING__JSON)"
)


def unix_only(backend_url: str, sock_dir: Path) -> str:
    text = daemon_config(backend_url, sock_dir)
    return "\n".join(line for line in text.splitlines() if "type: tcp" not in line) + "\n"


async def test_daemon_starts_and_warns_check_refuses(
    backend: Backend, sock_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PFXHTTP_BIN", "/usr/local/bin/pfxhttp")
    config = tmp_path / "pfxhttp.yml"
    config.write_text(unix_only(backend.url, sock_dir))
    log = tmp_path / "daemon.log"
    with trio.fail_after(30):
        async with pfxhttp_process("--config", str(config), output=log) as process:
            while not (sock_dir / "policy.sock").exists():  # bounded by fail_after
                assert process.returncode is None, log.read_text()
                await trio.sleep(0.02)
            assert await socketmap_query(str(sock_dir / "map.sock"), "echo", "x@y") == "OK x@y"
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
        check = await pfxhttp_check(config)
    [warning] = [line for line in log.read_text().splitlines() if "configuration warning" in line]
    assert f"warning='{WARNING}'" in warning
    assert check.returncode == 78
    assert check.stderr.decode().splitlines() == [
        "pfxhttp: environment variable PFXHTTP_BIN: at key bin: unknown key "
        "(did you mean 'PFXHTTP_SERVER__LOGGING__JSON'?)"
    ]
