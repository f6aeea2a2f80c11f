"""Whether a file is safe to trust: who besides its owner could have written it, or could swap it for another.

Root reading a configuration file that another user can change runs that user's configuration with root's
rights: the file names secret files and private keys (root reads any of them) and the URLs their contents are
sent to. So, as root, the configuration file must belong to root and be writable by nobody else, and so must
every directory on its real path (symbolic links resolved): whoever can write a directory can rename a
different file into its place. A directory writable by others is accepted only with the sticky bit (``/tmp``):
there only an entry's owner (or the directory's) may rename or remove it, and the next step of the path is
checked to belong to root itself. This is the rule of OpenSSH's ``StrictModes`` and of sudo for sudoers.

The checks and the read happen on one descriptor opened with ``O_NOFOLLOW``, so the file checked is the file
read. As any other user the file is read as before: that user's own files are theirs to trust.
:func:`foreign_directory` also serves the token store (``server.jwt_db_path``), whose directory must be the
daemon's or root's alone.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pfxhttp.errors import ConfigError

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def foreign_write(info: os.stat_result, trusted: frozenset[int], *, sticky_ok: bool) -> str | None:
    """Why a user outside ``trusted`` could change this file or directory (or replace what it holds), or
    None. ``sticky_ok``: a directory writable by others is fine when it has the sticky bit."""
    if info.st_uid not in trusted:
        return f"it belongs to uid {info.st_uid}"
    mode = stat.S_IMODE(info.st_mode)
    if not mode & _WRITABLE_BY_OTHERS:
        return None
    if sticky_ok and stat.S_ISDIR(info.st_mode) and mode & stat.S_ISVTX:
        return None
    who = "every user" if mode & stat.S_IWOTH else f"group {info.st_gid}"
    return f"{who} may write it (mode {mode:04o})"


def foreign_directory(real: str, trusted: frozenset[int], *, sticky_parent: bool) -> tuple[Path, str] | None:
    """The first directory from ``/`` down to the parent of the resolved path ``real`` that a user outside
    ``trusted`` could change, with the reason; None when there is none. Sticky directories are accepted above
    the parent, and for the parent itself only with ``sticky_parent``. Blocking (lstat)."""
    parents = list(reversed(Path(real).parents))
    for directory in parents:
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode):  # realpath resolved every link: this one changed meanwhile
            return directory, "it changed while the path was checked"
        sticky_ok = sticky_parent or directory != parents[-1]
        reason = foreign_write(info, trusted, sticky_ok=sticky_ok)
        if reason is not None:
            return directory, reason
    return None


def _check_directories(real: str) -> None:
    """Every directory from ``/`` down to the parent of the resolved path ``real``, as root."""
    found = foreign_directory(real, frozenset({0}), sticky_parent=True)
    if found is not None:
        directory, reason = found
        raise ConfigError(
            f"refusing the configuration file {real} as root: its directory {directory} is not root's alone "
            f"({reason})"
        )


def read_config_bytes(path: Path, euid: int) -> bytes:
    """The content of the configuration file ``path``; as root (``euid`` 0) only when no other user can have
    written it or the directories leading to it. Raises ConfigError (OSError text, never content)."""
    try:
        real = os.path.realpath(path)
        if euid == 0:
            _check_directories(real)
        # O_NONBLOCK: a FIFO planted at the path must not hang the load; it is refused below as not a file.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"configuration file {path} is not a regular file")
            reason = foreign_write(info, frozenset({0}), sticky_ok=False) if euid == 0 else None
            if reason is not None:
                raise ConfigError(f"refusing the configuration file {real} as root: {reason}")
            return file.read()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror or exc}") from exc
