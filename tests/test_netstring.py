"""Netstring framing: every sample fed whole, byte by byte, with trailing bytes and in random splits.

The feeding discipline (tests/feeding.py) follows h11's tests/test_io.py: a sans-IO decoder must give the same
events however the bytes are cut, keep what follows a frame buffered, and refuse bad input early and for good.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pfxhttp.errors import NetstringError, ProtocolError
from pfxhttp.protocol.netstring import DEFAULT_MAX_LENGTH, MAX_LENGTH_DIGITS, NetstringDecoder, encode
from tests import feeding
from tests.feeding import SETTINGS, cut, feed_all

Factory = Callable[[], NetstringDecoder]


def assert_decodes(data: bytes, expected: list[bytes], factory: Factory = NetstringDecoder) -> None:
    """``data`` yields exactly ``expected``, however it is cut, and trailing bytes stay buffered."""
    follower = b"next frame"[: factory().max_length]  # within even a tiny test cap
    feeding.assert_accepts(
        data,
        expected,
        factory,
        error=NetstringError,
        follower=(encode(follower), follower),
        partials=[b"0:"],
        garbage=b"x:",
    )


def assert_rejected(data: bytes, factory: Factory = NetstringDecoder, *, needs_eof: bool = False) -> None:
    """``data`` raises NetstringError however it is cut (at eof only if ``needs_eof``), and for good."""
    feeding.assert_rejected(data, factory, error=NetstringError, valid=b"3:abc,", needs_eof=needs_eof)


# --- encoding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "framed"),
    [
        (b"", b"0:,"),
        (b"abc", b"3:abc,"),
        (b"a:b,c", b"5:a:b,c,"),
        (b"\x00\xff", b"2:\x00\xff,"),
    ],
)
def test_encode(payload: bytes, framed: bytes) -> None:
    assert encode(payload) == framed


@pytest.mark.parametrize("size", [65535, 65536, 65537, 100_000, 1_000_000])
def test_encode_lengths_beyond_16_bits(size: int) -> None:
    framed = encode(b"x" * size)
    assert framed.startswith(b"%d:" % size)
    assert framed.endswith(b"x,")
    assert len(framed) == len(str(size)) + 1 + size + 1


def test_default_max_length() -> None:
    assert DEFAULT_MAX_LENGTH == 65536
    assert NetstringDecoder().max_length == DEFAULT_MAX_LENGTH


# --- decoding valid input -----------------------------------------------------------------------------

VALID = [
    (b"0:,", [b""]),
    (b"3:abc,", [b"abc"]),
    (b"5:a:b,c,", [b"a:b,c"]),
    (b"4:\x00\r\n\xff,", [b"\x00\r\n\xff"]),
    (b"003:abc,", [b"abc"]),  # leading zeros, as Postfix's netstring reader accepts them
    (b"0" * (MAX_LENGTH_DIGITS - 1) + b"3:abc,", [b"abc"]),  # exactly MAX_LENGTH_DIGITS digits
    (b"0:,3:abc,0:,", [b"", b"abc", b""]),
    (encode(b"virtual john@example.com"), [b"virtual john@example.com"]),
    (encode(b'virtual "john doe"@example.com'), [b'virtual "john doe"@example.com']),
]


@pytest.mark.parametrize(("data", "expected"), VALID)
def test_valid_samples(data: bytes, expected: list[bytes]) -> None:
    assert_decodes(data, expected)


def test_payload_at_the_cap() -> None:
    payload = bytes(range(256)) * (DEFAULT_MAX_LENGTH // 256)
    assert len(payload) == DEFAULT_MAX_LENGTH
    assert_decodes(encode(payload), [payload])


def test_payload_beyond_65535_with_a_wider_cap() -> None:
    payload = b"y" * 70_000
    assert_decodes(encode(payload) + encode(b"z"), [payload, b"z"], lambda: NetstringDecoder(100_000))


def test_wider_cap_allows_more_length_digits() -> None:
    # With a cap of 10**12 the digit bound grows to len("1000000000000") == 13 digits.
    decoder = NetstringDecoder(max_length=10**12)
    decoder.feed(b"1000000000000:")
    assert decoder.next() is None  # header accepted; the payload is simply not here yet
    assert not decoder.at_boundary
    decoder = NetstringDecoder(max_length=10**12)
    decoder.feed(b"0" * 14 + b":")
    with pytest.raises(NetstringError, match="digits"):
        decoder.next()


def test_empty_input_is_a_boundary() -> None:
    decoder = NetstringDecoder()
    assert decoder.at_boundary
    assert decoder.next() is None
    decoder.feed(b"")
    assert decoder.next() is None
    decoder.eof()


def test_next_without_new_data_keeps_returning_none() -> None:
    decoder = NetstringDecoder()
    decoder.feed(b"3:ab")
    assert decoder.next() is None
    assert decoder.next() is None
    decoder.feed(b"c,")
    assert decoder.next() == b"abc"
    assert decoder.next() is None


def test_unread_complete_frame_is_not_a_boundary() -> None:
    decoder = NetstringDecoder()
    decoder.feed(b"3:abc,")
    assert not decoder.at_boundary
    assert decoder.next() == b"abc"
    assert decoder.at_boundary


def test_buffer_stays_bounded_over_many_frames() -> None:
    # Frames cut at odd places so that the buffer is rarely empty: compaction must still keep it small.
    stream = b"".join(encode(b"k%d" % i) for i in range(20_000))
    decoder = NetstringDecoder()
    out: list[bytes] = []
    peak = 0
    for start in range(0, len(stream), 7):
        decoder.feed(stream[start : start + 7])
        while (payload := decoder.next()) is not None:
            out.append(payload)
        peak = max(peak, len(decoder._buf))  # white-box: the physical buffer, consumed bytes included
    assert out == [b"k%d" % i for i in range(20_000)]
    assert peak <= 2 * 4096 + 16
    assert decoder.at_boundary


# --- rejected input -------------------------------------------------------------------------------------

REJECTED = [
    b"-1:",
    b"+3:abc,",
    b" 3:abc,",
    b"3 :abc,",
    b"\t3:abc,",
    b":abc,",  # empty length
    b",",
    b"a:",
    b"0x3:abc,",
    b"99999999999999:",
    b"65537:",  # one over the default cap
    b"0" * (MAX_LENGTH_DIGITS + 1) + b":",
    b"00000000000000000:",
    "\u0663:abc,".encode(),  # ARABIC-INDIC DIGIT THREE
    "\uff13:abc,".encode(),  # FULLWIDTH DIGIT THREE
    "\u00b3:abc,".encode(),  # SUPERSCRIPT THREE
    "1\u0663:abc,".encode(),  # a unicode digit after an ASCII one
    b"3:abc;",  # wrong terminator
    b"3:abcd,",  # payload longer than announced: 'd' where ',' must be
    b"0:;",
    b"3:abc,x",  # garbage after a good frame
]


@pytest.mark.parametrize("data", REJECTED)
def test_rejected_samples(data: bytes) -> None:
    assert_rejected(data)


@pytest.mark.parametrize("data", [b"3:ab", b"3:abc", b"3", b"3:", b"00", b"3:abc,5:ab"])
def test_eof_mid_frame_is_rejected(data: bytes) -> None:
    assert_rejected(data, needs_eof=True)


def test_netstring_error_is_a_protocol_error() -> None:
    assert issubclass(NetstringError, ProtocolError)


def test_huge_length_refused_digit_by_digit_before_buffering() -> None:
    # "99999999999999:" is refused at its fifth digit: no colon, no payload, no allocation needed.
    decoder = NetstringDecoder()
    decoder.feed(b"9999")
    assert decoder.next() is None
    decoder.feed(b"9")
    with pytest.raises(NetstringError, match="limit"):
        decoder.next()


def test_length_over_cap_detected_at_the_first_offending_digit() -> None:
    decoder = NetstringDecoder()
    decoder.feed(b"6553")
    assert decoder.next() is None
    decoder.feed(b"6")  # 65536: exactly the cap, still fine
    assert decoder.next() is None
    decoder = NetstringDecoder()
    decoder.feed(b"6553")
    assert decoder.next() is None
    decoder.feed(b"7")  # 65537: refused before any ':' or payload arrives
    with pytest.raises(NetstringError, match="limit"):
        decoder.next()


def test_leading_zero_flood_refused_early() -> None:
    decoder = NetstringDecoder()
    for _ in range(MAX_LENGTH_DIGITS):
        decoder.feed(b"0")
        assert decoder.next() is None
    decoder.feed(b"0")
    with pytest.raises(NetstringError, match="digits"):
        decoder.next()


def test_small_custom_cap() -> None:
    assert_decodes(b"3:abc,", [b"abc"], lambda: NetstringDecoder(max_length=3))
    assert_rejected(b"4:abcd,", lambda: NetstringDecoder(max_length=3))
    assert_decodes(b"0:,", [b""], lambda: NetstringDecoder(max_length=0))
    assert_rejected(b"1:a,", lambda: NetstringDecoder(max_length=0))


def test_negative_cap_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_length"):
        NetstringDecoder(max_length=-1)


def test_failed_decoder_drops_further_input() -> None:
    decoder = NetstringDecoder()
    decoder.feed(b"-")
    with pytest.raises(NetstringError):
        decoder.next()
    decoder.feed(b"x" * 100_000)
    assert len(decoder._buf) == 0  # white-box: a dead stream must not keep filling memory


# --- properties -------------------------------------------------------------------------------------------


@SETTINGS
@given(payload=st.binary(max_size=2000))
def test_encode_shape(payload: bytes) -> None:
    framed = encode(payload)
    head, _, rest = framed.partition(b":")
    assert int(head) == len(payload)
    assert head.isdigit()
    assert rest == payload + b","


@SETTINGS
@given(payloads=st.lists(st.binary(max_size=300), max_size=8), data=st.data())
def test_round_trip_in_arbitrary_splits(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = NetstringDecoder()
    assert feed_all(decoder, cut(stream, cuts)) == payloads
    assert decoder.at_boundary
    decoder.eof()


@SETTINGS
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_only_ever_raise_netstring_error(data: bytes) -> None:
    feeding.assert_only_raises(NetstringDecoder(max_length=64), data, NetstringError)
