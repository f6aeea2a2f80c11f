"""Micro-benchmark of the sans-IO request decoders (not a test): microseconds per decoded request.

    .venv/bin/python bench/micro_policy.py [-n 100000] [--repeat 5] [--rev GIT_REV]

Policy: the 31-attribute Postfix 3.7 block that bench/pfxload sends (~700 bytes, varying sender, recipient,
client), one block per feed as Postfix writes it, drained the way the connection loop drains it (``next``
until ``None``). Measured: the decoder as it is (whole-block fast path), its line-by-line reference path
(what every request cost before the fast path), and with ``--rev`` the decoder of a git revision.
Socketmap: one netstring per feed, then ``SocketmapRequest.parse`` (the current decoder, and with ``--rev``).
Best of ``--repeat`` runs, in process CPU time (less disturbed by other load than wall time); the figures
are for comparing side by side on one machine, not absolute.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pfxhttp.protocol import netstring, policy  # noqa: E402
from pfxhttp.protocol.socketmap import SocketmapRequest  # noqa: E402

DISTINCT = 1000  # distinct requests, cycled (a million blocks would only measure memory)

# The attribute lines of pfxload's policy mode (../shared/bench/cmd/pfxload), in its order.
_POLICY_TEMPLATE = (
    "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
    "helo_name=mx{k}.sender.example.net\nqueue_id=\nsender=alice{k}@sender.example.net\n"
    "recipient=user{k}@example.com\nrecipient_count=0\nclient_address=192.0.2.{ip}\n"
    "client_name=mx{k}.sender.example.net\nreverse_client_name=mx{k}.sender.example.net\n"
    "instance={a:x}.{b:x}.{c:x}.0\nsasl_method=\nsasl_username=\nsasl_sender=\nsize={size}\n"
    "ccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\n"
    "encryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\n"
    "etrn_domain=\nstress=\nclient_port={port}\npolicy_context=\nserver_address=127.0.0.1\nserver_port=25\n"
    "compatibility_level=3.6\nmail_version=3.7.11\n\n"
)


def policy_blocks() -> list[bytes]:
    return [
        _POLICY_TEMPLATE.format(
            k=k, ip=1 + k % 254, a=0x1000 + k, b=k, c=0x2000 + k % 4096, size=1000 + k * 17, port=1024 + k
        ).encode()
        for k in range(DISTINCT)
    ]


def socketmap_frames() -> list[bytes]:
    return [netstring.encode(f"demo_map user{k}@example.com".encode()) for k in range(DISTINCT)]


def drain_policy(decoder: Any, next_request: Callable[[], Any], blocks: list[bytes], count: int) -> float:
    """Seconds to feed and decode ``count`` blocks, one block per feed."""
    feed = decoder.feed
    n_blocks = len(blocks)
    started = time.process_time()
    for i in range(count):
        feed(blocks[i % n_blocks])
        while next_request() is not None:
            pass
    return time.process_time() - started


def drain_socketmap(decoder: Any, next_payload: Callable[[], Any], frames: list[bytes], count: int) -> float:
    feed = decoder.feed
    parse = SocketmapRequest.parse
    n_frames = len(frames)
    started = time.process_time()
    for i in range(count):
        feed(frames[i % n_frames])
        while (payload := next_payload()) is not None:
            parse(payload)
    return time.process_time() - started


def module_at(rev: str, path: str, name: str) -> types.ModuleType:
    """The module at ``path`` as of git revision ``rev`` (its imports resolve to the current tree)."""
    git = shutil.which("git")
    if git is None:
        raise SystemExit("--rev needs git")
    # The revision comes from the command line of whoever runs this local script; no shell is involved.
    source = subprocess.run(  # noqa: S603
        [git, "-C", str(ROOT), "show", f"{rev}:{path}"], check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up there
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)  # noqa: S102 - our own repository's code
    return module


def best(run: Callable[[], float], repeat: int, count: int) -> float:
    """Best-of-``repeat`` microseconds per item."""
    return min(run() for _ in range(repeat)) / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="requests per run (default 100000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per variant; the best counts (default 5)")
    parser.add_argument("--rev", help="also measure the decoders of this git revision (e.g. HEAD~1)")
    args = parser.parse_args()
    count, repeat = max(1, args.n), max(1, args.repeat)
    rows: list[tuple[str, float]] = []

    blocks = policy_blocks()
    check = policy.PolicyDecoder()
    check.feed(blocks[0])
    request = check.next()
    assert request is not None and len(request.attributes) == 31, "unexpected benchmark block"

    def policy_fast() -> float:
        decoder = policy.PolicyDecoder()
        return drain_policy(decoder, decoder.next, blocks, count)

    def policy_by_line() -> float:
        decoder = policy.PolicyDecoder()
        return drain_policy(decoder, decoder._next_by_line, blocks, count)

    rows.append(("policy: line by line (reference, the decoder before)", best(policy_by_line, repeat, count)))
    rows.append(("policy: whole-block fast path (current)", best(policy_fast, repeat, count)))
    if args.rev:
        old = module_at(args.rev, "pfxhttp/protocol/policy.py", "policy_at_rev")

        def policy_rev() -> float:
            decoder = old.PolicyDecoder()
            return drain_policy(decoder, decoder.next, blocks, count)

        rows.append((f"policy: decoder at {args.rev}", best(policy_rev, repeat, count)))

    frames = socketmap_frames()

    def socketmap_current() -> float:
        decoder = netstring.NetstringDecoder()
        return drain_socketmap(decoder, decoder.next, frames, count)

    rows.append(("socketmap: netstring + parse (current)", best(socketmap_current, repeat, count)))
    if args.rev:
        old_ns = module_at(args.rev, "pfxhttp/protocol/netstring.py", "netstring_at_rev")

        def socketmap_rev() -> float:
            decoder = old_ns.NetstringDecoder()
            return drain_socketmap(decoder, decoder.next, frames, count)

        rows.append((f"socketmap: decoder at {args.rev}", best(socketmap_rev, repeat, count)))

    print(f"python {sys.version.split()[0]}, {count} requests per run, best of {repeat}")
    width = max(len(label) for label, _ in rows)
    for label, micros in rows:
        print(f"  {label:<{width}}  {micros:7.2f} us/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
