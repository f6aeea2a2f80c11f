"""Backend authentication and the daemon process: the token libraries are imported only when needed, and the token
store belongs to the run_as_user."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trio

from tests.conftest import pfxhttp_process, unused_port
from tests.test_auth_e2e import PASSWORD, lookup, pfx_config, wait_serving
from tests.tokenserver import (
    LOGIN,
    TokenServer,
)


def test_without_auth_the_token_libraries_are_never_imported(tmp_path: Path) -> None:
    """httpx, pyjwt and cryptography cost up to ~15 MB of a 50 MB budget: only configurations that use them pay."""
    config = tmp_path / "pfxhttp.yml"
    config.write_text(
        "server:\n  listen:\n    - {kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}\n"
        "socket_maps:\n  m: {target: 'http://127.0.0.1:1/', value_field: v}\n"
    )
    probe = (
        "import sys, pathlib\n"
        "from pfxhttp.backend.compile import check_entry\n"
        "from pfxhttp.backend.runtime import Runtime\n"
        "from pfxhttp.config import load_config\n"
        f"Runtime(load_config(pathlib.Path({str(config)!r}), entry_check=check_entry))\n"
        "print(sorted(m for m in ('httpx', 'jwt', 'cryptography') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
async def test_the_token_store_belongs_to_the_run_as_user(nursery: trio.Nursery, tmp_path: Path) -> None:
    """The daemon loads its configuration as root (to bind) and drops to run_as_user: the database must be
    created after the drop, or it would be root's and read-only for the daemon from then on."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    server = TokenServer(users={"pfxhttp": PASSWORD}, lifetime=300)
    await server.start(nursery)
    store_dir = Path(tempfile.mkdtemp(prefix="pfxhttp-store-", dir="/tmp"))  # nobody cannot enter tmp_path
    try:
        os.chown(store_dir, nobody.pw_uid, nobody.pw_gid)
        port = unused_port()
        config = tmp_path / "pfxhttp.yml"
        text = pfx_config(server, port=port, db=store_dir / "tokens.db")
        config.write_text(
            text.replace("server:\n", "server:\n  run_as_user: nobody\n  run_as_group: nogroup\n", 1)
        )
        address = f"127.0.0.1:{port}"
        with trio.fail_after(30):
            async with pfxhttp_process(
                "run", "--config", str(config), output=tmp_path / "daemon.log"
            ) as daemon:
                await wait_serving(address)
                assert await lookup(address, "a@example.org") == "OK a@example.org"
                daemon.send_signal(signal.SIGTERM)
                assert await daemon.wait() == 0
        db = (store_dir / "tokens.db").stat()
        assert (db.st_uid, db.st_mode & 0o777) == (nobody.pw_uid, 0o600)
        log = (tmp_path / "daemon.log").read_text()
        assert "token store" not in log  # neither "unusable" nor "failed": the token was stored
        assert server.count(LOGIN) == 1
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)


def test_jwt_auth_without_a_private_key_never_imports_pyjwt_or_cryptography(tmp_path: Path) -> None:
    """A daemon with jwt_auth stays well under the unit's MemoryMax=50M: pyjwt pulls in cryptography."""
    config = tmp_path / "pfxhttp.yml"
    config.write_text(
        "server:\n  listen:\n    - {kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}\n"
        "socket_maps:\n  m:\n    target: 'http://127.0.0.1:1/'\n    value_field: v\n"
        "    jwt_auth: {token_endpoint: 'http://127.0.0.1:1/login', credentials: {username: a, password: b}}\n"
    )
    probe = (
        "import sys, pathlib\n"
        "from pfxhttp.backend.compile import check_entry\n"
        "from pfxhttp.backend.runtime import Runtime\n"
        "from pfxhttp.config import load_config\n"
        f"runtime = Runtime(load_config(pathlib.Path({str(config)!r}), entry_check=check_entry))\n"
        "assert runtime.auth_sources, 'the entry has a token source'\n"
        "print(sorted(m for m in ('jwt', 'cryptography') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
