"""A misbehaving HTTP/1.1 backend on 127.0.0.1, written on raw trio sockets, for tests/test_faults.py.

For every request the server reads the lookup key from the JSON body (``key`` for a socket map,
``recipient`` for a policy request) and draws a :class:`Plan` from a RNG seeded with ``seed/key``: the same key
always meets the same fault, so a failure is reproducible from the seed and the key alone. Then it does what
the plan says, down to the byte: a correct answer, a correct not-found, a delay past the daemon's deadline, a
reset before or in the middle of the response, 5xx, 429, invalid or empty JSON, a body over the client's cap,
a slow drip, a gzip bomb, a truncated gzip body, or a garbage status line. ``records`` says, per key, what the
server actually did (``RESTART`` is added when :meth:`FaultServer.restart` killed the request half-way), so
the suite can judge every reply the daemon gave against it.

The answers are derived from the key (:func:`right_value`, :func:`right_action`), so an answer meant for
another request, or a value a fault smuggled in, is told apart from the right one. Fault bodies carry bait:
the right value, no value, or a wrong one, so that a daemon that ignored the fault would show it.

With ``ssl_context`` the server speaks TLS first; with ``tls_garbage`` it answers a TLS client hello with
plain-text bytes. Connection-level counts (``accepted``, ``handshake_failures``) tell what the TLS targets saw.

Three more faults have weight 0 in DEFAULT_WEIGHTS because the daemon gets them wrong today; the xfail tests
of tests/test_faults.py plan them alone: an unsolicited extra response on a keep-alive connection, a status
line llhttp accepts although it is not HTTP/1.x, and a 0xx "interim" response with a body.
"""

from __future__ import annotations

import enum
import hashlib
import random
import socket
import ssl
import struct
import zlib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import orjson
import trio

from pfxhttp.config import DEFAULT_MAX_RESPONSE_BODY_SIZE

# The default of server.http_client.max_response_body_size: the suite's config leaves the key out, and checks
# that the daemon's client uses this value, which the huge bodies are sized on.
BODY_CAP = DEFAULT_MAX_RESPONSE_BODY_SIZE
DAEMON_TIMEOUT = 0.3  # the http_client.timeout the suite configures: a DELAY or SLOW_DRIP outlasts it
DRIP_STEP = 0.03  # seconds between dripped bytes: even the shortest drip takes well over DAEMON_TIMEOUT
_LOOP_BOUND = 100_000  # every loop here is bounded
_MAX_HEAD = 65536
_STREAM_PIECE = 1024 * 1024
_WINDOW_GZIP = 16 + zlib.MAX_WBITS  # zlib's selector for the gzip container (RFC 1952)


class Fault(enum.Enum):
    """What the server did with one request."""

    ANSWER = "answer"  # 200 and the right value
    NOT_FOUND = "not-found"  # 200 with the value absent or null, or a 404
    DELAY = "delay"  # the right answer, sent after the daemon's deadline
    RESET_BEFORE = "reset-before-response"
    RESET_MID_BODY = "reset-mid-body"
    STATUS_5XX = "5xx"
    STATUS_429 = "429"
    INVALID_JSON = "invalid-json"
    EMPTY_BODY = "empty-body"
    HUGE_BODY = "huge-body"  # over BODY_CAP
    SLOW_DRIP = "slow-drip"  # bytes trickle until the deadline
    GZIP_BOMB = "gzip-bomb"  # a small gzip body that inflates far past BODY_CAP
    GZIP_TRUNCATED = "gzip-truncated"
    GARBAGE_STATUS = "garbage-status"
    RESTART = "restart"  # never planned: the request was cut short by a backend restart
    # Weight 0 in DEFAULT_WEIGHTS: the daemon gets these wrong today (tests/test_faults.py, xfail tests).
    UNSOLICITED = "unsolicited-response"  # the right answer, then an extra response nobody asked for
    LENIENT_STATUS = "lenient-status-line"  # a status line llhttp accepts although it is not HTTP/1.x
    BOGUS_INTERIM = "bogus-interim"  # a 0xx "interim" response with a body, then a 200 with none

    @property
    def is_answer(self) -> bool:
        """True where the request itself got a well-formed answer the daemon must pass on as it is."""
        return self in (Fault.ANSWER, Fault.NOT_FOUND, Fault.UNSOLICITED)


class Bait(enum.Enum):
    """What a fault's body carries, so that a daemon ignoring the fault would give itself away."""

    RIGHT = "right"
    ABSENT = "absent"
    WRONG = "wrong"


# Relative weights. The expensive faults (huge bodies, bombs: the daemon reads or inflates past the cap) are rare;
# the slow ones (delay, drip: a client waits the whole deadline) are few enough to keep the run short.
DEFAULT_WEIGHTS: Mapping[Fault, float] = {
    Fault.ANSWER: 36,
    Fault.NOT_FOUND: 12,
    Fault.DELAY: 3,
    Fault.RESET_BEFORE: 6,
    Fault.RESET_MID_BODY: 6,
    Fault.STATUS_5XX: 5,
    Fault.STATUS_429: 3,
    Fault.INVALID_JSON: 6,
    Fault.EMPTY_BODY: 4,
    Fault.HUGE_BODY: 0.5,
    Fault.SLOW_DRIP: 3,
    Fault.GZIP_BOMB: 0.5,
    Fault.GZIP_TRUNCATED: 5,
    Fault.GARBAGE_STATUS: 6,
}

# Status lines llhttp refuses (checked one by one): each must end in "invalid HTTP response", never an answer.
GARBAGE_STATUS_LINES = (
    b"HTTP/1.1 2OO OK\r\n",  # letter O for zero
    b"HTTX/1.1 200 OK\r\n",
    b"200 OK\r\n",
    b"HTTP/1.1 -200 OK\r\n",
    b"HTTP/1.1 20000 OK\r\n",
    b"HTTP/1.1 200OK\r\n",
    b"HTTP/9.9 200 OK\r\n",
    b"HTTP/1.1 200 OK\n",  # bare LF
    b"\x16\x03\x03\x00\x02\x02\x28\r\n",  # a TLS alert record where HTTP was expected
    b"",  # no status line at all: the JSON document straight away (HTTP/0.9 style)
    b"HTTP/1.1 000 Zero\r\n",  # llhttp takes 0xx for an interim response: the final one never comes
    b"HTTP/1.1 099 Interim\r\n",
)
# Status lines llhttp accepts (its response parser also speaks RTSP and ICE, and lets a NUL pass in the
# reason phrase), so the daemon takes them for HTTP; not valid HTTP/1.1 (RFC 9112 section 4).
LENIENT_STATUS_LINES = (
    b"RTSP/1.0 404 Not Found\r\n",
    b"ICE/1.0 404 Not Found\r\n",
    b"HTTP/1.1 404 Not\x00Found\r\n",
    b"RTSP/1.0 200 OK\r\n",
)


@dataclass(frozen=True)
class Plan:
    """The server's decision for one key: the fault, its flavour, the bait and a fraction for cuts/delays."""

    fault: Fault
    variant: int
    bait: Bait
    fraction: float


def plan_for(seed: int, key: str, weights: Mapping[Fault, float] = DEFAULT_WEIGHTS) -> Plan:
    """The decision for ``key``; a pure function of ``seed`` and ``key`` (``random.Random`` hashes strings
    with SHA-512, never with the per-process string hash)."""
    rng = random.Random(f"{seed}/{key}")
    kinds = list(weights)
    fault = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
    return Plan(fault, rng.randrange(1 << 16), rng.choice(list(Bait)), rng.random())


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def right_value(key: str) -> str:
    """The socket map value the backend means for ``key``."""
    return f"mbox-{_digest(key)}/{key}"


_ACTIONS = ("REJECT 5.7.1 fault-test {}", "554 5.7.1 fault-test {}", "PREPEND X-Fault-Test: {}", "WARN {}")


def right_action(key: str) -> str:
    """The policy action the backend means for ``key`` (a REJECT among them: a fault must never yield one)."""
    return _ACTIONS[int(_digest(key), 16) % len(_ACTIONS)].format(key)


def document(policy: bool, value: str | None) -> bytes:
    """The JSON body for value_field ``data.result`` (maps) or ``policy.result`` (policy); None: absent."""
    inner: dict[str, object] = {} if value is None else {"result": value}
    return orjson.dumps({"policy" if policy else "data": inner})


def gzip_member(data: bytes, level: int = 6) -> bytes:
    """``data`` as one gzip member; members may be concatenated (RFC 1952 section 2.2)."""
    encoder = zlib.compressobj(level, zlib.DEFLATED, _WINDOW_GZIP)
    return encoder.compress(data) + encoder.flush()


def head(status: int, headers: Mapping[str, str | int] | None = None, reason: str = "X") -> bytes:
    lines = [f"HTTP/1.1 {status:03d} {reason}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(pieces: list[bytes], *, last: bool = True) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return out + (b"0\r\n\r\n" if last else b"")


class _Conn:
    """One accepted connection; ``sock`` is the TCP socket under a TLS stream too (for resets)."""

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType) -> None:
        self.stream = stream
        self.sock = sock
        self.buf = bytearray()

    async def read_request(self) -> tuple[str, bytes] | None:
        """(request-target, body) of the next request; None when the client closed at a boundary."""
        for _ in range(_LOOP_BOUND):
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buf) > _MAX_HEAD or not await self._fill():
                return None
        else:
            return None
        head_text = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[: end + 4]
        target = head_text.split(" ", 2)[1]
        length = 0
        for line in head_text.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        for _ in range(_LOOP_BOUND):
            if len(self.buf) >= length or not await self._fill():
                break
        if len(self.buf) < length:
            return None
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return target, body

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buf += data
        return bool(data)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def drip(self, data: bytes, step: int = 1) -> None:
        for i in range(0, len(data), step):
            await self.stream.send_all(data[i : i + step])
            await trio.sleep(DRIP_STEP)

    async def wait_eof(self, limit: float = 3.0) -> None:
        with trio.move_on_after(limit):
            for _ in range(_LOOP_BOUND):
                if not await self.stream.receive_some(65536):
                    return

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
        if self.sock.fileno() >= 0:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


Action = Callable[["FaultServer", _Conn, Plan, bool, str], Awaitable[bool]]


@dataclass(eq=False)
class FaultServer:
    """The fault backend. ``await nursery.start(server.serve)`` returns the port; ``restart`` bounces it."""

    seed: int
    weights: Mapping[Fault, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    ssl_context: ssl.SSLContext | None = None
    tls_garbage: bool = False  # answer every connection with plain-text bytes (for an https:// target)
    port: int = 0
    records: defaultdict[str, list[Fault]] = field(default_factory=lambda: defaultdict(list))
    variants: Counter[tuple[Fault, str]] = field(default_factory=Counter)
    details: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    accepted: int = 0
    handshake_failures: int = 0
    restarts: int = 0
    _scope: trio.CancelScope | None = None
    _up: trio.Event = field(default_factory=trio.Event)
    _bomb: bytes = b""
    _downtime: float = 0.0

    def url(self, path: str) -> str:
        return f"{'https' if self.ssl_context or self.tls_garbage else 'http'}://127.0.0.1:{self.port}{path}"

    def _bind(self) -> trio.socket.SocketType:
        sock = trio.socket.socket()
        # Re-binding the same port right after a restart: the old connections were reset, but be safe.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; after ``restart`` the same port is bound again (at most 1000 times)."""
        if not self._bomb and self.weights.get(Fault.GZIP_BOMB):
            # Built before serving: compressing 17 MiB inside the run would stall every task for ~0.1 s.
            self._bomb = await trio.to_thread.run_sync(gzip_member, b"a" * (BODY_CAP + _STREAM_PIECE), 9)
        for generation in range(1000):
            listener = self._bind()
            await listener.bind(("127.0.0.1", self.port))
            listener.listen(256)
            self.port = listener.getsockname()[1]
            try:
                with trio.CancelScope() as self._scope:
                    async with trio.open_nursery() as conns:
                        if generation == 0:
                            task_status.started(self.port)
                        self._up.set()
                        for _ in range(10_000_000):
                            sock, _addr = await listener.accept()
                            self.accepted += 1
                            conns.start_soon(self._handle, sock)
            finally:
                listener.close()
            await trio.sleep(self._downtime)

    async def restart(self, downtime: float) -> None:
        """Close the listener, reset every open connection, stay down ``downtime`` s, listen again."""
        assert self._scope is not None, "not serving"
        self._up = trio.Event()
        self._downtime = downtime
        self.restarts += 1
        self._scope.cancel()
        await self._up.wait()

    async def _handle(self, raw: trio.socket.SocketType) -> None:
        stream: trio.abc.Stream = trio.SocketStream(raw)
        conn = _Conn(stream, raw)
        cancelled = False
        last_key: str | None = None
        try:
            if self.tls_garbage:
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await conn.wait_eof()
                return
            if self.ssl_context is not None:
                conn.stream = trio.SSLStream(
                    stream, self.ssl_context, server_side=True, https_compatible=True
                )
                try:
                    await conn.stream.do_handshake()
                except trio.BrokenResourceError:
                    self.handshake_failures += 1
                    return
            for _ in range(_LOOP_BOUND):
                request = await conn.read_request()
                if request is None:
                    return
                target, body = request
                policy = target.startswith("/policy")
                attrs = orjson.loads(body)
                key = str(attrs["recipient"] if policy else attrs["key"])
                plan = plan_for(self.seed, key, self.weights)
                self.records[key].append(plan.fault)
                last_key = key
                keep = await _ACTIONS_BY_FAULT[plan.fault](self, conn, plan, policy, key)
                if not keep:
                    return
        except trio.Cancelled:
            # A restart: the reset may also discard an answer the daemon has not read yet, so the last
            # request on this connection is marked too, whether or not its answer went out whole.
            if last_key is not None:
                self.records[last_key].append(Fault.RESTART)
            cancelled = True
            raise
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the daemon went away: its deadline, its body cap, or a closed pool connection
        finally:
            if cancelled:
                conn.reset()  # a restart kills connections the hard way
            else:
                raw.close()

    def note(self, key: str, fault: Fault, variant: str) -> None:
        """Count the flavour of ``fault`` served, and keep it per key for the suite's messages."""
        self.variants[(fault, variant)] += 1
        self.details[key].append(f"{fault.value}/{variant}")

    @property
    def bomb(self) -> bytes:
        """A gzip member of BODY_CAP + 1 MiB of ``a`` (about 17 KiB coded); built by ``serve``."""
        return self._bomb


def _bait_body(plan: Plan, policy: bool, key: str) -> bytes:
    if plan.bait is Bait.RIGHT:
        return _right_body(policy, key)
    return document(policy, None if plan.bait is Bait.ABSENT else ("OK" if policy else f"wrong-{key}"))


def _right_body(policy: bool, key: str) -> bytes:
    return document(policy, right_action(key) if policy else right_value(key))


def _framed(status: int, body: bytes, **fields: str | int) -> bytes:
    return head(status, {"Content-Length": len(body), **fields}) + body


# Canned responses: per fault, its flavours as (name, bytes, keep the connection open). Built per request;
# the one the plan's variant picks is sent whole.
Canned = list[tuple[str, bytes, bool]]


def _canned_answer(server: FaultServer, plan: Plan, policy: bool, key: str) -> Canned:
    body = _right_body(policy, key)
    coded = gzip_member(body)
    return [
        ("content-length", _framed(200, body), True),
        ("chunked", head(200, {"Transfer-Encoding": "chunked"}) + chunked([body[:7], body[7:]]), True),
        ("gzip", head(200, {"Content-Encoding": "gzip", "Content-Length": len(coded)}) + coded, True),
        ("until-close", head(200, {"Connection": "close"}) + body, False),
        ("interim-100", b"HTTP/1.1 100 Continue\r\n\r\n" + _framed(200, body), True),
    ]


def _canned_not_found(server: FaultServer, plan: Plan, policy: bool, key: str) -> Canned:
    null = orjson.dumps({"policy" if policy else "data": {"result": None}})
    return [
        ("value-absent", _framed(200, document(policy, None)), True),
        ("value-null", _framed(200, null), True),
        ("status-404", _framed(404, b'{"error":"not-found"}'), True),
    ]


def _canned_status(server: FaultServer, plan: Plan, policy: bool, key: str) -> Canned:
    statuses = (429,) if plan.fault is Fault.STATUS_429 else (500, 502, 503, 504)
    body = _bait_body(plan, policy, key)
    return [(f"{s}-{plan.bait.value}", _framed(s, body, **{"Retry-After": 1}), True) for s in statuses]


def _canned_invalid_json(server: FaultServer, plan: Plan, policy: bool, key: str) -> Canned:
    good = _right_body(policy, key)
    bodies = {
        "truncated": good[:-2],
        "html": b"<html><body>" + good + b"</body></html>",
        "trailing-garbage": good + b"}garbage",
        "two-documents": good + b" " + document(policy, None),
        "single-quotes": good.replace(b'"', b"'"),
        "nan": good[:-2] + b',"x":NaN}}',
        "bad-utf8": good[:-2] + b'"\xff\xfe"}}',
    }
    return [
        (name, _framed(200, body, **{"Content-Type": "application/json"}), True)
        for name, body in bodies.items()
    ]


def _canned_empty(server: FaultServer, plan: Plan, policy: bool, key: str) -> Canned:
    return [
        ("content-length-0", head(200, {"Content-Length": 0}), True),
        ("chunked-empty", head(200, {"Transfer-Encoding": "chunked"}) + chunked([]), True),
        ("close-delimited-empty", head(200, {"Connection": "close"}), False),
        ("204", head(204), True),
    ]


def _canned_gzip_bomb(server: FaultServer, plan: Plan, policy: bool, key: str) -> Canned:
    # Three gzip members: a right-looking start, 17 MiB of padding (17 KiB coded), the end of the document.
    coded = gzip_member(_bait_body(plan, policy, key)[:-1] + b',"pad":"') + server.bomb + gzip_member(b'"}')
    pieces = [coded[i : i + 4096] for i in range(0, len(coded), 4096)]
    return [
        ("content-length", _framed(200, coded, **{"Content-Encoding": "gzip"}), True),
        (
            "chunked",
            head(200, {"Content-Encoding": "gzip", "Transfer-Encoding": "chunked"}) + chunked(pieces),
            True,
        ),
    ]


def _canned_gzip_truncated(server: FaultServer, plan: Plan, policy: bool, key: str) -> Canned:
    coded = gzip_member(_right_body(policy, key))
    mid = coded[: 10 + int(plan.fraction * (len(coded) - 19))]  # cut inside the deflate data
    # The whole document inflates; only the CRC32 / ISIZE trailer (RFC 1952 section 2.3) is missing.
    no_size, no_trailer = coded[:-4], coded[:-8]
    close = {"Content-Encoding": "gzip", "Connection": "close"}
    return [
        ("mid-stream-length", _framed(200, mid, **{"Content-Encoding": "gzip"}), True),
        ("mid-stream-close", head(200, close) + mid, False),
        ("trailer-4-length", _framed(200, no_size, **{"Content-Encoding": "gzip"}), True),
        ("trailer-8-close", head(200, close) + no_trailer, False),
    ]


def _status_lines(lines: tuple[bytes, ...]) -> Callable[[FaultServer, Plan, bool, str], Canned]:
    def canned(server: FaultServer, plan: Plan, policy: bool, key: str) -> Canned:
        body = _bait_body(plan, policy, key) if lines is LENIENT_STATUS_LINES else _right_body(policy, key)
        return [
            (
                f"line-{i}",
                line + f"Content-Length: {len(body)}\r\n\r\n".encode() + body if line else body + b"\r\n",
                False,
            )
            for i, line in enumerate(lines)
        ]

    return canned


def _canned_bogus_interim(server: FaultServer, plan: Plan, policy: bool, key: str) -> Canned:
    # Status codes run from 100 to 599 (RFC 9110 section 15); llhttp reads a body after a 0xx status line as
    # after any final one. The body is the bait; the 200 that follows has none of its own.
    body = _bait_body(plan, policy, key)
    final = head(200, {"Content-Length": 0})
    return [
        (f"{code:03d}-{plan.bait.value}", head(code, {"Content-Length": len(body)}) + body + final, True)
        for code in (0, 50, 99)
    ]


_CANNED: Mapping[Fault, Callable[[FaultServer, Plan, bool, str], Canned]] = {
    Fault.ANSWER: _canned_answer,
    Fault.NOT_FOUND: _canned_not_found,
    Fault.STATUS_5XX: _canned_status,
    Fault.STATUS_429: _canned_status,
    Fault.INVALID_JSON: _canned_invalid_json,
    Fault.EMPTY_BODY: _canned_empty,
    Fault.GZIP_BOMB: _canned_gzip_bomb,
    Fault.GZIP_TRUNCATED: _canned_gzip_truncated,
    Fault.GARBAGE_STATUS: _status_lines(GARBAGE_STATUS_LINES),
    Fault.LENIENT_STATUS: _status_lines(LENIENT_STATUS_LINES),
    Fault.BOGUS_INTERIM: _canned_bogus_interim,
}


async def _send_canned(server: FaultServer, conn: _Conn, plan: Plan, policy: bool, key: str) -> bool:
    flavours = _CANNED[plan.fault](server, plan, policy, key)
    name, data, keep = flavours[plan.variant % len(flavours)]
    server.note(key, plan.fault, name)
    await conn.send(data)
    if not keep:
        await trio.sleep(0.01)  # a close right behind the bytes could turn into a reset that eats them
    return keep


async def _delay(server: FaultServer, conn: _Conn, plan: Plan, policy: bool, key: str) -> bool:
    server.note(key, Fault.DELAY, "late-answer")
    await trio.sleep(2 * DAEMON_TIMEOUT + plan.fraction * DAEMON_TIMEOUT)
    await conn.send(_framed(200, _right_body(policy, key)))
    return True  # should the daemon reuse this connection, the late answer would meet the next request


async def _reset_before(server: FaultServer, conn: _Conn, plan: Plan, policy: bool, key: str) -> bool:
    name = ("rst", "fin", "partial-status-line-rst")[plan.variant % 3]
    server.note(key, Fault.RESET_BEFORE, name)
    if name == "fin":
        conn.sock.close()
        return False
    if name == "partial-status-line-rst":
        await conn.send(b"HTTP/1.1 2")
    conn.reset()
    return False


async def _reset_mid_body(server: FaultServer, conn: _Conn, plan: Plan, policy: bool, key: str) -> bool:
    body = _right_body(policy, key)
    cut = 1 + int(plan.fraction * (len(body) - 2))
    how, framing = ("rst", "fin")[plan.variant % 2], ("length", "chunked")[plan.variant // 2 % 2]
    server.note(key, Fault.RESET_MID_BODY, f"{how}-{framing}")
    if framing == "length":
        await conn.send(head(200, {"Content-Length": len(body)}) + body[:cut])
    else:
        await conn.send(head(200, {"Transfer-Encoding": "chunked"}) + chunked([body[:cut]], last=False))
    await trio.sleep(0.01)  # let the first part reach the daemon before the connection dies
    if how == "rst":
        conn.reset()
    else:
        conn.sock.close()
    return False


async def _huge(server: FaultServer, conn: _Conn, plan: Plan, policy: bool, key: str) -> bool:
    # The document starts right and never ends inside the cap: only the cap (or the deadline) can stop it.
    framing = ("content-length", "chunked", "close")[plan.variant % 3]
    server.note(key, Fault.HUGE_BODY, framing)
    pieces = BODY_CAP // _STREAM_PIECE + 1
    fields: dict[str, str | int] = {"Content-Length": pieces * _STREAM_PIECE}
    if framing != "content-length":
        fields = {"Transfer-Encoding": "chunked"} if framing == "chunked" else {"Connection": "close"}
    prefix = _bait_body(plan, policy, key)[:-1] + b',"pad":"'
    pad = b"a" * _STREAM_PIECE
    await conn.send(head(200, fields))
    for i in range(pieces):
        piece = prefix + pad[len(prefix) :] if i == 0 else pad
        await conn.send(chunked([piece], last=False) if framing == "chunked" else piece)
    if framing == "chunked":
        await conn.send(b"0\r\n\r\n")
    return False


async def _slow_drip(server: FaultServer, conn: _Conn, plan: Plan, policy: bool, key: str) -> bool:
    body = _right_body(policy, key)
    name = ("whole-response", "body-only", "chunk-per-byte")[plan.variant % 3]
    server.note(key, Fault.SLOW_DRIP, name)
    if name == "whole-response":
        await conn.drip(_framed(200, body))
    elif name == "body-only":
        await conn.send(head(200, {"Content-Length": len(body)}))
        await conn.drip(body)
    else:
        await conn.send(head(200, {"Transfer-Encoding": "chunked"}))
        await conn.drip(chunked([bytes([b]) for b in body]), step=4)
    return False


async def _unsolicited(server: FaultServer, conn: _Conn, plan: Plan, policy: bool, key: str) -> bool:
    # The right answer; a moment later (the daemon has put the connection back in its pool by then) a second
    # response nobody asked for, carrying the bait. The next request on this connection must not get it.
    server.note(key, Fault.UNSOLICITED, plan.bait.value)
    await conn.send(_framed(200, _right_body(policy, key)))
    await trio.sleep(0.05)
    await conn.send(_framed(404 if plan.bait is Bait.ABSENT else 200, _bait_body(plan, policy, key)))
    return True


_ACTIONS_BY_FAULT: Mapping[Fault, Action] = {
    **{fault: _send_canned for fault in _CANNED},
    Fault.DELAY: _delay,
    Fault.RESET_BEFORE: _reset_before,
    Fault.RESET_MID_BODY: _reset_mid_body,
    Fault.HUGE_BODY: _huge,
    Fault.SLOW_DRIP: _slow_drip,
    Fault.UNSOLICITED: _unsolicited,
}
