"""Bind a unix socket so that its mode and owner are set where no other user can reach, then move it into place.

A socket's directory is often writable by someone else: the policy socket goes into Postfix's ``private/``,
owned by ``postfix``. chmod(2) and chown(2) on a path there follow whatever that user put at the path by then
(a symbolic link to a root-only file, say), so a bind-then-chmod-the-path daemon hands that file to them.
Instead pfxhttp:

1. creates a fresh directory (0700, random name) next to the socket path, in the same directory and so on the
   same file system, and holds a descriptor on it, checked to be a 0700 directory of ours;
2. binds the socket in it and listens (no other user can enter the directory, so none can connect yet);
3. sets mode and owner through that descriptor (``fchmodat``/``fchownat`` without following links), where only
   our own process can have put anything;
4. renames the socket onto the configured path (rename(2) replaces a stale socket atomically and never follows
   a link at the destination), then removes the empty directory.

A user who can write the parent directory can still rename or delete things there (that is what owning the
directory means); the worst they get is a failed bind or a socket moved away, never a chmod or chown of a file of
their choosing. An existing entry at the path that is not a socket is refused, as before: it is someone else's.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass

from pfxhttp.errors import PfxhttpError

# A short private directory name and socket name: the staging path must still fit sun_path (108 bytes on Linux).
_STAGE_PREFIX = ".pfx"
_STAGE_SOCKET = "s"
_SUN_PATH_MAX = 108
_MKDIR_ATTEMPTS = 16  # 2**32 random names each: collisions mean something else is going on


class UnixBindError(PfxhttpError):
    """The socket path cannot be bound safely (not a socket at the path, parent missing, path too long)."""


@dataclass(slots=True)
class Staging:
    """The private directory a socket is bound in before it is renamed onto ``path``."""

    path: str
    parent_fd: int
    name: str  # of the private directory, in the parent
    dir_fd: int
    bind_path: str
    published: bool = False

    @classmethod
    def create(cls, path: str) -> Staging:
        """Check ``path`` and make the private directory next to it. Blocking (a worker thread)."""
        parent, target = os.path.split(os.path.abspath(path))
        staged = len(os.fsencode(parent)) + len(f"/{_STAGE_PREFIX}{'0' * 8}/{_STAGE_SOCKET}")
        if staged >= _SUN_PATH_MAX:
            raise UnixBindError(
                f"{path}: its directory's path is too long to bind a socket in a private directory there "
                f"({staged} bytes, at most {_SUN_PATH_MAX - 1})"
            )
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _check_target(parent_fd, target, path)
            name = _make_private_dir(parent_fd, path)
            try:
                dir_fd = _open_private_dir(parent_fd, name, path)
            except BaseException:
                _rmdir_quietly(parent_fd, name)
                raise
        except BaseException:
            os.close(parent_fd)
            raise
        return cls(path, parent_fd, name, dir_fd, os.path.join(parent, name, _STAGE_SOCKET))

    def publish(self, mode: int | None, uid: int, gid: int) -> None:
        """Give the bound socket its mode and owner in the private directory, then rename it onto the path and
        remove the directory. ``uid``/``gid`` -1: unchanged. Blocking (a worker thread)."""
        info = os.stat(_STAGE_SOCKET, dir_fd=self.dir_fd, follow_symlinks=False)
        if not stat.S_ISSOCK(info.st_mode):  # only this process can write the directory: cannot happen
            raise UnixBindError(f"{self.path}: the freshly bound socket is missing")
        if mode is not None:
            # Linux has no lchmod; the entry was just checked to be our socket, in a directory no one else may write.
            os.chmod(_STAGE_SOCKET, mode, dir_fd=self.dir_fd)
        if uid != -1 or gid != -1:
            os.chown(_STAGE_SOCKET, uid, gid, dir_fd=self.dir_fd, follow_symlinks=False)
        _check_target(self.parent_fd, os.path.basename(self.path), self.path)
        os.rename(
            _STAGE_SOCKET, os.path.basename(self.path), src_dir_fd=self.dir_fd, dst_dir_fd=self.parent_fd
        )
        self.published = True
        self.close()

    def close(self) -> None:
        """Remove what is left of the private directory and close the descriptors; never raises. Blocking."""
        if self.dir_fd >= 0:
            if not self.published:
                try:
                    os.unlink(_STAGE_SOCKET, dir_fd=self.dir_fd)
                except OSError:
                    pass  # never bound, or already gone
            os.close(self.dir_fd)
            self.dir_fd = -1
        if self.parent_fd >= 0:
            _rmdir_quietly(self.parent_fd, self.name)
            os.close(self.parent_fd)
            self.parent_fd = -1


def _check_target(parent_fd: int, target: str, path: str) -> None:
    """A stale socket at the path may be replaced; anything else there is someone else's."""
    try:
        info = os.stat(target, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise UnixBindError(f"{path} exists and is not a socket; refusing to replace it")


def _make_private_dir(parent_fd: int, path: str) -> str:
    for _ in range(_MKDIR_ATTEMPTS):
        name = _STAGE_PREFIX + secrets.token_hex(4)
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            continue
        return name
    raise UnixBindError(f"{path}: cannot create a private directory next to it")


def _open_private_dir(parent_fd: int, name: str, path: str) -> int:
    """The directory just made, opened without following a link someone may have swapped in, and checked to be
    ours and closed to everyone else (mkdir's mode is further narrowed by the umask, never widened)."""
    dir_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    info = os.fstat(dir_fd)
    if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
        os.close(dir_fd)
        raise UnixBindError(f"{path}: the private directory next to it was replaced")
    return dir_fd


def _rmdir_quietly(parent_fd: int, name: str) -> None:
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except OSError:
        pass  # moved away or replaced by whoever owns the parent directory: theirs to clean up
