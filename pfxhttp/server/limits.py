"""File descriptors: RLIMIT_NOFILE raised to its hard limit at start, and the connection limit kept below it.

Every Postfix connection is a descriptor. The soft limit is often 1024 (the kernel's default, systemd's
default soft limit for services) while the hard limit is far higher; a daemon that serves many connections is
expected to raise its soft limit itself (systemd.exec(5), LimitNOFILE=). ``accept`` failing with EMFILE is
what the connection limit exists to avoid, so the limit in force is also kept below the descriptors the
process may open, leaving ``FD_RESERVE`` for everything else.
"""

from __future__ import annotations

import resource

# Descriptors kept for what is not a Postfix connection: listening sockets, the HTTP client's connections to
# the backends (100 per origin by default), the token store, log files, trio's own wake-up descriptors.
FD_RESERVE = 256
# What "unlimited" is capped to (setrlimit refuses a soft limit above fs.nr_open; its default is 2**20).
_UNLIMITED = 1 << 20


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one (as far as the kernel lets); return (soft, hard) after.
    A failure leaves the limit as it was: the connection limit then adapts to it (``connection_cap``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # e.g. above fs.nr_open: keep the soft limit we have
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def connection_cap() -> int:
    """The most Postfix connections this process can hold without running out of descriptors."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = _UNLIMITED
    return max(1, soft // 2, soft - FD_RESERVE)
