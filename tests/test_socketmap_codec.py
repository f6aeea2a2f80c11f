"""Socketmap request and reply payloads (socketmap_table(5)): parsing, encoding, limits, round-trips."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pfxhttp.errors import ProtocolError, ReplyError, SocketmapError
from pfxhttp.protocol.netstring import NetstringDecoder, encode
from pfxhttp.protocol.socketmap import (
    DEFAULT_MAX_REPLY_SIZE,
    MAX_REASON_LENGTH,
    SocketmapReply,
    SocketmapRequest,
    SocketmapStatus,
    parse_reply,
    sanitize_reason,
)
from tests.feeding import HOSTILE_CHARS, SETTINGS


def unframe(framed: bytes) -> bytes:
    """The single payload of a netstring, through the real decoder (with room for big replies)."""
    decoder = NetstringDecoder(max_length=10 * DEFAULT_MAX_REPLY_SIZE)
    decoder.feed(framed)
    payload = decoder.next()
    assert payload is not None
    assert decoder.at_boundary
    return payload


# --- requests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "name", "key"),
    [
        (b"virtual john@example.com", "virtual", "john@example.com"),
        (b"map ", "map", ""),  # empty key is legal
        (b"map  two", "map", " two"),  # split at the FIRST space only
        (b'virtual "john doe"@example.com', "virtual", '"john doe"@example.com'),
        (b"clients 2001:db8::1", "clients", "2001:db8::1"),
        (b"senders <>", "senders", "<>"),
        (b'senders ""', "senders", '""'),
        (b"m a\\b\\\\c", "m", "a\\b\\\\c"),
        (b"m trailing ", "m", "trailing "),
        ("m jürgen@bücher.example".encode(), "m", "jürgen@bücher.example"),
        (b"m \tx\r\n", "m", "\tx\r\n"),
    ],
)
def test_parse_request(payload: bytes, name: str, key: str) -> None:
    request = SocketmapRequest.parse(payload)
    assert request == SocketmapRequest(name, key)
    assert request.payload() == payload  # never rewritten
    assert request.encode() == encode(payload)


def test_non_utf8_key_is_kept_losslessly() -> None:
    request = SocketmapRequest.parse(b"m caf\xe9@example.com")
    assert request.key == "caf\udce9@example.com"
    assert request.payload() == b"m caf\xe9@example.com"


@pytest.mark.parametrize("payload", [b"", b"mapkey", b" key", b" ", b"  key"])
def test_parse_request_rejected(payload: bytes) -> None:
    with pytest.raises(SocketmapError):
        SocketmapRequest.parse(payload)


@pytest.mark.parametrize("name", ["", "a b", " ", "a "])
def test_request_with_unsendable_name(name: str) -> None:
    with pytest.raises(SocketmapError):
        SocketmapRequest(name, "key")


@pytest.mark.parametrize(("name", "key"), [("m\ud800", "k"), ("m", "\udfff")])
def test_request_with_unencodable_text(name: str, key: str) -> None:
    with pytest.raises(SocketmapError):
        SocketmapRequest(name, key).encode()


def test_request_encode() -> None:
    assert SocketmapRequest("m", "k").encode() == b"3:m k,"
    assert SocketmapRequest("m", "").encode() == b"2:m ,"


def test_socketmap_error_is_a_protocol_error() -> None:
    assert issubclass(SocketmapError, ProtocolError)


def test_requests_through_the_netstring_decoder_byte_by_byte() -> None:
    requests = [SocketmapRequest("virtual", f"user{i}@example.com") for i in range(50)]
    stream = b"".join(r.encode() for r in requests)
    decoder = NetstringDecoder()
    out: list[SocketmapRequest] = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        while (payload := decoder.next()) is not None:
            out.append(SocketmapRequest.parse(payload))
    assert out == requests


@SETTINGS
@given(
    name=st.binary(min_size=1, max_size=40).filter(lambda b: b" " not in b),
    key=st.binary(max_size=200),
)
def test_request_bytes_round_trip(name: bytes, key: bytes) -> None:
    payload = name + b" " + key
    request = SocketmapRequest.parse(payload)
    assert request.payload() == payload
    assert SocketmapRequest.parse(unframe(request.encode())) == request


@SETTINGS
@given(
    name=st.text(st.characters(exclude_characters=" ", codec="utf-8"), min_size=1, max_size=40),
    key=st.text(st.characters(codec="utf-8"), max_size=200),
)
def test_request_text_round_trip(name: str, key: str) -> None:
    request = SocketmapRequest(name, key)
    assert SocketmapRequest.parse(unframe(request.encode())) == request


# --- replies ----------------------------------------------------------------------------------------------


def test_status_words_are_the_exact_wire_words() -> None:
    assert [s.value for s in SocketmapStatus] == ["OK", "NOTFOUND", "TEMP", "TIMEOUT", "PERM"]


@pytest.mark.parametrize(
    ("reply", "framed"),
    [
        (SocketmapReply.ok("relay:[mx.example.com]:25"), b"28:OK relay:[mx.example.com]:25,"),
        (SocketmapReply.ok(""), b"3:OK ,"),  # the space always: a bare "OK" is "not found" to Postfix <= 3.11
        (SocketmapReply.ok("a, b , c"), b"11:OK a, b , c,"),
        (SocketmapReply.ok("ümlaut"), "10:OK ümlaut,".encode()),
        (SocketmapReply.notfound(), b"9:NOTFOUND ,"),
        (SocketmapReply.temp("backend unreachable"), b"24:TEMP backend unreachable,"),
        (SocketmapReply.timeout("backend timeout"), b"23:TIMEOUT backend timeout,"),
        (SocketmapReply.perm("unknown map"), b"16:PERM unknown map,"),
    ],
)
def test_reply_encode(reply: SocketmapReply, framed: bytes) -> None:
    assert reply.encode(DEFAULT_MAX_REPLY_SIZE) == framed
    assert reply.encode() == framed
    assert parse_reply(unframe(framed)) == reply


def test_ok_value_is_never_rewritten() -> None:
    value = ' "quoted" \\ back\tslash <> ,:; '
    assert unframe(SocketmapReply.ok(value).encode()) == b"OK " + value.encode()


def test_reply_size_boundary_ascii() -> None:
    assert DEFAULT_MAX_REPLY_SIZE == 100_000
    framed = SocketmapReply.ok("a" * 99_997).encode(100_000)
    assert framed.startswith(b"100000:OK aaa")  # a length beyond 65535, framed in full
    assert len(unframe(framed)) == 100_000
    with pytest.raises(ReplyError, match="exceeds"):
        SocketmapReply.ok("a" * 99_998).encode(100_000)


def test_reply_size_counts_utf8_bytes() -> None:
    assert len(unframe(SocketmapReply.ok("é" * 49_998).encode())) == 99_999
    with pytest.raises(ReplyError):
        SocketmapReply.ok("é" * 49_999).encode()  # 99,998 bytes of value + "OK "


def test_reply_size_custom_limit() -> None:
    assert SocketmapReply.ok("abc").encode(6) == b"6:OK abc,"
    with pytest.raises(ReplyError):
        SocketmapReply.ok("abc").encode(5)
    with pytest.raises(ReplyError):
        SocketmapReply.perm("x" * 200).encode(10)  # every status is bounded, not only OK


@pytest.mark.parametrize("value", ["a\x00b", "\x00", "caf\udce9", "\ud800"])
def test_unsendable_ok_values(value: str) -> None:
    with pytest.raises(ReplyError):
        SocketmapReply.ok(value).encode()


@pytest.mark.parametrize("make", [SocketmapReply.temp, SocketmapReply.timeout, SocketmapReply.perm])
def test_reasons_are_sanitised(make: Callable[[str], SocketmapReply]) -> None:
    reply = make("bad\r\nthing\x00here\x7f\x85\ud800 end")
    assert reply.text == "bad  thing here  ? end"
    assert make("r" * 500).text == "r" * MAX_REASON_LENGTH


def test_directly_built_reasons_are_sanitised_at_encode() -> None:
    reply = SocketmapReply(SocketmapStatus.TEMP, "line1\nline2\x00" + "x" * 300)
    payload = unframe(reply.encode())
    assert payload == b"TEMP line1 line2 " + b"x" * (MAX_REASON_LENGTH - 12)
    assert SocketmapReply(SocketmapStatus.NOTFOUND, "a\nb").encode() == b"12:NOTFOUND a b,"


def test_sanitize_reason_keeps_printable_unicode() -> None:
    assert sanitize_reason("Zeitüberschreitung — später") == "Zeitüberschreitung — später"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"OK value", SocketmapReply.ok("value")),
        (b"OK ", SocketmapReply.ok("")),
        (b"OK a b", SocketmapReply.ok("a b")),
        (b"NOTFOUND ", SocketmapReply.notfound()),
        (b"NOTFOUND ignored", SocketmapReply(SocketmapStatus.NOTFOUND, "ignored")),
        (b"TEMP x", SocketmapReply.temp("x")),
        (b"TIMEOUT x", SocketmapReply.timeout("x")),
        (b"PERM x", SocketmapReply.perm("x")),
    ],
)
def test_parse_reply(payload: bytes, expected: SocketmapReply) -> None:
    assert parse_reply(payload) == expected
    assert SocketmapReply.parse(payload) == expected


@pytest.mark.parametrize("payload", [b"", b"OK", b"NOTFOUND", b"ok value", b"Ok value", b"FOUND x", b" OK x"])
def test_parse_reply_rejected(payload: bytes) -> None:
    with pytest.raises(SocketmapError):
        parse_reply(payload)


@SETTINGS
@given(value=st.text(max_size=500).filter(lambda s: "\x00" not in s))
def test_ok_reply_round_trip(value: str) -> None:
    reply = SocketmapReply.ok(value)
    assert parse_reply(unframe(reply.encode())) == reply


@SETTINGS
@given(
    make=st.sampled_from([SocketmapReply.temp, SocketmapReply.timeout, SocketmapReply.perm]),
    reason=st.text(HOSTILE_CHARS, max_size=400),
)
def test_error_reply_round_trip(make: Callable[[str], SocketmapReply], reason: str) -> None:
    reply = make(reason)
    assert len(reply.text) <= MAX_REASON_LENGTH
    assert parse_reply(unframe(reply.encode())) == reply


@SETTINGS
@given(
    status=st.sampled_from(SocketmapStatus),
    text=st.text(HOSTILE_CHARS, max_size=300),
    limit=st.integers(min_value=0, max_value=400),
)
def test_encode_never_emits_an_unsafe_reply(status: SocketmapStatus, text: str, limit: int) -> None:
    try:
        framed = SocketmapReply(status, text).encode(limit)
    except ReplyError:
        return
    payload = unframe(framed)
    assert len(payload) <= limit
    assert payload.startswith(status.value.encode() + b" ")
    assert b"\x00" not in payload
    payload.decode("utf-8")  # strict: always valid UTF-8
