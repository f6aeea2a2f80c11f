"""What tests/faultserver.py does for each fault, down to the byte: canned responses (right answers,
not-found, 5xx/429, invalid or empty JSON, gzip bombs and truncated gzip, garbage and lenient status lines,
bogus interim responses) and live behaviours (a delay past the deadline, resets before or in the middle of a
body, a body past the cap, a slow drip, an unsolicited second response). ``ACTIONS_BY_FAULT`` maps each
:class:`Fault` to its behaviour; each returns whether the connection stays open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import orjson
import trio

from tests.faultplan import (
    BODY_CAP,
    DAEMON_TIMEOUT,
    GARBAGE_STATUS_LINES,
    LENIENT_STATUS_LINES,
    STREAM_PIECE,
    Bait,
    Fault,
    Plan,
    chunked,
    document,
    gzip_member,
    head,
    right_action,
    right_value,
)

if TYPE_CHECKING:
    from tests.faultserver import FaultConnection, FaultServer

Action = Callable[["FaultServer", "FaultConnection", Plan, bool, str], Awaitable[bool]]


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


async def _send_canned(
    server: FaultServer, conn: FaultConnection, plan: Plan, policy: bool, key: str
) -> bool:
    flavours = _CANNED[plan.fault](server, plan, policy, key)
    name, data, keep = flavours[plan.variant % len(flavours)]
    server.note(key, plan.fault, name)
    await conn.send(data)
    if not keep:
        await trio.sleep(0.01)  # a close right behind the bytes could turn into a reset that eats them
    return keep


async def _delay(server: FaultServer, conn: FaultConnection, plan: Plan, policy: bool, key: str) -> bool:
    server.note(key, Fault.DELAY, "late-answer")
    await trio.sleep(2 * DAEMON_TIMEOUT + plan.fraction * DAEMON_TIMEOUT)
    await conn.send(_framed(200, _right_body(policy, key)))
    return True  # should the daemon reuse this connection, the late answer would meet the next request


async def _reset_before(
    server: FaultServer, conn: FaultConnection, plan: Plan, policy: bool, key: str
) -> bool:
    name = ("rst", "fin", "partial-status-line-rst")[plan.variant % 3]
    server.note(key, Fault.RESET_BEFORE, name)
    if name == "fin":
        conn.sock.close()
        return False
    if name == "partial-status-line-rst":
        await conn.send(b"HTTP/1.1 2")
    conn.reset()
    return False


async def _reset_mid_body(
    server: FaultServer, conn: FaultConnection, plan: Plan, policy: bool, key: str
) -> bool:
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


async def _huge(server: FaultServer, conn: FaultConnection, plan: Plan, policy: bool, key: str) -> bool:
    # The document starts right and never ends inside the cap: only the cap (or the deadline) can stop it.
    framing = ("content-length", "chunked", "close")[plan.variant % 3]
    server.note(key, Fault.HUGE_BODY, framing)
    pieces = BODY_CAP // STREAM_PIECE + 1
    fields: dict[str, str | int] = {"Content-Length": pieces * STREAM_PIECE}
    if framing != "content-length":
        fields = {"Transfer-Encoding": "chunked"} if framing == "chunked" else {"Connection": "close"}
    prefix = _bait_body(plan, policy, key)[:-1] + b',"pad":"'
    pad = b"a" * STREAM_PIECE
    await conn.send(head(200, fields))
    for i in range(pieces):
        piece = prefix + pad[len(prefix) :] if i == 0 else pad
        await conn.send(chunked([piece], last=False) if framing == "chunked" else piece)
    if framing == "chunked":
        await conn.send(b"0\r\n\r\n")
    return False


async def _slow_drip(server: FaultServer, conn: FaultConnection, plan: Plan, policy: bool, key: str) -> bool:
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


async def _unsolicited(
    server: FaultServer, conn: FaultConnection, plan: Plan, policy: bool, key: str
) -> bool:
    # The right answer; a moment later (the daemon has put the connection back in its pool by then) a second
    # response nobody asked for, carrying the bait. The next request on this connection must not get it.
    server.note(key, Fault.UNSOLICITED, plan.bait.value)
    await conn.send(_framed(200, _right_body(policy, key)))
    await trio.sleep(0.05)
    await conn.send(_framed(404 if plan.bait is Bait.ABSENT else 200, _bait_body(plan, policy, key)))
    return True


ACTIONS_BY_FAULT: Mapping[Fault, Action] = {
    **{fault: _send_canned for fault in _CANNED},
    Fault.DELAY: _delay,
    Fault.RESET_BEFORE: _reset_before,
    Fault.RESET_MID_BODY: _reset_mid_body,
    Fault.HUGE_BODY: _huge,
    Fault.SLOW_DRIP: _slow_drip,
    Fault.UNSOLICITED: _unsolicited,
}
