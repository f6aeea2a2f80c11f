"""systemd integration without libsystemd: readiness notification and socket activation.

``notify`` speaks the sd_notify(3) protocol: one datagram of newline-separated ``VAR=value`` assignments sent to
the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). The daemon must
keep serving when systemd cannot be told, so ``notify`` never raises; it returns whether the datagram left, and
the caller logs a failure.

``listen_fds`` reads the sd_listen_fds(3) environment: ``$LISTEN_PID`` names the process the descriptors are
for (a child that merely inherited the environment must ignore them), ``$LISTEN_FDS`` counts them from
``SD_LISTEN_FDS_START`` (3) upward, and ``$LISTEN_FDNAMES`` gives each one the ``FileDescriptorName=`` of its
socket unit, colon-separated. The three variables are removed afterwards so that no child process of ours
mistakes the descriptors for its own (sd_listen_fds' ``unset_environment``).

Pure standard library, and nothing here touches trio: the server layer wraps the descriptors (listeners.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from pfxhttp.server.listeners import BindError

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): the first passed descriptor, after stdin/stdout/stderr
# sd_listen_fds(3) bounds the count only by INT_MAX; no pfxhttp configuration comes near this, so a larger count
# is a broken environment, refused before anything is allocated for it.
MAX_LISTEN_FDS = 4096
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
# sd_listen_fds_with_names(3): the name of a descriptor whose socket unit set no FileDescriptorName=.
UNKNOWN_NAME = "unknown"

READY = "READY=1"
STOPPING = "STOPPING=1"
RELOADING = "RELOADING=1"


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=serving"``) to ``$NOTIFY_SOCKET``.

    Returns False when the variable is absent or empty (not started by systemd: nothing to do) and when sending
    failed; never raises. A leading ``@`` selects the abstract namespace (sd_notify(3)).
    """
    target = environ.get("NOTIFY_SOCKET", "")
    if target.startswith("@"):
        address = "\0" + target[1:]
    elif target.startswith("/"):
        address = target
    else:  # absent, or a transport this version does not speak (systemd >= 256 also allows vsock:)
        return False
    try:
        data = state.encode("utf-8")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Non-blocking: the caller runs on the trio loop, and a notification that cannot be queued at once
            # (systemd not reading) is better lost and logged than a stalled daemon.
            sock.setblocking(False)
            sock.connect(address)
            sent = sock.send(data)
    except (OSError, ValueError, UnicodeError):  # ValueError: NUL in the path
        return False
    return sent == len(data)


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock sd_notify's ``MONOTONIC_USEC=`` is read against."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def reloading_state() -> str:
    """The state a reload starts with. systemd >= 253 (``Type=notify-reload``) wants ``MONOTONIC_USEC=`` next
    to ``RELOADING=1`` to tell this reload from an older one; earlier versions ignore the extra line."""
    return f"{RELOADING}\nMONOTONIC_USEC={monotonic_usec()}"


def ready_state(status: str = "") -> str:
    """``READY=1``, with ``STATUS=`` (one line; what ``systemctl status`` shows) when given."""
    status = " ".join(status.split())  # a newline would start a new assignment
    return f"{READY}\nSTATUS={status}" if status else READY


def notify_reloading(environ: Mapping[str, str] = os.environ) -> bool:
    """Tell systemd a reload began; send ``ready_state`` when it ended, whether or not it succeeded."""
    return notify(reloading_state(), environ)


def send(state: str, environ: Mapping[str, str] | None, log: Any) -> None:
    """sd_notify(3) from the daemon (the single process, or the supervisor: workers pass ``environ=None``). A
    failure is logged, never raised: the daemon keeps serving even if systemd cannot hear it."""
    if environ is None or notify(state, environ) or not environ.get("NOTIFY_SOCKET"):
        return
    log.error("cannot notify systemd", state=state.split("\n", 1)[0])


@contextlib.contextmanager
def reloading(deliver: Callable[[str], None], ready: Callable[[], str | None]) -> Iterator[None]:
    """Wrap a configuration reload: RELOADING=1 with MONOTONIC_USEC= before (as ``Type=notify-reload``, systemd
    >= 253, requires), ``ready()`` after, also when the reload failed and the old configuration serves on (systemd
    waits for READY=1 to end the reload either way). ``ready()`` returns None when the daemon is stopping by
    then: STOPPING=1 was sent, and a READY=1 after it would tell systemd the opposite."""
    deliver(reloading_state())
    try:
        yield
    finally:
        state = ready()
        if state is not None:
            deliver(state)


def _count(name: str, text: str) -> int:
    # Strict: int() would also take " 3", "+3" and "3_0", none of which systemd writes; and the length is capped
    # before int() (which refuses over 4300 digits with a ValueError of its own).
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BindError(f"socket activation: ${name} is not a number: {text!r}")
    return int(text)


def parse_listen_env(environ: Mapping[str, str], pid: int) -> dict[str, list[int]]:
    """The descriptors ``environ`` passes to process ``pid``, by name; no system calls.

    Not socket-activated (no ``$LISTEN_PID``), or the variables are another process's: ``{}``. Names missing
    from ``$LISTEN_FDNAMES`` (or empty) are ``"unknown"``; names beyond ``$LISTEN_FDS`` describe no descriptor
    and are ignored. A malformed ``$LISTEN_PID`` or ``$LISTEN_FDS`` raises BindError: the unit is broken and
    starting on guessed descriptors would be worse than not starting.
    """
    pid_text = environ.get("LISTEN_PID")
    if pid_text is None:
        return {}
    if _count("LISTEN_PID", pid_text) != pid:
        return {}
    count = _count("LISTEN_FDS", environ.get("LISTEN_FDS", "0"))
    if count > MAX_LISTEN_FDS:
        raise BindError(f"socket activation: $LISTEN_FDS={count} exceeds {MAX_LISTEN_FDS}")
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    inherited: dict[str, list[int]] = {}
    for index in range(count):
        name = names[index] if index < len(names) and names[index] else UNKNOWN_NAME
        inherited.setdefault(name, []).append(SD_LISTEN_FDS_START + index)
    return inherited


def unset_listen_env(environ: MutableMapping[str, str]) -> None:
    """Remove ``$LISTEN_PID``, ``$LISTEN_FDS`` and ``$LISTEN_FDNAMES`` (on ``os.environ`` this is unsetenv)."""
    for variable in LISTEN_VARIABLES:
        environ.pop(variable, None)


def listen_fds(
    environ: MutableMapping[str, str] = os.environ, pid: int | None = None
) -> dict[str, list[int]]:
    """sd_listen_fds(3) with names: the descriptors systemd passed us, by ``FileDescriptorName=``.

    Each descriptor gets FD_CLOEXEC so that it does not leak into anything we execute; the three variables are
    unset from ``environ`` whatever the outcome, as sd_listen_fds(unset_environment=1) does. ``pid`` defaults
    to ours. Raises BindError for a malformed environment or a descriptor that is not open.
    """
    try:
        inherited = parse_listen_env(environ, os.getpid() if pid is None else pid)
        for fds in inherited.values():
            for fd in fds:
                try:
                    flags = fcntl.fcntl(fd, fcntl.F_GETFD)
                    fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
                except OSError as exc:
                    raise BindError(
                        f"socket activation: descriptor {fd} is not open: {exc.strerror}"
                    ) from exc
    finally:
        unset_listen_env(environ)
    return inherited
