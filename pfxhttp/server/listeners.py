"""Bind the configured listeners: tcp (IPv4 and/or IPv6 as the address says), tcp6 (IPv6 only) and unix.

trio has no unix listener helper, so a bound ``trio.socket`` is wrapped in ``trio.SocketListener``. A stale unix
socket file left by a crashed daemon is replaced, but only if it IS a socket: a regular file or directory at that
path is someone else's and is never deleted. A unix socket is bound in a private directory next to its path,
given mode/user/group there and renamed into place (:mod:`pfxhttp.server.unixbind`), so no client connects
through looser permissions and no path another user controls is ever chmod-ed or chown-ed. user/group lookups
are blocking (NSS) and run in a thread.

Socket activation: a listener with ``systemd_socket_name`` takes the descriptors systemd passed under that
``FileDescriptorName=`` (parsed by ``pfxhttp.server.systemd.listen_fds`` and handed in as ``inherited``) instead
of binding. Each is checked to be a listening stream socket of a family that fits the listener's type, and is
used through a duplicate, so the mapping stays valid for a second bind (a reload) and a listener closing its
copy never closes a descriptor another one shares. When the process was not socket-activated at all (empty
mapping) such a listener binds its address as usual; when it was, a missing name is a BindError: a unit whose
sockets do not match the configuration must fail to start, not quietly listen elsewhere. An inherited unix
socket belongs to its socket unit: mode/user/group are the unit's ``SocketMode=``/``SocketUser=``/
``SocketGroup=`` and its file is never removed by us.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket as stdlib_socket
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import trio

from pfxhttp.config.model import ListenConfig, ListenType
from pfxhttp.errors import PfxhttpError
from pfxhttp.server.unixbind import Staging, UnixBindError

# Far above what Postfix opens (its default_process_limit is 100 smtpd per service), still bounded.
BACKLOG = 4096


class BindError(PfxhttpError):
    """A listener could not be bound (address in use, permission, bad path)."""


@dataclass(slots=True)
class BoundListener:
    config: ListenConfig
    listeners: list[trio.SocketListener]
    addresses: list[str]  # "127.0.0.1:23450", "[::1]:23450", "/run/pfxhttp/map.sock"
    inherited: bool = False  # taken from systemd (socket activation): the socket unit owns the file


def _strip_brackets(address: str) -> str:
    if address.startswith("[") and address.endswith("]"):
        return address[1:-1]
    return address


def _format(sockaddr: object, family: int) -> str:
    if family == stdlib_socket.AF_INET6:
        host, port = sockaddr[:2]  # type: ignore[index]
        return f"[{host}]:{port}"
    if family == stdlib_socket.AF_INET:
        host, port = sockaddr  # type: ignore[misc]
        return f"{host}:{port}"
    if isinstance(sockaddr, bytes):  # Linux abstract unix address, written as systemd does: "@name"
        return "@" + sockaddr[1:].decode("utf-8", "replace")
    return str(sockaddr)


async def _bind_tcp(config: ListenConfig) -> list[trio.SocketListener]:
    host: str | None = _strip_brackets(config.address) or None
    if host in ("*",):
        host = None
    port = config.port or 0
    if config.type is ListenType.TCP6:
        infos = await trio.socket.getaddrinfo(
            host,
            port,
            family=stdlib_socket.AF_INET6,
            type=stdlib_socket.SOCK_STREAM,
            flags=stdlib_socket.AI_PASSIVE,
        )
        listeners: list[trio.SocketListener] = []
        for family, type_, proto, _, sockaddr in infos[:1]:
            sock = trio.socket.socket(family, type_, proto)
            try:
                sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
                sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
                await sock.bind(sockaddr)
                sock.listen(BACKLOG)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
        return listeners
    return await trio.open_tcp_listeners(port, host=host, backlog=BACKLOG)


def _ids(user: str | None, group: str | None) -> tuple[int, int]:
    uid = gid = -1
    if user:
        uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
    if group:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    return uid, gid


async def _bind_unix(config: ListenConfig) -> list[trio.SocketListener]:
    # Bound in a private directory, given mode and owner there, then renamed into place (unixbind explains
    # why): never a chmod or chown of a path in a directory another user may write.
    path = config.address
    try:
        uid, gid = await trio.to_thread.run_sync(_ids, config.user, config.group)
    except KeyError as exc:
        raise BindError(f"unknown user or group for {path}: {exc}") from exc
    try:
        staging = await trio.to_thread.run_sync(Staging.create, path)
    except UnixBindError as exc:
        raise BindError(str(exc)) from exc
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        await sock.bind(staging.bind_path)
        sock.listen(BACKLOG)  # no other user can enter the private directory to connect before publish
        await trio.to_thread.run_sync(staging.publish, config.mode, uid, gid)
    except UnixBindError as exc:
        sock.close()
        raise BindError(str(exc)) from exc
    except BaseException:
        sock.close()
        raise
    finally:
        if not staging.published:
            with trio.CancelScope(shield=True):  # the cleanup must run even when the bind was cancelled
                await trio.to_thread.run_sync(staging.close)
    return [trio.SocketListener(sock)]


# The address families a listener type may be served on. A tcp listener takes AF_INET6 too: systemd's
# ``ListenStream=23450`` is one IPv6 socket that also accepts IPv4 (BindIPv6Only=default).
_FAMILIES = {
    ListenType.TCP: (stdlib_socket.AF_INET, stdlib_socket.AF_INET6),
    ListenType.TCP6: (stdlib_socket.AF_INET6,),
    ListenType.UNIX: (stdlib_socket.AF_UNIX,),
}


def _adopt_one(config: ListenConfig, fd: int) -> trio.SocketListener:
    where = f"{config.describe()}: systemd socket {config.systemd_socket_name!r} (descriptor {fd})"
    try:
        # A duplicate (close-on-exec): ours to close, while the inherited descriptor stays valid.
        copy = os.dup(fd)
    except OSError as exc:
        raise BindError(f"{where} is not open: {exc.strerror or exc}") from exc
    try:
        sock = stdlib_socket.socket(fileno=copy)
    except OSError as exc:  # ENOTSOCK: a file or a pipe
        os.close(copy)
        raise BindError(f"{where} is not a socket: {exc.strerror or exc}") from exc
    try:
        if sock.type != stdlib_socket.SOCK_STREAM:
            raise BindError(f"{where} is not a stream socket (ListenStream= in the socket unit)")
        if sock.family not in _FAMILIES[config.type]:
            family = stdlib_socket.AddressFamily(sock.family).name
            raise BindError(f"{where} is {family}, which a {config.type.value} listener cannot serve")
        if not sock.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_ACCEPTCONN):
            raise BindError(f"{where} is not listening (Accept=yes in the socket unit?)")
        return trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    except BaseException:
        sock.close()
        raise


def _adopt(config: ListenConfig, inherited: Mapping[str, Sequence[int]]) -> list[trio.SocketListener]:
    name = config.systemd_socket_name
    fds = inherited.get(name or "")
    if not fds:
        available = ", ".join(sorted(inherited)) or "none"
        raise BindError(
            f"cannot listen on {config.describe()}: socket-activated, but systemd passed no socket named "
            f"{name!r} (FileDescriptorName= of the socket units: {available})"
        )
    listeners: list[trio.SocketListener] = []
    try:
        for fd in fds:
            listeners.append(_adopt_one(config, fd))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


async def bind(config: ListenConfig, inherited: Mapping[str, Sequence[int]]) -> BoundListener:
    """Bind one configured listener, or adopt its systemd socket; raise BindError with a readable message.

    ``inherited``: the descriptors systemd passed, by name (``systemd.listen_fds()``); empty when the process
    was not socket-activated.
    """
    if config.systemd_socket_name is not None and inherited:
        listeners = _adopt(config, inherited)
        addresses = [_format(lst.socket.getsockname(), lst.socket.family) for lst in listeners]
        return BoundListener(config, listeners, addresses, inherited=True)
    try:
        if config.type is ListenType.UNIX:
            listeners = await _bind_unix(config)
        else:
            listeners = await _bind_tcp(config)
    except BindError:
        raise
    except OSError as exc:
        hint = " (address already in use)" if exc.errno == errno.EADDRINUSE else ""
        raise BindError(f"cannot listen on {config.describe()}: {exc.strerror or exc}{hint}") from exc
    if config.type is ListenType.UNIX:  # getsockname() names the private directory it was bound in
        addresses = [config.address]
    else:
        addresses = [_format(lst.socket.getsockname(), lst.socket.family) for lst in listeners]
    return BoundListener(config, listeners, addresses)


async def bind_all(
    configs: Sequence[ListenConfig], inherited: Mapping[str, Sequence[int]]
) -> list[BoundListener]:
    """Bind every listener of ``configs`` in order, or none: on any failure (BindError, cancellation) the ones
    already bound are closed again before it propagates, so a daemon that cannot start leaves no socket behind."""
    bound: list[BoundListener] = []
    try:
        for config in configs:
            bound.append(await bind(config, inherited))
    except BaseException:
        for b in bound:
            close_bound(b)
        raise
    return bound


def close_bound(bound: BoundListener) -> None:
    """Close a bound listener's sockets (synchronously: safe under cancellation) and remove its unix socket file."""
    for listener in bound.listeners:
        listener.socket.close()
    remove_unix_socket(bound)


def remove_unix_socket(bound: BoundListener) -> None:
    """Remove our unix socket file at shutdown (only if it is still a socket, and never systemd's)."""
    if bound.config.type is not ListenType.UNIX or bound.inherited:
        return
    try:
        if stat.S_ISSOCK(os.lstat(bound.config.address).st_mode):
            os.unlink(bound.config.address)
    except OSError:
        pass
