"""The fault vocabulary of tests/faultserver.py, and what is right: the faults and their baits, the plan a
seeded RNG draws per key (:func:`plan_for`), the answers derived from the key (:func:`right_value`,
:func:`right_action`) and the HTTP/1.1 wire pieces (:func:`head`, :func:`chunked`, :func:`gzip_member`) the
server's behaviours are built from. tests/test_faults.py judges every reply against these.
"""

from __future__ import annotations

import enum
import hashlib
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from pfxhttp.config import DEFAULT_MAX_RESPONSE_BODY_SIZE

# The default of server.http_client.max_response_body_size: the suite's config leaves the key out, and checks
# that the daemon's client uses this value, which the huge bodies are sized on.
BODY_CAP = DEFAULT_MAX_RESPONSE_BODY_SIZE
DAEMON_TIMEOUT = 0.3  # the http_client.timeout the suite configures: a DELAY or SLOW_DRIP outlasts it
DRIP_STEP = 0.03  # seconds between dripped bytes: even the shortest drip takes well over DAEMON_TIMEOUT
LOOP_BOUND = 100_000  # every loop here is bounded
MAX_HEAD = 65536
STREAM_PIECE = 1024 * 1024
WINDOW_GZIP = 16 + zlib.MAX_WBITS  # zlib's selector for the gzip container (RFC 1952)


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
    encoder = zlib.compressobj(level, zlib.DEFLATED, WINDOW_GZIP)
    return encoder.compress(data) + encoder.flush()


def head(status: int, headers: Mapping[str, str | int] | None = None, reason: str = "X") -> bytes:
    lines = [f"HTTP/1.1 {status:03d} {reason}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(pieces: list[bytes], *, last: bool = True) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return out + (b"0\r\n\r\n" if last else b"")
