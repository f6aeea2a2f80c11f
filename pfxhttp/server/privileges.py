"""Dropping root after the listeners are bound (``server.run_as_user`` / ``server.run_as_group``).

Order matters and follows what Postfix's own daemons do: bind (and chown unix sockets) as root, then clear the
supplementary groups, set the group, set the user last (after setuid(2) nothing else may be changed). Name lookups
go through NSS and may block, so callers resolve in a thread; the switch itself is three system calls.

Running as root without a configured drop is allowed (a socket-activated unit may start pfxhttp as its own
user) but logged loudly: a daemon parsing network input should not keep root.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from typing import Any

from pfxhttp.errors import PfxhttpError


class PrivilegeError(PfxhttpError):
    """run_as_user / run_as_group cannot be applied (unknown name, not root, system call refused)."""


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    uid: int
    gid: int


def resolve(user: str | None, group: str | None) -> Identity | None:
    """Look up the configured user and group (blocking NSS calls: run in a thread). None: nothing to drop to."""
    if not user and not group:
        return None
    if not user:
        # The configuration refuses this too: a group alone, started as root, keeps uid 0 and every capability.
        raise PrivilegeError("run_as_group needs run_as_user: a group alone does not drop root's privileges")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
        if group:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise PrivilegeError(f"run_as_user/run_as_group: no such user or group ({exc.args[0]})") from exc
    return Identity(name, uid, gid)


def drop(identity: Identity) -> bool:
    """Become ``identity``: supplementary groups cleared, then gid, then uid. Verified afterwards.

    True when the uid changed (root gave up its privileges); False when the process already was that user."""
    if os.geteuid() != 0:
        if (os.getuid(), os.getgid()) == (identity.uid, identity.gid):
            return False  # already that user (e.g. started by systemd with User=): nothing to do
        raise PrivilegeError(
            f"run_as_user/run_as_group need pfxhttp to start as root (running as uid {os.getuid()})"
        )
    try:
        os.setgroups([])
        os.setgid(identity.gid)
        os.setuid(identity.uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot switch to user {identity.user}: {exc.strerror or exc}") from exc
    # setuid(2) to a non-root uid must make regaining root impossible; check rather than trust.
    if identity.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise PrivilegeError("privileges could be regained after dropping them; refusing to run")
        return True
    return False  # run_as_user is root itself: groups and gid changed, the uid and its capabilities did not


def apply(identity: Identity | None, log: Any) -> None:
    """Drop to ``identity`` if configured, else warn when running as root."""
    if identity is None:
        if os.geteuid() == 0:
            log.error(
                "running as root: set server.run_as_user (and run_as_group) to drop privileges after binding"
            )
        return
    _preload()
    if drop(identity):
        log.info("privileges dropped", user=identity.user, uid=identity.uid, gid=identity.gid)
    elif identity.uid == 0:
        # Saying "dropped" here would hide that the daemon parses network input with every capability.
        log.error("run_as_user is root: still running as root", user=identity.user, gid=identity.gid)
    else:
        log.info("already running as the configured user", user=identity.user, uid=identity.uid)


def _preload() -> None:
    """Import now what Python loads lazily later: after the drop the interpreter's own files may not be
    readable (a Python under /root, say), and a lazy import would then fail in the middle of a lookup.
    getaddrinfo() encodes host names with the idna codec, loaded on first use."""
    import encodings.idna  # noqa: F401 - the side effect is the point

    "pfxhttp".encode("idna")
