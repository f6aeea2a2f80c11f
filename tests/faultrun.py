"""The harness of tests/test_faults.py: the daemon's configuration for the fault targets (the fault server plain
and over TLS, a port where nothing listens, an https:// port that answers in plain text, TLS servers with an
unknown CA or a wrong host name), the clients that speak socketmap and policy on the wire, and the judge that
holds every reply against what the fault server did for that request (the contract of docs/design.md).
"""

from __future__ import annotations

import enum
import random
import ssl
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import trio
import trustme

from pfxhttp.protocol.netstring import encode as netstring
from tests.conftest import Daemon, connect, read_netstring, read_policy_reply, unused_port
from tests.faultplan import (
    DAEMON_TIMEOUT,
    Fault,
    right_action,
    right_value,
)
from tests.faultserver import FaultServer

SEED = 20260611
SOCKETMAP_CLIENTS = 48
POLICY_CLIENTS = 16
LOOKUPS_PER_CLIENT = 160  # 64 x 160 = 10,240 lookups
HANG_LIMIT = 5.0  # no reply within this (the backend deadline is 0.3 s) counts as a hang
ERROR_ACTION = "DEFER_IF_PERMIT Service temporarily unavailable"
RESTART_AT = (0.25, 0.5, 0.75)  # fractions of the run at which the fault backends restart
RESTART_DOWNTIME = 0.15


class Target(enum.Enum):
    """Where an entry's backend is; the first two apply the fault server's per-request plan."""

    FAULTY = "faulty"
    TLS_FAULTY = "tls_faulty"  # the same faults, over TLS with a certificate the daemon trusts
    REFUSED = "refused"  # nothing listens there
    TLS_GARBAGE = "tls_garbage"  # https:// target answering in plain text
    TLS_UNTRUSTED = "tls_untrusted"  # certificate from a CA the daemon does not know
    TLS_MISMATCH = "tls_mismatch"  # trusted CA, certificate for another host name


TARGET_WEIGHTS: Mapping[Target, float] = {
    Target.FAULTY: 80,
    Target.TLS_FAULTY: 8,
    Target.REFUSED: 3,
    Target.TLS_GARBAGE: 3,
    Target.TLS_UNTRUSTED: 3,
    Target.TLS_MISMATCH: 3,
}


class Reply(enum.Enum):
    RIGHT = "right"  # OK with the right value / the backend's action
    WRONG = "WRONG"  # OK with another value / another action
    NOTFOUND = "notfound"  # NOTFOUND / DUNNO
    TEMP = "TEMP"
    TIMEOUT = "TIMEOUT"
    PERM = "PERM"
    ERROR_ACTION = "error-action"
    EOF = "EOF"  # the daemon closed the connection without a reply
    HANG = "HANG"  # no reply within HANG_LIMIT


FAULT_REPLIES = {"socketmap": {Reply.TEMP, Reply.TIMEOUT, Reply.PERM}, "policy": {Reply.ERROR_ACTION}}
# The contract table's row per fault (socketmap); policy has the one error action for every fault. A delay or
# a drip must meet the deadline; every other fault is TEMP by its row, or TIMEOUT when the one deadline
# strikes first (a body past the cap over TLS, a retry after a reset, a busy loop): which comes first is timing.
CONTRACT_STATUS: Mapping[Fault, set[Reply]] = {Fault.DELAY: {Reply.TIMEOUT}, Fault.SLOW_DRIP: {Reply.TIMEOUT}}
OTHER_FAULT_STATUS = {Reply.TEMP, Reply.TIMEOUT}


@dataclass(frozen=True)
class Lookup:
    protocol: str  # "socketmap" | "policy"
    target: Target
    key: str
    reply: Reply
    text: str
    began: float  # seconds into the run
    took: float


@dataclass
class Backends:
    faulty: FaultServer
    tls_faulty: FaultServer
    tls_garbage: FaultServer
    tls_untrusted: FaultServer
    tls_mismatch: FaultServer
    refused_port: int

    def url(self, target: Target, path: str) -> str:
        if target is Target.REFUSED:
            return f"http://127.0.0.1:{self.refused_port}{path}"
        server: FaultServer = getattr(self, target.value)
        return server.url(path)

    def planned(self) -> tuple[FaultServer, FaultServer]:
        return self.faulty, self.tls_faulty

    def records(self, lookup: Lookup) -> list[Fault] | None:
        """What the planned server did for ``lookup`` (empty: never reached it); None for the other targets."""
        if lookup.target is Target.FAULTY:
            return self.faulty.records.get(lookup.key, [])
        if lookup.target is Target.TLS_FAULTY:
            return self.tls_faulty.records.get(lookup.key, [])
        return None

    def details(self, key: str) -> list[str]:
        return [d for server in self.planned() for d in server.details.get(key, [])]


def _server_context(ca: trustme.CA, host: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(ctx)
    return ctx


async def start_backends(nursery: trio.Nursery, ca: trustme.CA) -> Backends:
    other_ca = trustme.CA()  # the daemon is never told about this one
    servers = {
        "faulty": FaultServer(SEED),
        "tls_faulty": FaultServer(SEED, ssl_context=_server_context(ca, "127.0.0.1")),
        "tls_garbage": FaultServer(SEED, tls_garbage=True),
        "tls_untrusted": FaultServer(SEED, ssl_context=_server_context(other_ca, "127.0.0.1")),
        "tls_mismatch": FaultServer(SEED, ssl_context=_server_context(ca, "other-host.fault.test")),
    }
    for server in servers.values():
        await nursery.start(server.serve)
    return Backends(**servers, refused_port=unused_port())


def map_config(urls: Mapping[str, str], policy_urls: Mapping[str, str], tls: str = "") -> str:
    """Daemon config: one socket map per ``urls`` entry, one policy listener + service per ``policy_urls``."""
    listeners = "".join(
        f"    - {{kind: policy_service, name: {name}, type: tcp, address: 127.0.0.1, port: 0}}\n"
        for name in policy_urls
    )
    maps = "".join(f"  {name}:\n    target: {url}\n" for name, url in urls.items())
    services = "".join(
        f"  {name}:\n    target: {url}\n    payload: '{{{{ .Key }}}}'\n    value_field: policy.result\n"
        for name, url in policy_urls.items()
    )
    return (
        "server:\n  listen:\n"
        "    - {kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}\n"
        f"{listeners}"
        "  logging: {level: error}\n"
        f"  http_client: {{timeout: {round(DAEMON_TIMEOUT * 1000)}ms}}\n"
        f"{tls}"
        "socket_maps:\n  defaults:\n"
        '    payload: \'{"key": "{{ .Key }}"}\'\n'
        "    value_field: data.result\n    error_field: error\n    no_error_value: not-found\n"
        f"{maps}" + (f"policy_services:\n{services}" if services else "")
    )


def listener_address(daemon: Daemon, name: str) -> str:
    for bound in daemon.server.bound:
        if bound.config.name == name:
            return bound.addresses[0]
    raise KeyError(name)


def classify_socketmap(key: str, text: str) -> Reply:
    status, _, value = text.partition(" ")
    if status == "OK":
        return Reply.RIGHT if value == right_value(key) else Reply.WRONG
    if status == "NOTFOUND":
        return Reply.NOTFOUND
    return {"TEMP": Reply.TEMP, "TIMEOUT": Reply.TIMEOUT, "PERM": Reply.PERM}.get(status, Reply.WRONG)


def classify_policy(key: str, text: str) -> Reply:
    action = text.removeprefix("action=").removesuffix("\n\n")
    if not text.startswith("action=") or "\n" in action:
        return Reply.WRONG
    if action == ERROR_ACTION:
        return Reply.ERROR_ACTION
    if action == "DUNNO":
        return Reply.NOTFOUND
    return Reply.RIGHT if action == right_action(key) else Reply.WRONG


def policy_request(key: str, index: int, i: int) -> bytes:
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "sender": f"sender{i}@example.org",
        "recipient": key,
        "client_address": "127.0.0.1",
        "instance": f"{index}.{i}",
    }
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


class Run:
    """The client side of a run: lookups done so far and their replies."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.lookups: list[Lookup] = []
        self.started = trio.current_time()

    async def lookup(
        self,
        stream: trio.abc.Stream | None,
        protocol: str,
        target: Target,
        name: str,
        key: str,
        request: bytes,
    ) -> trio.abc.Stream | None:
        """One lookup on ``stream`` (connecting to listener ``name`` if None); returns the stream to keep."""
        began = trio.current_time()
        text: str | None = None
        reply = Reply.HANG
        try:
            if stream is None:
                address = self.daemon.address("socket_map") if protocol == "socketmap" else None
                stream = await connect(address or listener_address(self.daemon, name))
            with trio.move_on_after(HANG_LIMIT):
                await stream.send_all(request)
                text = await (
                    read_netstring(stream) if protocol == "socketmap" else read_policy_reply(stream)
                )
        except (EOFError, trio.BrokenResourceError, OSError):
            reply = Reply.EOF
        if text is not None:
            reply = (classify_socketmap if protocol == "socketmap" else classify_policy)(key, text)
        now = trio.current_time()
        self.lookups.append(
            Lookup(protocol, target, key, reply, text or "", round(began - self.started, 3), now - began)
        )
        if text is None and stream is not None:
            await stream.aclose()
            return None
        return stream

    async def socketmap_client(self, index: int, count: int = LOOKUPS_PER_CLIENT) -> None:
        rng = random.Random(f"{SEED}/socketmap-client/{index}")
        stream: trio.abc.Stream | None = None
        for i in range(count):
            target = _pick(rng)
            key = f"s{index}-{i}@{target.value}.fault.test"
            request = netstring(f"{target.value} {key}".encode())
            stream = await self.lookup(stream, "socketmap", target, "", key, request)
        if stream is not None:
            await stream.aclose()

    async def policy_client(self, index: int, count: int = LOOKUPS_PER_CLIENT) -> None:
        rng = random.Random(f"{SEED}/policy-client/{index}")
        streams: dict[Target, trio.abc.Stream | None] = {}
        for i in range(count):
            target = _pick(rng)
            key = f"p{index}-{i}@{target.value}.fault.test"
            request = policy_request(key, index, i)
            streams[target] = await self.lookup(
                streams.get(target), "policy", target, f"p_{target.value}", key, request
            )
        for stream in streams.values():
            if stream is not None:
                await stream.aclose()


def _pick(rng: random.Random) -> Target:
    targets = list(TARGET_WEIGHTS)
    return rng.choices(targets, weights=[TARGET_WEIGHTS[t] for t in targets])[0]


def fault_label(lookup: Lookup, records: list[Fault] | None) -> str:
    if records is None:
        return lookup.target.value.replace("_", "-")
    if not records:
        return "unreached (restart)"
    return "+".join(sorted({f.value for f in records}))


def judge(lookup: Lookup, records: list[Fault] | None) -> tuple[bool, bool]:
    """(the invariant holds, the contract row holds) for one lookup, given what the backend did."""
    socketmap = lookup.protocol == "socketmap"
    faults = [Fault.RESTART] if not records else [f for f in records if not f.is_answer]
    allowed: set[Reply] = set()
    contract: set[Reply] = set()
    for fault in faults:
        allowed |= FAULT_REPLIES[lookup.protocol]
        contract |= CONTRACT_STATUS.get(fault, OTHER_FAULT_STATUS) if socketmap else {Reply.ERROR_ACTION}
    answers = {Fault.ANSWER: Reply.RIGHT, Fault.NOT_FOUND: Reply.NOTFOUND, Fault.UNSOLICITED: Reply.RIGHT}
    for fault, reply in answers.items():
        if records and fault in records:
            allowed.add(reply)
            contract.add(reply)
    late = lookup.took >= DAEMON_TIMEOUT
    if late:  # an answer that came after the daemon's deadline: the timeout row
        timed_out = Reply.TIMEOUT if socketmap else Reply.ERROR_ACTION
        allowed.add(timed_out)
        contract.add(timed_out)
    elif lookup.reply is Reply.TIMEOUT:
        return False, False  # a TIMEOUT before the deadline passed cannot be right
    return lookup.reply in allowed, lookup.reply in contract


def tally_table(tally: Counter[tuple[str, Reply]]) -> str:
    columns = [r for r in Reply if any(reply is r for _, reply in tally)]
    rows = sorted({label for label, _ in tally})
    width = max(len(r) for r in rows) + 2
    lines = ["backend did".ljust(width) + "".join(c.value.rjust(13) for c in columns) + "total".rjust(8)]
    for row in rows:
        counts = [tally[(row, c)] for c in columns]
        lines.append(row.ljust(width) + "".join(str(n).rjust(13) for n in counts) + str(sum(counts)).rjust(8))
    return "\n".join(lines)


def first(items: Iterable[str], n: int = 15) -> str:
    return "\n  ".join(list(items)[:n])
