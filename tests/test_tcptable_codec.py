"""tcp_table(5) request lines and %XX text: every sample fed whole, byte by byte, with trailing bytes and in random
splits; every malformation and cap refused. Replies and real Postfix: test_tcptable_replies.py."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pfxhttp.errors import ProtocolError, ReplyError, TcpTableError
from pfxhttp.protocol.tcptable import (
    DEFAULT_MAX_LINE_LENGTH,
    TcpTableDecoder,
    TcpTableRequest,
    decode_text,
    encode_text,
)
from tests import feeding
from tests.feeding import SETTINGS, feed_all

Factory = Callable[[], TcpTableDecoder]

# What postmap 3.7.11 sent for the key 'a b%c<TAB>d€ü' (captured from the wire): uppercase %XX for space,
# '%', tab and every byte of the UTF-8 characters.
POSTFIX_LINE = b"get a%20b%25c%09d%E2%82%AC%C3%BC\n"
POSTFIX_KEY = "a b%c\td€ü"


def reference_quote(data: bytes) -> str:
    """Postfix's hex_quote() rule in the C locale, stated independently of the codec: quote '%', isspace()
    and every byte that is not ASCII-printable."""
    out = []
    for byte in data:
        printable = 0x20 <= byte <= 0x7E
        space = byte in b" \t\n\v\f\r"
        out.append(f"%{byte:02X}" if byte == ord("%") or space or not printable else chr(byte))
    return "".join(out)


def small(limit: int) -> Factory:
    return lambda: TcpTableDecoder(max_line_length=limit)


def assert_decodes(data: bytes, keys: list[str], factory: Factory = TcpTableDecoder) -> None:
    """``data`` yields requests for exactly ``keys`` however it is cut, and what follows stays buffered."""
    feeding.assert_accepts(
        data,
        [TcpTableRequest(key) for key in keys],
        factory,
        error=TcpTableError,
        follower=(b"get next\n", TcpTableRequest("next")),
        # Partial next requests: the command alone, a key without LF, a lone CR, a CR before its LF.
        partials=[b"g", b"get", b"get k", b"\r", b"get k\r"],
        garbage=b"garbage\n",
    )


def assert_rejected(data: bytes, factory: Factory = TcpTableDecoder, *, needs_eof: bool = False) -> None:
    """``data`` raises TcpTableError however it is cut (at eof only if ``needs_eof``), and for good."""
    feeding.assert_rejected(data, factory, error=TcpTableError, valid=b"get k\n", needs_eof=needs_eof)


# --- requests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "keys"),
    [
        (POSTFIX_LINE, [POSTFIX_KEY]),
        (b"get john@example.com\n", ["john@example.com"]),
        (b"get \n", [""]),  # postmap -q '' sends exactly this
        (b"get x%01y%7Fz\n", ["x\x01y\x7fz"]),
        (b"get %e2%82%aC\n", ["€"]),  # tcp_table(5): hex digits in any case
        (b"get %2541\n", ["%41"]),  # decoded once only
        (b"get caf%E9\n", ["caf\udce9"]),  # not UTF-8: kept losslessly
        (b"get k\r\n", ["k"]),  # one CR before LF is tolerated (telnet)
        (b"get k\r\r\n", ["k\r"]),  # ... one only
        (b"get a b\n", ["a b"]),  # raw bytes Postfix would have quoted are taken literally
        ("get jürgen\n".encode(), ["jürgen"]),
        (b"get a\nget b\r\nget \n", ["a", "b", ""]),
        (b"".join(TcpTableRequest(f"user{i}@example.com").encode() for i in range(300)), None),
    ],
)
def test_decoder_accepts(data: bytes, keys: list[str] | None) -> None:
    if keys is None:
        keys = [f"user{i}@example.com" for i in range(300)]  # past the compaction threshold
    assert_decodes(data, keys)


@pytest.mark.parametrize(
    "data",
    [
        b"get %\n",
        b"get %4\n",
        b"get %4g\n",
        b"get %g4\n",
        b"get abc%\n",
        b"get %%41\n",
        b"get %+1\n",
        b"get % 1\n",
    ],
)
def test_bad_percent_escape(data: bytes) -> None:
    assert_rejected(data)


@pytest.mark.parametrize(
    "data",
    [
        b"put key value\n",  # tcp_table(5) knows only "get": refused, not answered
        b"GET key\n",  # Postfix sends lower case only
        b"Get key\n",
        b"del key\n",
        b"garbage\n",
        b"\n",  # an empty line is no request
        b"\r\n",
        b" get key\n",
        b"get\tkey\n",  # the separator is one SPACE
        b"\x00get k\n",
    ],
)
def test_unsupported_command(data: bytes) -> None:
    assert_rejected(data)


@pytest.mark.parametrize("data", [b"get\n", b"get\r\n"])
def test_missing_key_separator(data: bytes) -> None:
    with pytest.raises(TcpTableError, match="without the space"):
        TcpTableRequest.parse(data)
    assert_rejected(data)


@pytest.mark.parametrize("data", [b"get a\x00b\n", b"get a%00b\n", b"get \x00\n", b"get %00\n"])
def test_nul_in_key_is_refused(data: bytes) -> None:
    # Postfix keys are C strings: no NUL, raw or quoted, can come from Postfix.
    assert_rejected(data)


@pytest.mark.parametrize("data", [b"g", b"get", b"get ", b"get key", b"get key\r", b"get a\nget b"])
def test_close_mid_request(data: bytes) -> None:
    assert_rejected(data, needs_eof=True)


def test_line_cap_boundary() -> None:
    factory = small(10)  # bytes before the LF, a CR included
    assert_decodes(b"get " + b"a" * 6 + b"\n", ["a" * 6], factory)
    assert_rejected(b"get " + b"a" * 7 + b"\n", factory)
    assert_rejected(b"get " + b"a" * 6 + b"\r\n", factory)
    assert_decodes(b"get " + b"a" * 5 + b"\r\n", ["a" * 5], factory)


def test_line_cap_checked_before_the_newline_arrives() -> None:
    decoder = TcpTableDecoder(max_line_length=10)
    decoder.feed(b"get " + b"a" * 6)  # exactly at the cap: still waiting
    assert decoder.next() is None
    decoder.feed(b"a")  # one byte more, no LF yet
    with pytest.raises(TcpTableError, match="longer than 10"):
        decoder.next()
    assert not decoder.at_boundary
    assert_rejected(b"get " + b"a" * 20, small(10))  # refused however it is cut, without any LF


def test_newline_less_flood_is_refused_at_the_first_chunk_past_the_cap() -> None:
    decoder = TcpTableDecoder()
    chunk = b"get " + b"x" * 60000
    decoder.feed(chunk)
    with pytest.raises(TcpTableError):
        decoder.next()
    for _ in range(100):  # later floods are dropped and keep raising
        decoder.feed(chunk)
        with pytest.raises(TcpTableError):
            decoder.next()


def test_default_cap_fits_a_fully_quoted_smtp_line() -> None:
    assert DEFAULT_MAX_LINE_LENGTH == 8192
    key = "\t" * 2048  # smtpd's line_length_limit, every byte quoted: 6144 + "get "
    assert_decodes(TcpTableRequest(key).encode(), [key])
    assert_decodes(b"get " + b"a" * (DEFAULT_MAX_LINE_LENGTH - 4) + b"\n", ["a" * 8188])
    assert_rejected(b"get " + b"a" * (DEFAULT_MAX_LINE_LENGTH - 3) + b"\n")


def test_max_line_length_must_be_positive() -> None:
    assert TcpTableDecoder(max_line_length=1).max_line_length == 1
    with pytest.raises(ValueError):
        TcpTableDecoder(max_line_length=0)


def test_request_encode_mirrors_postfix() -> None:
    assert TcpTableRequest(POSTFIX_KEY).encode() == POSTFIX_LINE
    assert TcpTableRequest("").encode() == b"get \n"
    assert TcpTableRequest("UPPER Case").encode() == b"get UPPER%20Case\n"
    assert TcpTableRequest("x\x01y\x7fz").encode() == b"get x%01y%7Fz\n"
    assert TcpTableRequest("caf\udce9").encode() == b"get caf%E9\n"  # surrogateescape gives the byte back


@pytest.mark.parametrize("key", ["a\x00b", "\ud800", "x\udfff"])
def test_request_with_unsendable_key(key: str) -> None:
    with pytest.raises(TcpTableError):
        TcpTableRequest(key).encode()


def test_request_parse() -> None:
    assert TcpTableRequest.parse(POSTFIX_LINE) == TcpTableRequest(POSTFIX_KEY)
    with pytest.raises(TcpTableError, match="incomplete"):
        TcpTableRequest.parse(b"get k")
    with pytest.raises(TcpTableError, match="bytes after"):
        TcpTableRequest.parse(b"get k\nget j\n")


def test_tcptable_error_is_a_protocol_error() -> None:
    assert issubclass(TcpTableError, ProtocolError)
    assert not issubclass(ReplyError, ProtocolError)


@SETTINGS
@given(key=st.binary(max_size=300).filter(lambda b: b"\x00" not in b))
def test_request_bytes_match_postfix_quoting(key: bytes) -> None:
    line = b"get " + reference_quote(key).encode("ascii") + b"\n"
    request = TcpTableRequest.parse(line)
    assert request.key.encode("utf-8", "surrogateescape") == key
    assert request.encode() == line


@SETTINGS
@given(key=st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(" %\t\r\n\x7f€ü")), max_size=200))
def test_request_text_round_trip(key: str) -> None:
    if "\x00" in key:
        with pytest.raises(TcpTableError):
            TcpTableRequest(key).encode()
        return
    line = TcpTableRequest(key).encode()
    assert line.startswith(b"get ")
    assert line.endswith(b"\n")
    assert all(0x21 <= b <= 0x7E for b in line[4:-1])  # printable ASCII, no space, nothing raw
    for chunks in feeding.splittings(line + line, seeds=1):
        assert feed_all(TcpTableDecoder(), chunks) == [TcpTableRequest(key)] * 2


@SETTINGS
@given(
    data=st.lists(
        st.sampled_from([b"get ", b"get", b"put ", b"%", b"%4", b"%41", b"a", b" ", b"\r", b"\n", b"\x00"]),
        max_size=30,
    ).map(b"".join)
)
def test_arbitrary_input_only_raises_tcptable_error(data: bytes) -> None:
    feeding.assert_only_raises(TcpTableDecoder(max_line_length=16), data, TcpTableError)


# --- %XX text -----------------------------------------------------------------------------------------


def test_encode_text_quotes_exactly_what_postfix_quotes() -> None:
    for byte in range(256):
        text = bytes([byte]).decode("utf-8", "surrogateescape")
        assert encode_text(text) == reference_quote(bytes([byte])), byte


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("plain", "plain"),
        ("a b", "a%20b"),
        ("100%", "100%25"),
        ("ü", "%C3%BC"),  # uppercase hex, every byte of the UTF-8 sequence
        ("\t\r\n\v\f", "%09%0D%0A%0B%0C"),
        ("", ""),
    ],
)
def test_encode_decode_text(text: str, encoded: str) -> None:
    assert encode_text(text) == encoded
    assert decode_text(encoded) == text


def test_decode_text_is_liberal_in_case_and_raw_bytes() -> None:
    assert decode_text("%c3%Bc") == "ü"
    assert decode_text("a b\tü") == "a b\tü"  # unquoted characters stand for themselves
    assert decode_text("%E9") == "\udce9"


@pytest.mark.parametrize("text", ["%", "%4", "%4g", "%g4", "abc%", "%%41", "%-1", "%\u0664\u0661"])
def test_decode_text_rejects_bad_escapes(text: str) -> None:
    with pytest.raises(TcpTableError):
        decode_text(text)


def test_encode_text_refuses_surrogates_without_bytes() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_text("\ud800")


@SETTINGS
@given(
    text=st.text(
        st.one_of(st.characters(codec="utf-8"), st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF))
    )
)
def test_text_round_trip(text: str) -> None:
    encoded = encode_text(text)
    assert all("!" <= c <= "~" for c in encoded)
    assert decode_text(encoded) == text
    lowered = re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), encoded)
    assert decode_text(lowered) == text  # lowercase hex decodes the same


# --- replies ------------------------------------------------------------------------------------------


# --- against real Postfix -------------------------------------------------------------------------------
