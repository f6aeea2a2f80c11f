"""The token store against another local user: planted files, links and directories others can write.

Each case is what a second user could prepare before the daemon's first token request. The store must refuse
(one error line, tokens in memory) and leave the planted thing as it was: no live token written into a file
another user can read, no permission change on a file a link points at. "Another user" is ``nobody``, by chown
from root (no account is created); those cases skip when not run as root.
"""

from __future__ import annotations

import os
import pwd
import sqlite3
import stat
from pathlib import Path

import pytest
import trio

from pfxhttp.backend.auth.store import open_token_store
from pfxhttp.backend.auth.tokens import Token
from tests.conftest import Captured
from tests.test_auth_store import persisted

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="handing a file to another user needs root")
KEY = "jwt|https://auth.example/token|client|digest"
TOKEN = Token(access="live-access-token", expires_at=2e9, obtained_at=1e9, refresh="live-refresh-token")


def nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def private_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "store"
    directory.mkdir(mode=0o700)
    return directory


async def refused(path: Path, captured: Captured, reason: str) -> None:
    """The store at ``path`` keeps tokens in memory, says why in ONE error line, and still serves tokens."""
    store = open_token_store(str(path), captured.log)
    with trio.fail_after(10):  # a FIFO must not hang the store
        await store.save(KEY, TOKEN)
        assert await store.load(KEY) == TOKEN  # from memory
        assert not persisted(path, KEY)
        await store.aclose()
    [error] = captured.errors()
    assert error["event"] == "token store unusable, keeping tokens in memory only"
    assert reason in error["error"], error["error"]
    assert "live-access-token" not in captured.stream.getvalue()


def rows(path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT key, access FROM pfxhttp_tokens").fetchall()
    finally:
        db.close()


def planted_database(path: Path) -> None:
    """A valid token database (what a user could prepare to read the daemon's tokens from)."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE pfxhttp_tokens (key TEXT PRIMARY KEY, access TEXT NOT NULL, refresh TEXT, "
        "expires_at REAL NOT NULL, obtained_at REAL NOT NULL)"
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()


@needs_root
async def test_a_database_owned_by_another_user_is_not_used(tmp_path: Path, captured: Captured) -> None:
    uid, gid = nobody()
    path = private_dir(tmp_path) / "tokens.db"
    planted_database(path)
    path.chmod(0o644)
    os.chown(path, uid, gid)
    await refused(path, captured, f"belongs to uid {uid}")
    assert rows(path) == []  # the live token never reached the other user's file
    info = path.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid, 0o644)


@needs_root
@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
async def test_a_companion_owned_by_another_user_is_refused(
    tmp_path: Path, captured: Captured, suffix: str
) -> None:
    uid, gid = nobody()
    path = private_dir(tmp_path) / "tokens.db"
    companion = Path(f"{path}{suffix}")
    companion.write_bytes(b"")
    os.chown(companion, uid, gid)
    await refused(path, captured, f"{companion} belongs to uid {uid}")
    assert companion.stat().st_uid == uid and companion.read_bytes() == b""


async def test_a_symbolic_link_at_the_path_is_not_followed(tmp_path: Path, captured: Captured) -> None:
    target = tmp_path / "someone-elses-file"
    target.write_bytes(b"")
    target.chmod(0o644)
    path = private_dir(tmp_path) / "tokens.db"
    path.symlink_to(target)
    await refused(path, captured, "is a symbolic link")
    assert target.read_bytes() == b""  # not turned into a token database
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # and its mode untouched


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
async def test_a_symbolic_link_as_companion_is_not_followed(
    tmp_path: Path, captured: Captured, suffix: str
) -> None:
    target = tmp_path / "someone-elses-file"
    target.write_bytes(b"keep")
    target.chmod(0o644)
    path = private_dir(tmp_path) / "tokens.db"
    Path(f"{path}{suffix}").symlink_to(target)
    await refused(path, captured, "is a symbolic link")
    assert target.read_bytes() == b"keep"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


async def test_a_database_with_a_second_hard_link_is_refused(tmp_path: Path, captured: Captured) -> None:
    path = private_dir(tmp_path) / "tokens.db"
    planted_database(path)
    os.link(path, tmp_path / "copy-elsewhere.db")
    await refused(path, captured, "has 2 hard links")
    assert rows(tmp_path / "copy-elsewhere.db") == []


async def test_a_fifo_at_the_path_is_refused_without_hanging(tmp_path: Path, captured: Captured) -> None:
    path = private_dir(tmp_path) / "tokens.db"
    os.mkfifo(path, 0o600)
    await refused(path, captured, "is not a regular file")


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770])
async def test_a_directory_others_can_write_is_refused(tmp_path: Path, captured: Captured, mode: int) -> None:
    # Sticky (1777) too: SQLite opens -wal, -shm and -journal by name, and others may create them there first.
    directory = private_dir(tmp_path)
    directory.chmod(mode)
    await refused(directory / "tokens.db", captured, f"the directory {directory} is not this user's alone")
    assert list(directory.iterdir()) == []  # nothing created there


@needs_root
async def test_a_directory_of_another_user_is_refused(tmp_path: Path, captured: Captured) -> None:
    uid, gid = nobody()
    directory = private_dir(tmp_path)
    os.chown(directory, uid, gid)
    await refused(directory / "tokens.db", captured, f"(it belongs to uid {uid})")
    assert list(directory.iterdir()) == []


async def test_a_private_directory_is_used(tmp_path: Path, captured: Captured) -> None:
    path = private_dir(tmp_path) / "tokens.db"
    store = open_token_store(str(path), captured.log)
    await store.save(KEY, TOKEN)
    assert persisted(path, KEY)
    await store.aclose()
    assert rows(path) == [(KEY, "live-access-token")]
    assert captured.errors() == []
