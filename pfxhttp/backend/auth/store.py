"""Bearer tokens kept across restarts and shared by worker processes: SQLite in WAL mode, or memory only.

The database holds live credentials (access and refresh tokens), so it is created 0600 before SQLite ever opens
it, and an existing file and its ``-wal``/``-shm`` companions lose every group and other bit. Another local user
must neither read the tokens nor feed the daemon a database: the directory must be writable by the daemon's
user (or root) alone, since whoever can write it can plant or swap any file SQLite opens by name; the database
and its companions must be regular files (not links: opened with ``O_NOFOLLOW``) owned by the daemon's user
with one link. Otherwise the store is refused with one error line and tokens stay in memory. WAL mode lets
several pfxhttp processes read while one writes (https://www.sqlite.org/wal.html); ``busy_timeout`` makes a
writer wait for another's lock instead of failing at once.

The store is a cache, never a dependency: a database that is corrupt, unreadable, unwritable or of an unknown
schema version, at open or at any later call, is dropped with ONE error line and the store carries on in memory.
No call ever raises. Every SQLite call runs in a worker thread (``trio.to_thread``), one at a time under a lock,
so the single connection is never used by two threads at once.

The file is opened at the first call, not when the configuration is loaded: the daemon loads it as root (to
bind), then drops to ``run_as_user``, and a database created before the drop would belong to root and be
read-only for the daemon from then on.
"""

from __future__ import annotations

import enum
import errno
import os
import sqlite3
import stat
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import trio

from pfxhttp.backend.auth.tokens import Token
from pfxhttp.config.trust import foreign_directory
from pfxhttp.errors import UnsafeFileError

SCHEMA_VERSION = 1  # kept in PRAGMA user_version; a newer file is left alone (memory only), never rewritten
# How long a write waits for another process's lock. Only the cold path (a token request) touches the store.
BUSY_TIMEOUT = 2.0
_MODE = 0o600
_COMPANIONS = ("-wal", "-shm")  # https://www.sqlite.org/tempfiles.html: the WAL and its shared-memory index
# SQLite's primary result codes for "another connection holds the lock" (https://www.sqlite.org/rescode.html).
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pfxhttp_tokens (
    key TEXT PRIMARY KEY,
    access TEXT NOT NULL,
    refresh TEXT,
    expires_at REAL NOT NULL,
    obtained_at REAL NOT NULL
)
"""

_R = TypeVar("_R")


class _Db(enum.Enum):
    """The outcome of a database call that could not be made (no database, or it just failed)."""

    UNAVAILABLE = enum.auto()


def _restrict(fd: int) -> None:
    """Drop group and other permission bits; never add any (a read-only file stays read-only)."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & ~_MODE:
        os.fchmod(fd, mode & _MODE)


# O_NOFOLLOW: a symbolic link planted at the path is refused (ELOOP), never followed to someone else's file.
# O_NONBLOCK: a FIFO planted there must not hang the opening thread; it is refused as not a regular file.
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def _open_own(path: str, flags: int) -> int:
    """A descriptor on ``path``, a regular file of ours with one link (else UnsafeFileError), its group and
    other bits cleared."""
    try:
        fd = os.open(path, flags | _OPEN_FLAGS, _MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFileError(f"{path} is a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        euid = os.geteuid()
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(f"{path} is not a regular file")
        if info.st_uid != euid:
            raise UnsafeFileError(f"{path} belongs to uid {info.st_uid}, not to this process's uid {euid}")
        if info.st_nlink != 1:  # a hard link elsewhere would let its directory's users read the tokens
            raise UnsafeFileError(f"{path} has {info.st_nlink} hard links")
        _restrict(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_companions(path: str) -> None:
    for suffix in _COMPANIONS:
        try:
            fd = _open_own(path + suffix, os.O_RDONLY)
        except FileNotFoundError:
            continue
        os.close(fd)


def _check_directory(path: str) -> None:
    """Refuse a directory (or one above it) that a user other than this process's or root could write."""
    real = os.path.realpath(path)
    found = foreign_directory(real, frozenset({0, os.geteuid()}), sticky_parent=False)
    if found is not None:
        directory, reason = found
        raise UnsafeFileError(f"the directory {directory} is not this user's alone ({reason})")


def _migrate(db: sqlite3.Connection) -> None:
    # BEGIN IMMEDIATE takes the write lock at once: this also proves the file is writable at start-up.
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version}, this pfxhttp knows {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _connect(path: str) -> sqlite3.Connection:
    """Create (0600) or open the database, switch it to WAL and check the schema. Blocking."""
    _check_directory(path)  # first: in a directory only we may write, no one can swap a file after its check
    # os.open with O_CREAT and 0o600 means the file never exists with wider permissions, whatever the umask.
    os.close(_open_own(path, os.O_RDWR | os.O_CREAT))
    _check_companions(path)  # left by an earlier run: SQLite would open them by name
    # check_same_thread=False: calls come from trio's worker threads, serialized by TokenStore's lock.
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL").fetchone()
        db.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; a lost last write is just a new login
        _migrate(db)
        _check_companions(path)
    except BaseException:
        db.close()
        raise
    return db


def _select(key: str, db: sqlite3.Connection) -> Token | None:
    row = db.execute(
        "SELECT access, refresh, expires_at, obtained_at FROM pfxhttp_tokens WHERE key = ?", (key,)
    ).fetchone()
    if row is None:
        return None
    access, refresh, expires_at, obtained_at = row
    # A row another writer mangled is a miss, not an error: the token source then simply fetches.
    if not isinstance(access, str) or not (refresh is None or isinstance(refresh, str)):
        return None
    if not isinstance(expires_at, int | float) or not isinstance(obtained_at, int | float):
        return None
    return Token(access=access, expires_at=float(expires_at), obtained_at=float(obtained_at), refresh=refresh)


def _upsert(key: str, token: Token, db: sqlite3.Connection) -> None:
    db.execute(
        "INSERT INTO pfxhttp_tokens (key, access, refresh, expires_at, obtained_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(key) DO UPDATE SET access = excluded.access, refresh = excluded.refresh, "
        "expires_at = excluded.expires_at, obtained_at = excluded.obtained_at",
        (key, token.access, token.refresh, token.expires_at, token.obtained_at),
    )


def _remove(key: str, access: str | None, db: sqlite3.Connection) -> None:
    if access is None:
        db.execute("DELETE FROM pfxhttp_tokens WHERE key = ?", (key,))
    else:
        db.execute("DELETE FROM pfxhttp_tokens WHERE key = ? AND access = ?", (key, access))


def _close_quietly(db: sqlite3.Connection) -> None:
    try:
        db.close()
    except sqlite3.Error:
        pass  # the connection is being dropped because it failed; nothing more to learn from it


class TokenStore:
    """Tokens by store key (TokenFetcher.store_key). Memory always holds what this process saved or loaded;
    SQLite, while usable, is the shared truth between processes and restarts. No method raises."""

    def __init__(self, path: str | None, log: Any) -> None:
        """Use :func:`open_token_store`. The database at ``path`` is opened at the first call."""
        self._db: sqlite3.Connection | None = None
        self._path = path
        self._unopened = path is not None
        self._log = log
        self._memory: dict[str, Token] = {}
        self._lock = trio.Lock()

    async def load(self, key: str) -> Token | None:
        """The stored token for ``key`` (maybe expired), or None."""
        found = await self._call(partial(_select, key))
        if found is _Db.UNAVAILABLE:
            return self._memory.get(key)
        if found is None:
            self._memory.pop(key, None)  # another process deleted it (the backend refused it)
        else:
            self._memory[key] = found
        return found

    async def save(self, key: str, token: Token) -> None:
        """Keep ``token`` for ``key``, replacing the previous one."""
        self._memory[key] = token
        await self._call(partial(_upsert, key, token))

    async def delete(self, key: str, token: Token | None = None) -> None:
        """Forget the token for ``key``; with ``token``, only if the stored one is still that token, so a newer
        token another process stored meanwhile survives."""
        held = self._memory.get(key)
        if held is not None and (token is None or held.access == token.access):
            del self._memory[key]
        await self._call(partial(_remove, key, None if token is None else token.access))

    async def aclose(self) -> None:
        """Close the database; the store keeps working in memory."""
        async with self._lock:
            self._unopened = False  # never opened now: a closed store must not create the file
            db, self._db = self._db, None
            if db is not None:
                await trio.to_thread.run_sync(_close_quietly, db)

    async def _open(self) -> None:
        """Open the database (the first call; under the lock)."""
        self._unopened = False
        assert self._path is not None
        try:
            self._db = await trio.to_thread.run_sync(_connect, self._path)
        # ValueError: a NUL byte in the path. UnsafeFileError: another user could read or swap the files.
        except (sqlite3.Error, OSError, ValueError, UnsafeFileError) as exc:
            self._log.error(
                "token store unusable, keeping tokens in memory only",
                path=self._path,
                error=f"{type(exc).__name__}: {exc}",
            )

    async def _call(self, operation: Callable[[sqlite3.Connection], _R]) -> _R | _Db:
        if self._db is None and not self._unopened:  # memory only: no lock, no thread
            return _Db.UNAVAILABLE
        async with self._lock:  # one connection, one thread at a time
            if self._unopened:
                await self._open()
            db = self._db
            if db is None:
                return _Db.UNAVAILABLE
            try:
                return await trio.to_thread.run_sync(operation, db)
            except ValueError as exc:
                # A value SQLite cannot take (a lone surrogate in a token): this token stays in memory only; the
                # database is fine. The type name only: the text could quote the value.
                self._log.warning("token not written to the store", path=self._path, error=type(exc).__name__)
                return _Db.UNAVAILABLE
            except (sqlite3.Error, OSError) as exc:
                code = getattr(exc, "sqlite_errorcode", None)
                if isinstance(code, int) and code & 0xFF in _BUSY_CODES:
                    # Contention, not damage: other processes hold the lock past BUSY_TIMEOUT. Skip this call.
                    self._log.warning("token store busy, using memory for now", path=self._path)
                    return _Db.UNAVAILABLE
                self._db = None
                self._log.error(
                    "token store failed, keeping tokens in memory only",
                    path=self._path,
                    error=f"{type(exc).__name__}: {exc}",
                )
                await trio.to_thread.run_sync(_close_quietly, db)
                return _Db.UNAVAILABLE


def open_token_store(path: str | None, log: Any) -> TokenStore:
    """A TokenStore on the SQLite file at ``path`` (created 0600 at the first call, in a worker thread), or in
    memory when ``path`` is None or the file cannot be used (one error line then). No I/O here; never raises."""
    return TokenStore(path, log)
