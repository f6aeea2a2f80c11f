"""Dropping privileges after binding: lookups, the order of the switch, the checks (real processes)."""

from __future__ import annotations

import grp
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from pfxhttp.config import parse_config
from pfxhttp.errors import ConfigErrors, Location
from pfxhttp.server.privileges import Identity, PrivilegeError, resolve
from tests.conftest import Backend, pfxhttp_check, pfxhttp_process, socketmap_query
from tests.test_cli import unix_config, wait_for

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


def test_resolve_names_and_ids() -> None:
    nobody = pwd.getpwnam("nobody")
    assert resolve(None, None) is None
    assert resolve("nobody", None) == Identity("nobody", nobody.pw_uid, nobody.pw_gid)
    assert resolve(str(nobody.pw_uid), "0") == Identity("nobody", nobody.pw_uid, 0)
    with pytest.raises(PrivilegeError, match="no such user"):
        resolve("no-such-user-pfxhttp", None)
    with pytest.raises(PrivilegeError, match="no such user or group"):
        resolve("nobody", "no-such-group-pfxhttp")


def run_drop(user: str, group: str | None) -> subprocess.CompletedProcess[str]:
    code = (
        "import os, sys\n"
        "from pfxhttp.server.privileges import resolve, drop\n"
        "os.setgroups([0, 1, 2])\n"
        f"drop(resolve({user!r}, {group!r}))\n"
        "print(os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups()))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )


@needs_root
def test_drop_clears_groups_then_sets_gid_and_uid() -> None:
    nobody = pwd.getpwnam("nobody")
    result = run_drop("nobody", "nogroup")
    assert result.returncode == 0, result.stderr
    gid = grp.getgrnam("nogroup").gr_gid
    assert result.stdout.split(maxsplit=4) == [
        str(nobody.pw_uid),
        str(nobody.pw_uid),
        str(gid),
        str(gid),
        "[]\n",
    ]


@needs_root
def test_not_root_cannot_switch_to_someone_else() -> None:
    code = (
        "import os\n"
        "from pfxhttp.server.privileges import Identity, drop, PrivilegeError\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "try:\n    drop(Identity('root', 0, 0))\nexcept PrivilegeError as e:\n    print('refused:', e)\n"
        "drop(Identity('nobody', 65534, 65534))\nprint('same user ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "refused: run_as_user/run_as_group need pfxhttp to start as root" in result.stdout
    assert "same user ok" in result.stdout


# run_as_group without run_as_user: started as root it would keep uid 0 and every capability. It is refused
# as a configuration error (also by resolve(), should a caller bypass the loader).
GROUP_ONLY = "server:\n  run_as_group: nogroup\n  listen:\n    - {type: tcp, address: 127.0.0.1, port: 0}\n"


def test_run_as_group_without_run_as_user_is_a_config_error() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config(GROUP_ONLY, source="pfxhttp.yml")
    [error] = info.value.errors
    assert (error.location, error.path) == (Location("pfxhttp.yml", 2, 3), "server.run_as_group")
    assert error.message == "run_as_group needs run_as_user: a group alone keeps root's uid and capabilities"
    # The same with an explicit null user, and through an environment override.
    with pytest.raises(ConfigErrors, match="run_as_group needs run_as_user"):
        parse_config(GROUP_ONLY.replace("server:\n", "server:\n  run_as_user: ~\n"))
    with pytest.raises(ConfigErrors, match="run_as_group needs run_as_user"):
        parse_config(
            GROUP_ONLY.replace("  run_as_group: nogroup\n", ""),
            environ={"PFXHTTP_SERVER__RUN_AS_GROUP": "nogroup"},
        )
    # With a user it loads; an invalid user is reported once, not twice.
    config = parse_config(GROUP_ONLY.replace("server:\n", "server:\n  run_as_user: nobody\n"))
    assert (config.server.run_as_user, config.server.run_as_group) == ("nobody", "nogroup")
    with pytest.raises(ConfigErrors) as info:
        parse_config(GROUP_ONLY.replace("server:\n", "server:\n  run_as_user: 'a:b'\n"))
    assert len(info.value.errors) == 1 and "run_as_user 'a:b'" in info.value.errors[0].message
    with pytest.raises(PrivilegeError, match="run_as_group needs run_as_user"):
        resolve(None, "nogroup")


async def test_pfxhttp_check_refuses_a_group_alone(tmp_path: Path) -> None:
    config = tmp_path / "pfxhttp.yml"
    config.write_text(GROUP_ONLY)
    result = await pfxhttp_check(config)
    assert result.returncode == 78  # EX_CONFIG
    assert b"run_as_group needs run_as_user" in result.stderr


@needs_root
async def test_run_as_root_is_never_logged_as_dropped(
    backend: Backend, sock_dir: Path, tmp_path: Path
) -> None:
    # run_as_user: root changes nothing that matters: the log must say so, not "privileges dropped".
    config = tmp_path / "pfxhttp.yml"
    config.write_text(
        unix_config(backend.url, sock_dir).replace("server:\n", "server:\n  run_as_user: root\n", 1)
    )
    log = tmp_path / "daemon.log"
    with trio.fail_after(30):
        async with pfxhttp_process("--config", str(config), output=log) as process:
            await wait_for(sock_dir / "policy.sock")
            assert await socketmap_query(str(sock_dir / "map.sock"), "echo", "x@y") == "OK x@y"
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    text = log.read_text()
    assert "run_as_user is root: still running as root" in text
    assert "privileges dropped" not in text
