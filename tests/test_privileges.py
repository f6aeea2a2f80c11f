"""Dropping privileges after binding: lookups, the order of the switch, the checks (real processes)."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys

import pytest

from pfxhttp.server.privileges import Identity, PrivilegeError, resolve

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
