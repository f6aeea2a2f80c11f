"""Unix socket permissions against the user who owns the socket's directory (Postfix's ``private/`` is postfix's).

The attack: between bind(2) and the chmod/chown of the socket PATH, that user replaces the socket with a symbolic
link to a root-only file, which the daemon then chowns to the configured socket owner. To hit the window every
time instead of by luck, the attacker (a real process running as ``nobody``, the directory handed to it with
chown) is run at each point where the binding code yields to a worker thread: the moments a real attacker
racing in a loop gets. It replaces every socket it sees in the directory with a link to the victim file, or swaps
any directory it sees there for a link to its own.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from pfxhttp.config import parse_config
from pfxhttp.server.listeners import BindError, bind, close_bound

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="handing the directory to another user needs root")

ATTACKER = """
import os, stat, sys
directory, victim, mode, uid, gid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
mine = os.path.join(directory, "mine")
os.makedirs(mine, exist_ok=True)
for entry in os.listdir(directory):
    full = os.path.join(directory, entry)
    info = os.lstat(full)
    if mode == "socket" and stat.S_ISSOCK(info.st_mode):
        os.symlink(victim, full + ".new")
        os.rename(full + ".new", full)
        print("replaced socket", entry)
    elif mode == "directory" and stat.S_ISDIR(info.st_mode) and entry != "mine" and not entry.startswith("moved-"):
        os.rename(full, os.path.join(directory, "moved-" + entry))
        os.symlink(mine, full)
        print("swapped directory", entry)
"""


def listen_config(path: Path, extra: str = "") -> Any:
    text = (
        "server:\n  listen:\n"
        f"    - {{kind: socket_map, type: unix, address: {path}{extra}}}\n"
        "socket_maps:\n  echo:\n    target: http://127.0.0.1:1/map\n"
    )
    return parse_config(text).server.listen[0]


@needs_root
@pytest.mark.parametrize("attack", ["socket", "directory"])
async def test_the_directory_owner_cannot_redirect_chmod_or_chown(
    sock_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    nobody = pwd.getpwnam("nobody")
    os.chown(sock_dir, nobody.pw_uid, nobody.pw_gid)  # like postfix owning private/
    victim = tmp_path / "root-only"
    victim.write_text("root's\n")
    victim.chmod(0o600)
    attacks: list[str] = []
    original = trio.to_thread.run_sync

    async def attacker_first(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        argv = [sys.executable, "-c", ATTACKER, str(sock_dir), str(victim), attack]
        argv += [str(nobody.pw_uid), str(nobody.pw_gid)]
        done = await original(
            lambda: subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        )
        assert done.returncode == 0, done.stderr
        attacks.append(done.stdout)
        return await original(function, *args, **kwargs)

    config = listen_config(sock_dir / "policy.sock", ", mode: '0666', user: nobody, group: nogroup")
    monkeypatch.setattr(trio.to_thread, "run_sync", attacker_first)
    with trio.fail_after(60):
        try:
            bound = await bind(config, {})
        except BindError:
            bound = None  # the directory's owner may make the bind fail; that is all they may do
        finally:
            monkeypatch.undo()
    assert len(attacks) >= 2, attacks  # the attacker ran at every hop
    info = victim.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o600)
    assert victim.read_text() == "root's\n"
    if bound is not None:
        socket_info = os.lstat(sock_dir / "policy.sock")
        assert stat.S_ISSOCK(socket_info.st_mode)
        assert (socket_info.st_uid, stat.S_IMODE(socket_info.st_mode)) == (nobody.pw_uid, 0o666)
        close_bound(bound)


async def test_a_bound_socket_leaves_nothing_else_behind(sock_dir: Path) -> None:
    path = sock_dir / "map.sock"
    with socket.socket(socket.AF_UNIX) as stale:  # a crashed daemon's socket: replaced
        stale.bind(str(path))
    with trio.fail_after(10):
        bound = await bind(listen_config(path, ", mode: '0640'"), {})
        try:
            assert bound.addresses == [str(path)]  # the path, not the private directory it was bound in
            assert sorted(os.listdir(sock_dir)) == ["map.sock"]
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o640
            stream = await trio.open_unix_socket(str(path))  # the renamed socket is the one listening
            await stream.aclose()
        finally:
            close_bound(bound)
    assert os.listdir(sock_dir) == []


async def test_whatever_is_not_a_socket_is_still_refused(sock_dir: Path, tmp_path: Path) -> None:
    (sock_dir / "file").write_text("someone's")
    (sock_dir / "link").symlink_to(tmp_path)
    with trio.fail_after(10):
        for name in ("file", "link"):
            with pytest.raises(BindError, match="exists and is not a socket; refusing to replace it"):
                await bind(listen_config(sock_dir / name), {})
    assert (sock_dir / "file").read_text() == "someone's"
    assert sorted(os.listdir(sock_dir)) == ["file", "link"]  # no private directory left behind


async def test_a_directory_path_too_long_for_staging_is_a_clear_error(sock_dir: Path) -> None:
    deep = sock_dir / ("d" * 90)
    deep.mkdir()
    with (
        trio.fail_after(10),
        pytest.raises(BindError, match="too long to bind a socket in a private directory"),
    ):
        await bind(listen_config(deep / "x"), {})
    assert os.listdir(deep) == []
