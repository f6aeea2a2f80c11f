"""Hold many idle connections open to a pfxhttp listener (a benchmark helper, not a test).

    .venv/bin/python bench/idle_conns.py --addr 127.0.0.1:23461 [--count 1000] [--max-seconds 600]
    .venv/bin/python bench/idle_conns.py --addr unix:/run/pfxhttp/policy.sock ...

Opens ``--count`` connections (loopback or a unix socket only), prints ``ready N`` on stdout once all are
open, then holds them without sending a byte, as idle smtpd processes hold their policy connections, until
SIGTERM/SIGINT or ``--max-seconds``. At the end it prints one JSON line: how many were opened, how many the
server closed meanwhile, how many were still open. Every loop is bounded (count, connect attempts, time).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import resource
import selectors
import signal
import socket
import sys
import time
from types import FrameType

CONNECT_TIMEOUT = 5.0  # seconds per connect attempt
CONNECT_ATTEMPTS = 3  # per connection: a full accept queue drops a SYN, the retry usually gets in
POLL_INTERVAL = 0.2  # seconds between checks of the stop flag


def parse_addr(addr: str) -> tuple[socket.AddressFamily, str | tuple[str, int]]:
    """``unix:/path`` or ``HOST:PORT`` with a loopback HOST; anything else is refused."""
    if addr.startswith("unix:"):
        return socket.AF_UNIX, addr.removeprefix("unix:")
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"idle_conns: refusing non-loopback address {addr!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def open_one(family: socket.AddressFamily, target: str | tuple[str, int]) -> socket.socket:
    last: OSError | None = None
    for _ in range(CONNECT_ATTEMPTS):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(target)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        sock.setblocking(False)
        return sock
    assert last is not None
    raise last


def raise_fd_limit(count: int) -> None:
    """Make room for ``count`` sockets (the soft limit is often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="HOST:PORT (loopback) or unix:/path")
    parser.add_argument("--count", type=int, default=1000, help="connections to hold (default 1000)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="give up holding after this long")
    args = parser.parse_args()
    count = max(0, min(args.count, 100_000))
    deadline = time.monotonic() + max(0.0, min(args.max_seconds, 3600.0))
    family, target = parse_addr(args.addr)
    raise_fd_limit(count)

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    selector = selectors.DefaultSelector()
    closed_by_peer = 0
    unexpected_bytes = 0
    started = time.monotonic()
    try:
        for _ in range(count):
            if stopping:
                break
            selector.register(open_one(family, target), selectors.EVENT_READ)
        opened = len(selector.get_map())
        print(f"ready {opened}", flush=True)
        connect_seconds = time.monotonic() - started
        while not stopping and time.monotonic() < deadline and selector.get_map():
            for key, _ in selector.select(POLL_INTERVAL):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if data:
                    unexpected_bytes += len(data)  # the server never speaks first in these protocols
                    continue
                closed_by_peer += 1
                selector.unregister(sock)
                sock.close()
        still_open = len(selector.get_map())
    finally:
        for key in list(selector.get_map().values()):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            sock.close()
        selector.close()
    summary = {
        "opened": opened,
        "closed_by_peer": closed_by_peer,
        "open_at_end": still_open,
        "unexpected_bytes": unexpected_bytes,
        "connect_seconds": round(connect_seconds, 3),
        "held_seconds": round(time.monotonic() - started, 3),
    }
    with contextlib.suppress(BrokenPipeError):  # the runner may be gone already
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
