"""The token store: SQLite round trips, 0600 files, WAL sharing between stores, and falling back to memory (with
one error line, never an exception) when the database is corrupt, unreadable or unwritable."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pfxhttp.backend.auth.store import SCHEMA_VERSION, TokenStore, open_token_store
from pfxhttp.backend.auth.tokens import Token
from tests.conftest import Captured

REPO = Path(__file__).resolve().parents[1]
KEY = "jwt|https://auth.example/token|client|digest"
TOKEN = Token(
    access="access-secret-1", expires_at=1_700_003_600.5, obtained_at=1_700_000_000.25, refresh="r-1"
)
BARE = Token(access="access-secret-2", expires_at=1_700_007_200.0, obtained_at=1_700_003_600.0)


@pytest.fixture
def umask022() -> Iterator[None]:
    old = os.umask(0o022)  # the usual umask: without care, SQLite's files would come out 0644
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def persisted(path: str | Path, key: str) -> bool:
    """Did a store write ``key`` into its database file? Read as another process would, read-only; anything
    that is not a readable pfxhttp database (no file, a directory, garbage, a dropped table) holds nothing."""
    if not Path(path).is_file():
        return False
    try:
        db = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT 1 FROM pfxhttp_tokens WHERE key = ?", (key,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return False
    return row is not None


async def test_memory_store_round_trip(captured: Captured) -> None:
    store = open_token_store(None, captured.log)
    assert await store.load(KEY) is None
    await store.save(KEY, TOKEN)
    assert await store.load(KEY) == TOKEN
    assert await open_token_store(None, captured.log).load(KEY) is None  # memory is the store's own
    await store.delete(KEY, BARE)  # not the stored token: kept
    assert await store.load(KEY) == TOKEN
    await store.delete(KEY, TOKEN)
    assert await store.load(KEY) is None
    await store.aclose()
    assert captured.events() == []


async def test_sqlite_round_trip_keeps_every_field_across_a_restart(
    tmp_path: Path, captured: Captured
) -> None:
    path = str(tmp_path / "tokens.db")
    store = open_token_store(path, captured.log)
    await store.save(KEY, TOKEN)
    assert persisted(path, KEY)
    await store.save("other", BARE)
    await store.save("gone", BARE)
    await store.delete("gone")
    assert await store.load(KEY) == TOKEN
    await store.aclose()

    restarted = open_token_store(path, captured.log)
    assert await restarted.load(KEY) == TOKEN  # access, refresh, expires_at, obtained_at all equal
    loaded = await restarted.load("other")
    assert loaded == BARE and loaded is not None and loaded.refresh is None
    assert await restarted.load("gone") is None
    await restarted.aclose()
    assert captured.errors() == []


async def test_new_files_are_0600_and_in_wal_mode(tmp_path: Path, captured: Captured, umask022: None) -> None:
    path = tmp_path / "tokens.db"
    store = open_token_store(str(path), captured.log)
    await store.save(KEY, TOKEN)
    # While the store's connection is open, SQLite keeps the WAL and its shared-memory index beside the file.
    for name in ("tokens.db", "tokens.db-wal", "tokens.db-shm"):
        assert mode(tmp_path / name) == 0o600, name
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()
    await store.aclose()


async def test_existing_files_lose_group_and_other_bits(
    tmp_path: Path, captured: Captured, umask022: None
) -> None:
    path = tmp_path / "tokens.db"
    raw = sqlite3.connect(path)  # another program made the file, in WAL mode, under umask 022
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("CREATE TABLE unrelated (x)")
    for name in ("tokens.db", "tokens.db-wal", "tokens.db-shm"):
        assert mode(tmp_path / name) == 0o644, name
    store = open_token_store(str(path), captured.log)
    assert mode(path) == 0o644  # nothing touched before the first call (it runs after the privilege drop)
    assert await store.load(KEY) is None
    for name in ("tokens.db", "tokens.db-wal", "tokens.db-shm"):
        assert mode(tmp_path / name) == 0o600, name
    await store.save(KEY, TOKEN)
    assert await store.load(KEY) == TOKEN
    assert persisted(path, KEY)
    raw.close()
    await store.aclose()


async def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path, captured: Captured) -> None:
    path = str(tmp_path / "tokens.db")
    first, second = open_token_store(path, captured.log), open_token_store(path, captured.log)
    await first.save(KEY, TOKEN)
    assert await second.load(KEY) == TOKEN
    await second.save(KEY, BARE)  # the other process renewed
    assert await first.load(KEY) == BARE
    await first.delete(KEY, TOKEN)  # refusing the old token leaves the newer one alone
    assert await second.load(KEY) == BARE
    await first.delete(KEY, BARE)
    assert await second.load(KEY) is None
    assert await first.load(KEY) is None
    await first.aclose()
    await second.aclose()
    assert captured.errors() == []


async def check_memory_fallback(store: TokenStore, path: Path, captured: Captured) -> None:
    """The store works in memory, and exactly one error line (without a token in it) says why."""
    await store.save(KEY, TOKEN)  # the file is opened (and found unusable) at the first call
    assert not persisted(path, KEY)
    assert await store.load(KEY) == TOKEN
    await store.delete(KEY)
    assert await store.load(KEY) is None
    await store.aclose()
    errors = captured.errors()
    assert len(errors) == 1, errors
    assert "memory" in errors[0]["event"] and errors[0]["error"]
    assert "access-secret" not in captured.stream.getvalue()


@pytest.mark.parametrize("damage", ["garbage", "directory", "no parent", "newer schema", "nul byte"])
async def test_unusable_database_at_open_falls_back_to_memory(
    tmp_path: Path, captured: Captured, damage: str
) -> None:
    path = tmp_path / "tokens.db"
    if damage == "garbage":
        path.write_bytes(b"this is not an SQLite database, just garbage\n" * 200)
    elif damage == "directory":
        path.mkdir()
    elif damage == "no parent":
        path = tmp_path / "missing" / "tokens.db"
    elif damage == "nul byte":
        path = tmp_path / "tokens\0.db"
    else:
        raw = sqlite3.connect(path)
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        raw.close()
    store = open_token_store(str(path), captured.log)
    await check_memory_fallback(store, path, captured)
    if damage == "newer schema":  # left as a newer pfxhttp wrote it
        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        raw.close()


async def test_database_failing_later_falls_back_to_memory_once(tmp_path: Path, captured: Captured) -> None:
    path = tmp_path / "tokens.db"
    store = open_token_store(str(path), captured.log)
    await store.save(KEY, TOKEN)
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE pfxhttp_tokens")  # the file changed under the daemon
    raw.close()
    assert await store.load(KEY) == TOKEN  # what this process saved survives in memory
    await store.save(KEY, BARE)
    assert await store.load(KEY) == BARE
    await check_memory_fallback(store, path, captured)


async def test_a_value_sqlite_refuses_stays_in_memory_without_dropping_the_database(
    tmp_path: Path, captured: Captured
) -> None:
    path = tmp_path / "tokens.db"
    store = open_token_store(str(path), captured.log)
    odd = Token(access="access-secret-\ud800", expires_at=TOKEN.expires_at, obtained_at=TOKEN.obtained_at)
    await store.save(KEY, odd)
    assert await store.load(KEY) is None  # the database is still the truth between processes
    await store.save(KEY, TOKEN)
    assert await store.load(KEY) == TOKEN
    assert persisted(path, KEY)  # still written to SQLite, not degraded to memory
    await store.aclose()
    assert [e["level"] for e in captured.events()] == ["warning"]
    assert "access-secret" not in captured.stream.getvalue()


# Permissions do not stop root, so as root the unwritable cases run in a child process that becomes "nobody"
# once its imports are done (the interpreter itself may live where nobody cannot read).
UNPRIVILEGED_PROBE = """
import json, os, sys, trio
from pfxhttp.backend.auth.store import open_token_store
from pfxhttp.backend.auth.tokens import Token

if len(sys.argv) > 2:
    uid, gid = int(sys.argv[2]), int(sys.argv[3])
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)

class Log:
    def __init__(self): self.levels = []
    def error(self, event, **kw): self.levels.append("error")
    def warning(self, event, **kw): self.levels.append("warning")

async def main():
    result = {}
    for name, path in json.loads(sys.argv[1]).items():
        log = Log()
        store = open_token_store(path, log)
        await store.save("k", Token("a", 2e9, 1e9))
        # Persisted: another store on the same file, as another process, finds the token.
        other = open_token_store(path, Log())
        persisted = (await other.load("k")) is not None
        await other.aclose()
        result[name] = [persisted, (await store.load("k")) is not None, log.levels]
        await store.aclose()
    print(json.dumps(result))

trio.run(main)
"""


def test_unwritable_directory_and_readonly_file_fall_back_to_memory() -> None:
    root = os.geteuid() == 0
    user = pwd.getpwnam("nobody") if root else pwd.getpwuid(os.getuid())
    base = Path(tempfile.mkdtemp(prefix="pfxhttp-store-"))  # not under pytest's 0700 tmp root: nobody enters
    try:
        base.chmod(0o755)
        writable, locked = base / "writable", base / "locked"
        writable.mkdir()
        locked.mkdir()
        readonly = writable / "readonly.db"
        raw = sqlite3.connect(readonly)
        raw.execute("CREATE TABLE t (x)")
        raw.close()
        for path in (writable, locked, readonly):
            if root:
                os.chown(path, user.pw_uid, user.pw_gid)
        locked.chmod(0o555)
        readonly.chmod(0o400)
        paths = {
            "control": str(writable / "ok.db"),
            "unwritable directory": str(locked / "tokens.db"),
            "readonly file": str(readonly),
        }
        drop = [str(user.pw_uid), str(user.pw_gid)] if root else []
        result = subprocess.run(
            [sys.executable, "-c", UNPRIVILEGED_PROBE, json.dumps(paths), *drop],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {
            "control": [True, True, []],
            "unwritable directory": [False, True, ["error"]],
            "readonly file": [False, True, ["error"]],
        }
        assert mode(readonly) == 0o400  # never made writable
    finally:
        shutil.rmtree(base)
